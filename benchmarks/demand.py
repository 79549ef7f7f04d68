"""What fastapi_tune.measure.demand costs, and what it shows on a quiet and on a busy host.

1. The cost of one snapshot (every /proc/PID/stat, the workers' threads, /proc/stat, PSI) with the
   machine raised to --procs processes (idle `sleep`s), beside psutil reading the same CPU times.
2. One uvicorn worker serving tests/apps/kinds_app.py, loaded by run_burst at concurrency 4:
   /cpu (20 ms of CPU per request) and /loop (time.sleep(30 ms) inside async def), first as the host
   is, then with one busy-loop process per core. Median of --rounds rounds per figure.
Bars (exit 1 if missed): snapshot median < 10 ms; /cpu demand (on CPU + waiting) > 0.7 core in both
cases; /loop demand < 0.5 core in both cases.

Run from the repo root:
  .venv/bin/python benchmarks/demand.py [--rounds 3] [--duration 1.5] [--procs 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_tune.measure.demand import DemandWatcher, LevelDemand, demand_between
from fastapi_tune.measure.loadgen import RequestSpec, run_burst
from tests.apps.hog import spin
from tests.servers import serve


def _procs() -> int:
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


def snapshot_cost(target: int) -> tuple[int, float, float, float]:
    """(processes, snapshot ms, demand_between ms, psutil ms), medians of 50."""
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        while _procs() < target:
            sleepers.append(subprocess.Popen(["sleep", "120"]))
        watcher = DemandWatcher([os.getpid()], [])
        snaps, ps = [], []
        for _ in range(50):
            t0 = time.perf_counter()
            watcher.snapshot()
            t1 = time.perf_counter()
            for p in psutil.process_iter():
                with suppress(psutil.Error):
                    p.cpu_times()
            ps.append(time.perf_counter() - t1)
            snaps.append(t1 - t0)
        a = watcher.snapshot()
        b = watcher.snapshot()
        t0 = time.perf_counter()
        for _ in range(50):
            demand_between(a, b)
        between = (time.perf_counter() - t0) / 50
        return _procs(), statistics.median(snaps) * 1e3, between * 1e3, statistics.median(ps) * 1e3
    finally:
        for s in sleepers:
            s.kill()
        for s in sleepers:
            s.wait()


@contextmanager
def busy_loops(n: int) -> Iterator[None]:
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(n)]
    procs = [ctx.Process(target=spin, args=(r,), daemon=True) for r in ready]
    try:
        for p in procs:
            p.start()
        for r in ready:
            r.wait(timeout=30)
        yield
    finally:
        for p in procs:
            if p.pid is not None:
                p.kill()
                p.join(timeout=10)


def level(url: str, watcher: DemandWatcher, duration: float) -> tuple[LevelDemand, float]:
    start = watcher.snapshot()
    burst = run_burst(RequestSpec("GET", url), 4, warmup_s=0.2, duration_s=duration)
    return demand_between(start, watcher.snapshot()), len(burst.latencies_ms) / burst.duration_s


def _row(name: str, runs: list[tuple[LevelDemand, float]]) -> tuple[str, float]:
    def med(f: list[float | None]) -> str:
        vals = [v for v in f if v is not None]
        return f"{statistics.median(vals):6.2f}" if vals else "     -"

    ds = [d for d, _ in runs]
    demand = statistics.median(d.demand_cores for d in ds)
    tops = {f"{c.name}:{c.pid}" for d in ds for c in d.top_others[:2]}
    print(
        f"{name:<12}{med([x for _, x in runs])} {med([d.on_cpu_cores for d in ds])} "
        f"{med([d.wait_cores for d in ds])} {demand:6.2f} {med([d.host_idle_cores for d in ds])} "
        f"{med([d.host_cpu_pressure for d in ds])} {med([d.others_cores for d in ds])} "
        f"{sum(d.starved for d in ds)}/{len(ds)}  {', '.join(sorted(tops))[:60]}"
    )
    return name, demand


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=1.5)
    ap.add_argument("--procs", type=int, default=200)
    args = ap.parse_args()
    n, snap_ms, between_ms, ps_ms = snapshot_cost(args.procs)
    print(
        f"snapshot with {n} processes: {snap_ms:.2f} ms "
        f"(demand_between {between_ms:.3f} ms; psutil cpu_times of all {ps_ms:.2f} ms)"
    )
    cores = os.cpu_count() or 1
    results: dict[str, list[tuple[LevelDemand, float]]] = {}
    with serve("tests.apps.kinds_app:app") as s:
        watcher = DemandWatcher([s.pid], [])
        for _ in range(args.rounds):  # interleaved, so a disturbance spreads over all cases
            for busy in (False, True):
                with busy_loops(cores if busy else 0):
                    for route in ("cpu?ms=20", "loop?ms=30"):
                        key = f"/{route.split('?')[0]}{' +hogs' if busy else ''}"
                        results.setdefault(key, []).append(level(f"{s.url}/{route}", watcher, args.duration))
    print(
        f"\n{'case':<12}{'req/s':>6} {'on_cpu':>6} {'wait':>6} {'demand':>6} {'idle':>6} {'psi':>6} "
        f"{'others':>6} starved top"
    )
    demand = dict(_row(k, v) for k, v in results.items())
    ok = snap_ms < 10 and demand["/cpu"] > 0.7 and demand["/cpu +hogs"] > 0.7
    ok = ok and demand["/loop"] < 0.5 and demand["/loop +hogs"] < 0.5
    print("\nbars:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
