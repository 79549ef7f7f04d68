"""Where the collapse apps fall over, and what the written cap buys: the probe against wrk, in one run.

For tests/apps/collapse_async_dep_app.py (the loop waits in a pool checkout) and collapse_plain_app.py
(fastapi/fastapi#3205), each on a SQLite file:

  1. the probe's collapse point N: the app under one uvicorn worker, probed with the overload step
     (restarted after each fall, as `tune` does), and the config and admission module it leads to;
  2. wrk's collapse point on the same server, by the same bisection (a level falls over when wrk's
     goodput there is under 30% of its best at c=4..8, the server restarted after each fall):
     bar N_probe / N_wrk within 0.5 .. 1.5;
  3. goodput with wrk (keep-alive, -t1) at c = 4, 16, 64 and at the probe's stress level (64 per
     worker) on `gunicorn -c gunicorn.conf.py` as written, against the same config uncapped
     (ADMISSION_LIMIT=0), rounds interleaved, medians, and whether each answers one request
     afterwards: bar, the written config keeps >= 80% of its c=4 goodput at c=64 and at the stress
     level, and answers;
  4. the default probe's wall time with and without the overload step on apps that hold
     (tests/apps/graceful_lock_app.py and the bundled sample app), interleaved: bar <= 1.15.

Needs wrk (`apt-get install wrk`). About 10 minutes on 2 cores. Run from the repo root:
    .venv/bin/python benchmarks/overload.py [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_tune.core.rules import OVERLOAD_COLLAPSES
from fastapi_tune.flows.workflow import probe_and_classify
from fastapi_tune.measure.host import read_host
from fastapi_tune.measure.launch import Running, free_port, run_server
from fastapi_tune.measure.loadgen import RequestSpec
from fastapi_tune.measure.overload import answer_after, restarter
from fastapi_tune.measure.probe_options import ProbeOptions, Quiet
from fastapi_tune.plan.model import Choices
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.render.admission import admission_files
from fastapi_tune.render.conf import render_gunicorn_conf

REPO = Path(__file__).resolve().parent.parent
APPS = ("tests.apps.collapse_async_dep_app", "tests.apps.collapse_plain_app")
HOLDING = ("tests.apps.graceful_lock_app:app", "fastapi_tune.sample_app:app")
N_BAND = (0.5, 1.5)
KEPT_BAR = 0.8
WALL_BAR = 1.15
CLIENTS = (4, 16, 64)
# A collapse stays a collapse until the server is restarted (SQLAlchemy's own timeout would end it).
ENV = {"POOL_TIMEOUT": "600", "PYTHONPATH": str(REPO)}


def wrk(url: str, clients: int, seconds: float) -> float:
    """Successful responses per second (wrk counts non-2xx apart; they are not goodput)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "5s", url],
        capture_output=True, text=True, timeout=seconds + 30, check=False,
    ).stdout  # fmt: skip
    total = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if total is None:
        return 0.0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    ok = int(total[1]) - (int(bad[1]) if bad else 0)
    return ok / float(total[2])


@contextmanager
def uvicorn(module: str, env: dict[str, str]) -> Iterator[Running]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port), "--log-level", "warning"]
    with run_server(argv, port, cwd=REPO, env={**os.environ, **env}) as running:
        yield running


@contextmanager
def gunicorn(directory: Path, env: dict[str, str], workers: int) -> Iterator[Running]:
    """`gunicorn -c gunicorn.conf.py` in the directory it was written to, as a user starts it."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket"]
    full = {**os.environ, **env, "PORT": str(port)}
    with run_server(argv, port, ready_path="/items", workers=workers, cwd=directory, env=full) as running:
        yield running


def answers(url: str) -> bool:
    return answer_after(RequestSpec("GET", url + "/items"), 5.0) is not None


# -- 1 and 2: the collapse point, by the probe and by wrk ------------------------------------------


def probe_collapse(module: str, env: dict[str, str], directory: Path) -> tuple[float, str, int, int]:
    """(N per worker, the cause, the written cap, the planned workers), with gunicorn.conf.py and the
    module written in `directory`."""
    with uvicorn(module, env) as running:
        options = ProbeOptions(
            url=running.url, endpoints=("GET /items",), max_seconds=120, app=f"{module}:app"
        )
        report = probe_and_classify(options, read_host(), Quiet(), restart=restarter(running)).report
    run = report.overload
    verdict = run.verdict if run is not None else None
    if verdict is None or verdict.collapse_per_worker is None:
        raise SystemExit(f"{module}: the probe reported no collapse ({run})")
    plan = make_plan(read_host(), report, load_profile("vm"), Choices(app=f"{module}:app"))
    assert plan.admission is not None
    conf = directory / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf(plan))
    for path, text in admission_files(plan, conf):
        path.write_text(text)
    return verdict.collapse_per_worker, verdict.cause or "?", plan.admission.limit, plan.workers


def wrk_collapse(module: str, env: dict[str, str], seconds: float) -> float:
    """The lowest c at which wrk's goodput falls under 30% of its best at c=4..8 (one worker)."""
    with uvicorn(module, env) as running:
        url = running.url + "/items"
        best = max(wrk(url, c, seconds) for c in (4, 8))
        low, high = 8.0, 64.0
        assert running.restart is not None
        while high / low > 1.3 and high - low > 1:
            mid = max(1, round(math.sqrt(low * high)))
            if mid in (low, high):
                break
            if wrk(url, mid, seconds) < OVERLOAD_COLLAPSES * best:
                high = mid
                running = running.restart()
            else:
                low = mid
    return high


