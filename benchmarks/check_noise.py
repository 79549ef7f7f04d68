"""Does `fastapi-tune check` stay quiet on an unchanged app on a busy machine, and catch real changes?

Through the CLI, as CI runs it, on tests/apps/check_app.py: one `check` with no baseline saves it
(the machine as it is), then `--runs` checks of the unchanged app with a busy loop per core beside
each (the issue's bar: no false alarm, every run exits 0), then `--variant-runs` checks of each
variant with the same busy loops: `sleep` (time.sleep(0.02) in an `async def` route) and `cpu` (2.5x
the CPU on /score) must exit 9 naming the changed route. Per run it prints the exit code, each
route's status, and for each judged metric change / band (how close the run came to an alarm: a
false alarm needs > 1). Exits 1 when a bar is missed.

Run from the repo root:  .venv/bin/python benchmarks/check_noise.py [--runs 10] [--variant-runs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "tests" / "apps"
# The route each variant changes (tests/apps/check_app.py).
VARIANTS = {"sleep": "GET /orders/{order_id}", "cpu": "GET /score"}


def check(
    baseline: Path, variant: str, max_seconds: float, hogs: int, out: Path | None = None
) -> tuple[int, dict[str, Any], float]:
    """One `fastapi-tune check --json` with `hogs` busy loops beside it: exit code, JSON, seconds."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fastapi_tune",
                "check",
                "check_app:app",
                "--app-dir",
                str(APPS),
                "--baseline",
                str(baseline),
                "--max-seconds",
                str(max_seconds),
                "--json",
                *(["--out", str(out)] if out is not None else []),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "FASTAPI_TUNE_CHECK_VARIANT": variant, "GITHUB_ACTIONS": ""},
            cwd=REPO,
            timeout=max_seconds + 120,
            check=False,
        )
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    elapsed = time.monotonic() - started
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {}
    if proc.returncode not in (0, 9, 12):  # passed, regressed, not judged: anything else, say why
        print(proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode, data, elapsed


def closeness(route: dict[str, Any]) -> dict[str, float]:
    """Each judged metric's change / band in log terms: beyond +-1 it counts (worse or better)."""
    out = {}
    for name, m in route["metrics"].items():
        if m["outcome"] != "not judged" and m["change"] is not None and m["band"]:
            out[name.split("_")[0]] = math.log1p(m["change"]) / math.log1p(m["band"])
    return out


def show(label: str, code: int, data: dict[str, Any], elapsed: float) -> dict[str, float]:
    """Print one run; return the largest |change / band| per metric over its routes."""
    comparison = data.get("comparison") or {}
    busy = "; busy runner noted" if comparison.get("busy") else ""
    print(f"{label}: exit {code} in {elapsed:.0f} s{busy}", flush=True)
    worst: dict[str, float] = {}
    for r in comparison.get("routes", []):
        klass = r["class"] or {}
        moved = (
            f" ({klass['base']} -> {klass['new']}: {klass['outcome']})"
            if klass.get("base") != klass.get("new")
            else ""
        )
        near = closeness(r)
        for k, v in near.items():
            worst[k] = max(worst.get(k, 0.0), abs(v))
        shown = " ".join(f"{k} {v:+.2f}" for k, v in near.items())
        print(f"    {r['method']} {r['path']}: {r['status']}{moved}  {shown}", flush=True)
    return worst


def statuses(data: dict[str, Any]) -> dict[str, str]:
    return {
        f"{r['method']} {r['path']}": r["status"] for r in (data.get("comparison") or {}).get("routes", [])
    }


def unchanged_runs(folder: Path, baseline: Path, runs: int, max_seconds: float, hogs: int) -> bool:
    """`runs` checks of the unchanged app beside `hogs` busy loops: True when every one exited 0."""
    quiet, worst = 0, dict[str, float]()
    for i in range(runs):
        code, data, elapsed = check(baseline, "", max_seconds, hogs, folder / f"unchanged-{i + 1}.json")
        for k, v in show(f"unchanged {i + 1}/{runs}, {hogs} busy loops", code, data, elapsed).items():
            worst[k] = max(worst.get(k, 0.0), v)
        quiet += code == 0
    near = ", ".join(f"{k} {v:.2f}" for k, v in sorted(worst.items()))
    print(f"unchanged on a busy machine: {quiet}/{runs} passed (bar: all); closest to an alarm: {near}")
    return quiet == runs


def variant_runs(folder: Path, baseline: Path, runs: int, max_seconds: float, hogs: int) -> list[str]:
    """Each variant `runs` times beside `hogs` busy loops: the variants not caught every time."""
    missed = []
    for variant, key in VARIANTS.items():
        caught = 0
        for i in range(runs):
            code, data, elapsed = check(
                baseline, variant, max_seconds, hogs, folder / f"{variant}-{i + 1}.json"
            )
            show(f"{variant} {i + 1}/{runs}, {hogs} busy loops", code, data, elapsed)
            caught += code == 9 and statuses(data).get(key) == "regressed"
        print(f"{variant}: {caught}/{runs} caught at {key} (bar: all)", flush=True)
        if caught != runs:
            missed.append(variant)
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="unchanged runs with a busy loop per core")
    parser.add_argument("--variant-runs", type=int, default=3, help="runs of each variant")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument(
        "--keep", type=Path, help="keep every run's report (and the baseline) in this directory"
    )
    args = parser.parse_args()
    hogs = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        baseline = folder / "baseline.json"
        baseline.unlink(missing_ok=True)
        code, data, elapsed = check(baseline, "", args.max_seconds, 0)
        print(f"baseline: exit {code} in {elapsed:.0f} s, saved: {data.get('baseline_saved')}", flush=True)
        if code != 0 or not baseline.exists():
            return 1
        failures = (
            [] if unchanged_runs(folder, baseline, args.runs, args.max_seconds, hogs) else ["a false alarm"]
        )
        failures += [
            f"{v} missed" for v in variant_runs(folder, baseline, args.variant_runs, args.max_seconds, hogs)
        ]
    print("OK" if not failures else "MISSED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
