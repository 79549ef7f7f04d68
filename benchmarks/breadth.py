"""Every route of a real-sized app gets a verdict? The triage, then full ladders, on a generated app.

Serves tests/apps/breadth_app.py (N routes of known kinds: async I/O, `def` sleeping, time.sleep
inside `async def`, CPU in `async def`, trivial; random service times) under one uvicorn worker
and under two gunicorn workers (uvicorn_worker), runs `fastapi-tune probe URL` with its defaults
and scores every verdict against the route's label. With --full it also runs the full ladder on the
same app: today's code with --max-seconds 900 (every route gets its full ladder after the triage),
or with --reference-src DIR the code in DIR (e.g. `git archive 1a99019 | tar -x -C DIR`, the
commit before the triage) with --max-seconds 900.

Prints one row per run: routes, right %, inconclusive (and how many for lack of time), wall
seconds, seconds per route, the announced budget, and the load average before and after. Saves
every report and its labels (for benchmarks/calibrate.py) in --out. Exits 1 when a default run
misses its bar: 60 routes -> >= 95% right, none inconclusive for lack of time, wall <= 90 s;
150 routes -> >= 90% right within the announced budget.

    .venv/bin/python benchmarks/breadth.py [--routes 60 150] [--seed 1] [--full] [--reference-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.apps.breadth_app import routes
from tests.servers import serve

REPO: Final = Path(__file__).resolve().parent.parent

APP: Final = "tests.apps.breadth_app:app"
CONFIGS: Final = {"uvicorn-1": ("uvicorn", 1), "gunicorn-2": ("gunicorn", 2)}
# The bars: routes -> (share right, wall seconds or None: within the announced budget).
BARS: Final = {60: (0.95, 90.0), 150: (0.90, None)}
# The probe may end this long after its announced budget (stopping its last level) and still count
# as within it; the CLI's start and the report's rendering are in the wall time, not in this.
BUDGET_SLACK_S: Final = 2.0
FULL_SECONDS: Final = "900"


@dataclass(frozen=True)
class Run:
    config: str
    routes: int
    mode: str  # "default", "full" or "reference"
    right: int
    inconclusive: int
    for_time: int  # inconclusive or unmeasured because the budget ran out
    wall_s: float  # the CLI's whole run: its start, the probe, the report's rendering
    elapsed_s: float  # the probe itself, as its report records it
    budget_s: float | None
    load_before: float
    load_after: float

    @property
    def share(self) -> float:
        return self.right / self.routes

    def row(self) -> str:
        budget = "-" if self.budget_s is None else f"{self.budget_s:.0f}"
        return (
            f"{self.config:11} {self.mode:9} {self.routes:4} {100 * self.share:6.1f}% {self.inconclusive:5}"
            f" {self.for_time:5} {self.wall_s:7.1f} {self.elapsed_s:7.1f}"
            f" {self.wall_s / self.routes:6.2f} {budget:>6}"
            f"  {self.load_before:4.1f} -> {self.load_after:4.1f}"
        )


HEADER: Final = (
    "config      mode      routes  right incl. time   wall s probe s  s/rte budget  load avg\n"
    "  (incl.: inconclusive; time: without a verdict for lack of time; wall: the CLI's whole run,\n"
    "   probe: its report's elapsed_s; s/rte: wall / routes; budget: announced)"
)


@contextmanager
def serving(config: str, n: int, seed: int) -> Iterator[str]:
    server, workers = CONFIGS[config]
    os.environ["FASTAPI_TUNE_BREADTH"] = f"{n}:{seed}"  # serve() passes the environment on
    with serve(APP, server=server, workers=workers) as s:
        yield s.url


def probe(url: str, out: Path, src: Path, extra: list[str]) -> float:
    """Run the probe CLI from `src`; its wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fastapi_tune", "probe", url, "-o", str(out), *extra],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0 or not out.exists():
        sys.exit(f"probe failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def score(report: dict[str, Any], labels: dict[str, str], config: str, mode: str, wall: float) -> Run:
    got = {f"{e['method']} {e['path']}": e for e in report["endpoints"]}
    right = inconclusive = for_time = 0
    for key, label in labels.items():
        e = got.get(key)
        cls = e["class"] if e else None
        right += cls == label
        inconclusive += cls == "inconclusive"
        for_time += e is None or (cls == "inconclusive" and e["stop_reason"] == "time budget")
    budget = report.get("settings", {}).get("budget_s")
    elapsed = float(report.get("elapsed_s", 0.0))
    return Run(config, len(labels), mode, right, inconclusive, for_time, wall, elapsed, budget, 0.0, 0.0)


def one(config: str, n: int, seed: int, mode: str, out_dir: Path, reference: Path | None) -> Run:
    labels = {f"GET {r.path}": r.label for r in routes(n, seed)}
    out = out_dir / f"breadth-{config}-{n}-s{seed}-{mode}.json"
    extra = [] if mode == "default" else ["--max-seconds", FULL_SECONDS]
    src = reference if mode == "reference" and reference is not None else REPO
    before = os.getloadavg()[0]
    with serving(config, n, seed) as url:
        wall = probe(url, out, src, extra)
    after = os.getloadavg()[0]
    (out_dir / f"{out.stem}.labels.json").write_text(json.dumps(labels, indent=1))
    run = score(json.loads(out.read_text()), labels, config, mode, wall)
    return Run(**{**run.__dict__, "load_before": before, "load_after": after})


def misses(run: Run) -> list[str]:
    """The bars a default run missed, as sentences."""
    bar = BARS.get(run.routes)
    if bar is None or run.mode != "default":
        return []
    share, wall = bar
    out = []
    if run.share < share:
        out.append(f"{run.config} {run.routes} routes: {run.share:.0%} right < {share:.0%}")
    if run.for_time:
        out.append(f"{run.config} {run.routes} routes: {run.for_time} without a verdict for lack of time")
    if wall is not None and run.wall_s > wall:
        out.append(f"{run.config} {run.routes} routes: wall {run.wall_s:.0f} s > {wall:.0f} s")
    if wall is None and run.elapsed_s > (run.budget_s or 0) + BUDGET_SLACK_S:
        out.append(f"{run.config} {run.routes} routes: probe {run.elapsed_s:.0f} s > budget {run.budget_s} s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, nargs="+", default=[60, 150])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--full", action="store_true", help="also the full ladder on the same app")
    ap.add_argument("--reference-src", type=Path, help="the full ladder from this checkout instead")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    full_mode = "reference" if args.reference_src else "full"
    print(HEADER, flush=True)
    runs: list[Run] = []
    for n in args.routes:
        for config in args.configs:
            for mode in ("default", full_mode) if args.full else ("default",):
                run = one(config, n, args.seed, mode, args.out, args.reference_src)
                runs.append(run)
                print(run.row(), flush=True)
    failed = [m for run in runs for m in misses(run)]
    for line in failed:
        print("MISSED:", line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
