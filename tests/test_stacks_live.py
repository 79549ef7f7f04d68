"""Stack sampling against real servers under real load: each kind of route names its own line."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from fastapi_tune.measure.appfiles import AppFiles
from fastapi_tune.measure.loadgen import BurstResult, RequestSpec, run_burst
from fastapi_tune.measure.observe import worker_children
from fastapi_tune.measure.stack_attribution import RouteProfile, ThreadKind, attribute, describe
from fastapi_tune.measure.stacks import StackSample, sample_workers
from tests.servers import REPO, Server, serve

APP_DIR = REPO / "tests" / "apps"
APP_FILES = AppFiles.at(APP_DIR)
APP_FILE = APP_DIR / "stacks_app.py"
RATE_HZ = 50  # benchmarks/stacks_overhead.py: within run-to-run noise at this rate


def line_of(text: str) -> int:
    """Where `text` is in the test app now, so editing the app cannot silently stale the tests."""
    lines = APP_FILE.read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if text in line)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("uvicorn", 1), id="uvicorn-1-worker"),
        pytest.param(("gunicorn", 2), id="gunicorn-2-workers"),
    ],
)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Server, list[int]]]:
    kind, workers = request.param
    with serve("tests.apps.stacks_app:app", server=kind, workers=workers) as s:
        pids = [k.pid for k in worker_children(s.pid)] or [s.pid]
        assert len(pids) == workers
        yield s, pids


def profile_under_load(server: tuple[Server, list[int]], path: str, per_worker: int) -> RouteProfile:
    """Load `path` (per_worker connections per worker) while sampling every worker for a second."""
    s, pids = server
    done: list[BurstResult] = []
    spec = RequestSpec("GET", s.url + path)
    load = threading.Thread(target=lambda: done.append(run_burst(spec, per_worker * len(pids), 0.2, 2.0)))
    load.start()
    time.sleep(0.5)  # every connection open, past the warm-up
    sample = sample_workers(pids, 1.0, RATE_HZ, APP_FILES)
    load.join()
    assert isinstance(sample, StackSample), sample
    assert len(sample.workers) == len(pids)
    assert done[0].latencies_ms
    return attribute(sample, APP_FILES)


@pytest.mark.slow
def test_loop_blocking_names_its_line_and_time_sleep(server: tuple[Server, list[int]]) -> None:
    p = profile_under_load(server, "/loop", 4)
    top = p.hotspots[0]
    assert (top.thread, top.file, top.line, top.call) == (
        ThreadKind.EVENT_LOOP, "stacks_app.py", line_of("time.sleep(0.03)"), "time.sleep",
    )  # fmt: skip
    assert p.loop.app_blocked is not None
    assert p.loop.app_blocked > 0.5
    assert "blocked" in describe(p)
    assert f"stacks_app.py:{top.line} loop_route -> time.sleep" in describe(p)


@pytest.mark.slow
def test_cpu_names_its_hot_function(server: tuple[Server, list[int]]) -> None:
    p = profile_under_load(server, "/cpu", 2)
    top = p.hotspots[0]
    assert (top.thread, top.function, top.call) == (ThreadKind.EVENT_LOOP, "hash_rounds", "hashlib.sha256")
    # The loop is in the app more than in anything else but its selector (on a busy machine the
    # load generator cannot always keep two workers saturated, so idle time varies).
    assert p.loop.app > max(p.loop.framework, 0.25)
    # Waiting for a CPU on a busy machine counts as running, not as blocked.
    assert p.loop.app_running is not None
    assert p.loop.app_blocked is not None
    assert p.loop.app_running > p.loop.app_blocked


@pytest.mark.slow
def test_threadpool_names_the_sleep_line_in_anyio_threads(server: tuple[Server, list[int]]) -> None:
    p = profile_under_load(server, "/threadpool", 64)  # beyond AnyIO's 40 threads per worker
    top = p.hotspots[0]
    assert (top.thread, top.line, top.call) == (
        ThreadKind.THREADPOOL,
        line_of("time.sleep(0.05)"),
        "time.sleep",
    )
    assert p.threadpool.threads_seen == 40
    assert p.threadpool.busy_threads > 10
    assert p.loop.app == 0.0


@pytest.mark.slow
def test_async_io_shows_the_loop_mostly_idle(server: tuple[Server, list[int]]) -> None:
    p = profile_under_load(server, "/io", 8)
    assert p.loop.idle > 0.5
    assert p.threadpool.busy_threads == 0
    assert all(h.share < 0.2 for h in p.hotspots)
    assert describe(p).startswith("event loop idle ")


@pytest.mark.slow
def test_no_py_spy_outlives_sampling(server: tuple[Server, list[int]]) -> None:
    _, pids = server
    assert isinstance(sample_workers(pids, 0.3, RATE_HZ, APP_FILES), StackSample)
    left = [c for c in psutil.Process().children(recursive=True) if "py-spy" in " ".join(c.cmdline())]
    assert left == []