# -- 3: goodput, written vs uncapped ---------------------------------------------------------------


def goodput_curve(
    directory: Path, env: dict[str, str], workers: int, seconds: float
) -> tuple[list[float], bool]:
    """wrk at c = 4, 16, 64 and 64 per worker on a fresh server, then whether it answers one request."""
    with gunicorn(directory, env, workers) as running:
        time.sleep(0.5)
        rates = [wrk(running.url + "/items", c, seconds) for c in (*CLIENTS, 64 * workers)]
        return rates, answers(running.url)


def compare(
    directory: Path, env: dict[str, str], workers: int, rounds: int, seconds: float
) -> dict[str, tuple[list[float], int]]:
    """Per config: median goodput at each c over interleaved rounds, and the rounds it answered after."""
    configs = {"written": env, "uncapped": {**env, "ADMISSION_LIMIT": "0"}}
    runs: dict[str, list[tuple[list[float], bool]]] = {k: [] for k in configs}
    for r in range(rounds):
        order = list(configs) if r % 2 == 0 else list(reversed(configs))
        for name in order:
            runs[name].append(goodput_curve(directory, configs[name], workers, seconds))
    return {
        name: (
            # every level measured, the stress level (64 per worker) included
            [statistics.median(rs[i] for rs, _ in got) for i in range(len(CLIENTS) + 1)],
            sum(a for _, a in got),
        )
        for name, got in runs.items()
    }


# -- 4: the probe's wall time on apps that hold ----------------------------------------------------


def probe_seconds(app: str, overload: bool) -> float:
    with uvicorn(app.partition(":")[0], {}) as running:
        started = time.monotonic()
        options = ProbeOptions(url=running.url, overload=64 if overload else None, app=app)
        probe_and_classify(options, read_host(), Quiet())
        return time.monotonic() - started


def wall_time(app: str, rounds: int) -> tuple[float, float]:
    with_step: list[float] = []
    without: list[float] = []
    for r in range(rounds):
        for overload in (True, False) if r % 2 == 0 else (False, True):
            (with_step if overload else without).append(probe_seconds(app, overload))
    return statistics.median(with_step), statistics.median(without)


def one_app(module: str, rounds: int, seconds: float) -> bool:
    """Steps 1-3 for one app; True when its bars are met."""
    with tempfile.TemporaryDirectory(prefix="fastapi-tune-overload-") as tmp:
        directory = Path(tmp)
        env = {**ENV, "DB_FILE": str(directory / "app.sqlite")}
        n_probe, cause, cap, workers = probe_collapse(module, env, directory)
        n_wrk = wrk_collapse(module, env, seconds)
        ratio = n_probe / n_wrk
        ok_n = N_BAND[0] <= ratio <= N_BAND[1]
        print(f"\n{module}")
        print(f"  collapse point per worker: probe {n_probe:g}, wrk {n_wrk:g}, ratio {ratio:.2f}", end="")
        print(f" (bar {N_BAND[0]}..{N_BAND[1]}: {'ok' if ok_n else 'MISSED'})")
        print(f"  cause: {cause[:160]}...")
        print(f"  written cap: {cap} in flight per worker ({workers} workers)")
        results = compare(directory, env, workers, rounds, seconds)
        levels = ", ".join(map(str, (*CLIENTS, 64 * workers)))
        print(f"  goodput req/s (wrk keep-alive, medians of {rounds}) at c = {levels}:")
        for name, (rates, answered) in results.items():
            kept = ", ".join(f"{r / rates[0]:.2f}" if rates[0] else "-" for r in rates[2:])
            cells = "  ".join(f"{r:8.1f}" for r in rates)
            print(
                f"    {name:9} {cells}   kept at 64 and {64 * workers}: {kept};"
                f" answered after {answered}/{rounds}"
            )
        written, answered = results["written"]
        ok_kept = written[0] > 0 and min(written[2:]) / written[0] >= KEPT_BAR and answered == rounds
        print(f"  written config keeps >= {KEPT_BAR:.0%} and answers: {'ok' if ok_kept else 'MISSED'}")
        return ok_n and ok_kept


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--part", choices=("all", "apps", "wall"), default="all", help="run only one part")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    print(f"load average at the start: {os.getloadavg()}")
    failed = False
    for module in APPS if args.part in ("all", "apps") else ():
        failed |= not one_app(module, args.rounds, args.seconds)
    print(f"\nload average: {os.getloadavg()}")
    for app in HOLDING if args.part in ("all", "wall") else ():
        with_step, without = wall_time(app, args.rounds)
        ok = with_step / without <= WALL_BAR
        print(
            f"probe wall time on {app}: {with_step:.1f} s with the overload step, {without:.1f} s without,",
            end="",
        )
        print(f" ratio {with_step / without:.3f} (bar {WALL_BAR}: {'ok' if ok else 'MISSED'})")
        failed |= not ok
    print(f"load average at the end: {os.getloadavg()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
