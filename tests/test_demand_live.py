"""fastapi_tune.measure.demand on the real /proc: busy loops, thread churn, a real uvicorn under load.

Other work may share this machine, so bounds are generous and relative to what a busy loop forces.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest

from fastapi_tune.measure.demand import DemandWatcher, LevelDemand, demand_between, host_busy_now, supported
from fastapi_tune.measure.loadgen import RequestSpec, run_burst
from tests.apps.hog import spin
from tests.servers import REPO, serve

pytestmark = pytest.mark.skipif(not supported(), reason="needs Linux /proc with schedstat")

CORES = os.cpu_count() or 1


@contextmanager
def busy_loops(n: int = CORES) -> Iterator[tuple[int, ...]]:
    """`n` busy-loop processes, one per core by default, always killed on the way out."""
    # spawn, not fork: forking a process that has threads is deprecated from Python 3.12.
    ctx = multiprocessing.get_context("spawn")
    ready = [ctx.Event() for _ in range(n)]
    procs = [ctx.Process(target=spin, args=(r,), daemon=True) for r in ready]
    try:
        for p in procs:
            p.start()
        # Interpreter start-up takes a while on a loaded host; measure only once all of them spin.
        assert all(r.wait(timeout=30) for r in ready)
        yield tuple(p.pid for p in procs if p.pid is not None)
    finally:
        for p in procs:
            if p.pid is not None:
                p.kill()
        for p in procs:
            if p.pid is not None:
                p.join(timeout=10)


@contextmanager
def script(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.apps.hog", *args], cwd=REPO)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_others_name_a_child_busy_loop_and_leave_out_this_process_threads() -> None:
    stop = threading.Event()

    def burn_here() -> None:  # a thread of this process: ours, never "others"
        while not stop.is_set():
            pass

    burner = threading.Thread(target=burn_here, daemon=True)
    with busy_loops(1) as (hog,):
        burner.start()
        try:
            watcher = DemandWatcher([], [])
            start = watcher.snapshot()
            time.sleep(1.0)
            # Everyone named: other work on a shared host may outrank the busy loop in a top 3.
            d = demand_between(start, watcher.snapshot(), top=1000)
        finally:
            stop.set()
            burner.join()
    tops = {c.pid: c for c in d.top_others}
    assert os.getpid() not in tops
    assert hog in tops, d.top_others
    # Named, above the 0.05-core floor, however little a loaded host gave it.
    assert d.others_cores >= tops[hog].cores


def test_threads_that_come_and_go_and_a_worker_that_dies() -> None:
    with script("churn") as churn:
        time.sleep(0.3)
        watcher = DemandWatcher([churn.pid, 999_999_999], [])
        windows: list[LevelDemand] = []
        used: list[float] = []  # the process's own CPU count over each window, in cores
        proc = psutil.Process(churn.pid)
        for _ in range(4):
            before = sum(proc.cpu_times()[:2])
            watcher.start()
            time.sleep(0.25)
            windows.append(watcher.stop())
            used.append((sum(proc.cpu_times()[:2]) - before) / windows[-1].window_s)
        watcher.start()
        churn.kill()
        churn.wait()
        gone = watcher.stop()
    for d in windows:
        assert d.missing_pids == (999_999_999,)
        (w,) = d.workers
        assert w.on_cpu_cores >= 0
        assert w.wait_cores >= 0
        assert w.on_cpu_cores <= CORES + 0.1  # one thread at a time: never more than the host
    # Thread after thread burned CPU: the ended ones took their schedstat with them, yet their CPU
    # is counted (the process's own count keeps it): the watcher reads what the kernel says the
    # process used, however little a busy host gave it. Without that it read about a quarter.
    for d, cores in zip(windows, used, strict=True):
        assert d.workers[0].on_cpu_cores >= 0.6 * cores - 0.02, (d.workers[0], cores)
    assert gone.workers == ()
    assert set(gone.missing_pids) == {churn.pid, 999_999_999}


def test_snapshot_is_cheap_with_200_processes() -> None:
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        while len([n for n in os.listdir("/proc") if n.isdigit()]) < 200:
            sleepers.extend(subprocess.Popen(["sleep", "60"]) for _ in range(20))
        watcher = DemandWatcher([os.getpid()], [])
        costs = []
        for _ in range(20):
            started = time.perf_counter()
            snap = watcher.snapshot()
            costs.append(time.perf_counter() - started)
        assert len(snap.procs) >= 180  # other work on the host comes and goes meanwhile
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()
    # ~2 ms measured on 2 cores; a busy machine can stretch it, a slow scan (psutil) is ~10x.
    assert statistics.median(costs) < 0.05, costs


def test_host_busy_now_sees_busy_loops() -> None:
    with busy_loops() as hogs:
        busy = host_busy_now(0.5, top=1000)  # all named: a loaded host's top 3 may be others
    assert busy.cpus >= 1
    assert busy.busy
    assert busy.others_cores > 0.5 * CORES
    assert {c.pid for c in busy.top_others} & set(hogs)
    assert busy.idle_cores is not None
    assert busy.idle_cores < 0.3


# ---------------------------------------------------------------------------------------
# A real uvicorn worker: CPU-heavy vs blocking routes, on a quiet and on a busy host.


def _level(url: str, watcher: DemandWatcher) -> LevelDemand:
    start = watcher.snapshot()
    run_burst(RequestSpec("GET", url), 4, warmup_s=0.2, duration_s=1.0)
    # Everyone above the floor is named: at load 7 here a busy loop ranked 4th, behind other work.
    return demand_between(start, watcher.snapshot(), top=1000)


@pytest.mark.slow
def test_uvicorn_cpu_route_keeps_its_demand_on_a_busy_host_a_blocking_route_does_not() -> None:
    with serve("tests.apps.kinds_app:app") as s:
        watcher = DemandWatcher([s.pid], [])
        cpu_quiet = _level(f"{s.url}/cpu?ms=20", watcher)
        loop_quiet = _level(f"{s.url}/loop?ms=30", watcher)
        with busy_loops() as hogs:
            cpu_busy = _level(f"{s.url}/cpu?ms=20", watcher)
            loop_busy = _level(f"{s.url}/loop?ms=30", watcher)
    figures = {
        name: (round(d.on_cpu_cores, 2), round(d.wait_cores, 2), d.host_idle_cores, d.host_cpu_pressure)
        for name, d in [
            ("cpu", cpu_quiet),
            ("loop", loop_quiet),
            ("cpu+hogs", cpu_busy),
            ("loop+hogs", loop_busy),
        ]
    }
    # One worker always has a request: it runs or waits to run, about one core either way.
    assert cpu_quiet.demand_cores > 0.7, figures
    assert cpu_busy.demand_cores > 0.7, figures
    # With a busy loop per core the host has no idle CPU (how the scheduler splits it is its own affair:
    # the worker may run or wait, its demand stays about a core).
    assert cpu_busy.host_idle_cores is not None
    assert cpu_busy.host_idle_cores < 0.3, figures
    assert {c.pid for c in cpu_busy.top_others} & set(hogs), cpu_busy.top_others
    # time.sleep in async def: the worker sleeps, it neither runs nor waits, busy host or not.
    assert loop_quiet.demand_cores < 0.5, figures
    assert loop_busy.demand_cores < 0.5, figures
    assert {c.pid for c in loop_busy.top_others} & set(hogs), loop_busy.top_others
