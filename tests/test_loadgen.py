"""fastapi_tune.measure.loadgen against a real uvicorn on a loopback port."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from fastapi_tune.measure.loadgen import TEARDOWN_GRACE_S, BurstResult, LiveCount, RequestSpec, run_burst
from tests.hostile import Behaviour, hostile_server, unaccepting_port
from tests.servers import free_port

APPS_DIR = Path(__file__).parent / "apps"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "loadgen_app:app", "--app-dir", str(APPS_DIR)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not come up") from None
                time.sleep(0.05)
        yield url
    finally:
        # Killed outright: a graceful shutdown would wait for the abandoned /slow requests.
        proc.kill()
        proc.wait()


def _burst(url: str, concurrency: int = 4, duration_s: float = 0.4) -> BurstResult:
    return run_burst(RequestSpec("GET", url), concurrency, warmup_s=0.1, duration_s=duration_s)


def test_counts_ok_responses(base_url: str) -> None:
    result = _burst(f"{base_url}/ok")
    assert result.concurrency == 4
    assert result.status_counts.get(200, 0) > 20
    assert set(result.status_counts) == {200}
    assert sum(result.status_counts.values()) == len(result.latencies_ms)
    assert dict(result.errors_by_kind) == {}
    assert 0.3 < result.duration_s < 0.6
    assert all(lat > 0 for lat in result.latencies_ms)
    assert result.client_cpu_s > 0
    assert result.retry_after_s is None
    assert not result.stalled


def test_server_errors_are_statuses_not_transport_errors(base_url: str) -> None:
    result = _burst(f"{base_url}/fail")
    assert set(result.status_counts) == {500}
    assert result.status_counts[500] > 20
    assert dict(result.errors_by_kind) == {}


def test_chunked_streaming_response(base_url: str) -> None:
    result = _burst(f"{base_url}/stream")
    assert set(result.status_counts) == {200}
    assert result.status_counts[200] > 20
    assert dict(result.errors_by_kind) == {}


def test_connection_close_reconnects(base_url: str) -> None:
    result = _burst(f"{base_url}/close", concurrency=2)
    # Far more responses than connections proves every slot reconnected after each close.
    assert result.status_counts.get(200, 0) > 20
    assert dict(result.errors_by_kind) == {}


def test_retry_after_is_reported(base_url: str) -> None:
    result = _burst(f"{base_url}/limited", concurrency=2, duration_s=0.2)
    assert set(result.status_counts) == {429}
    assert result.retry_after_s == pytest.approx(7.0)


def test_timeout_counted_and_connection_replaced(base_url: str) -> None:
    result = run_burst(
        RequestSpec("GET", f"{base_url}/slow", timeout_s=0.2), concurrency=2, warmup_s=0.0, duration_s=1.0
    )
    assert result.latencies_ms == ()
    # Each slot must time out more than once, which only happens if the connection was replaced.
    assert result.errors_by_kind.get("timeout", 0) >= 4
    assert set(result.errors_by_kind) == {"timeout"}


def test_connection_refused_is_counted_and_backs_off() -> None:
    port = free_port()  # nothing listens here any more
    started = time.monotonic()
    result = run_burst(RequestSpec("GET", f"http://127.0.0.1:{port}/"), 4, warmup_s=0.0, duration_s=0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert result.latencies_ms == ()
    connects = result.errors_by_kind.get("connect", 0)
    # The per-slot back-off caps attempts near 4 slots * 0.5 s / 50 ms; a busy spin would be thousands.
    assert 4 <= connects <= 200


def test_stop_event_returns_promptly(base_url: str) -> None:
    stop, live = threading.Event(), LiveCount()

    def stop_once_counting() -> None:
        # Keyed to the window, not the wall clock: a busy machine may take a while to open it.
        deadline = time.monotonic() + 10
        while live.read()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        stop.set()

    threading.Thread(target=stop_once_counting, daemon=True).start()
    started = time.monotonic()
    result = run_burst(RequestSpec("GET", f"{base_url}/ok"), 4, 0.1, duration_s=30.0, stop=stop, live=live)
    elapsed = time.monotonic() - started
    assert elapsed < 5.0  # far from the 30 s asked for
    assert 0.0 < result.duration_s < 3.0
    assert result.status_counts.get(200, 0) > 0


def test_stop_during_warmup_returns_empty(base_url: str) -> None:
    stop = threading.Event()
    stop.set()
    result = run_burst(RequestSpec("GET", f"{base_url}/ok"), 2, warmup_s=5.0, duration_s=5.0, stop=stop)
    assert result.duration_s == 0.0
    assert result.latencies_ms == ()


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        run_burst(RequestSpec("GET", "http://127.0.0.1:1/"), 0, 0.0, 0.1)
    with pytest.raises(ValueError, match="unsupported URL"):
        run_burst(RequestSpec("GET", "ftp://127.0.0.1/"), 1, 0.0, 0.1)


# -- hostile servers: every wait has a total deadline, nothing in flight is dropped silently --------

# What a busy 2-core machine may add to a run's own schedule before the test calls it hung.
SLACK_S = 2.0


def _timed_burst(
    url: str, timeout_s: float, concurrency: int, duration_s: float
) -> tuple[BurstResult, float]:
    started = time.monotonic()
    result = run_burst(RequestSpec("GET", url, timeout_s=timeout_s), concurrency, 0.1, duration_s)
    return result, time.monotonic() - started


UNANSWERED: Final = [
    pytest.param("silent", id="never-answers"),
    pytest.param("dribble", id="dribbles-a-byte-every-0.5s"),
    pytest.param("slow_chunked", id="slow-chunked-body"),
]


@pytest.mark.parametrize("behaviour", UNANSWERED)
def test_unanswered_requests_are_reported_in_flight(behaviour: Behaviour) -> None:
    with hostile_server(behaviour) as url:
        result, elapsed = _timed_burst(url, timeout_s=30.0, concurrency=3, duration_s=0.6)
    # Returned on schedule, not after the 30 s timeout: the window's end is not a wait.
    assert elapsed < 0.1 + 0.6 + TEARDOWN_GRACE_S + SLACK_S
    assert result.latencies_ms == ()
    assert dict(result.errors_by_kind) == {}
    assert result.in_flight_at_end == 3
    assert result.stalled
    # Sent before the window opened, so each has been waiting at least the whole window.
    oldest = result.oldest_in_flight_ms
    assert oldest is not None
    assert oldest >= 0.6 * 1000 * 0.9


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", UNANSWERED)
def test_timeout_is_total_not_per_read(behaviour: Behaviour) -> None:
    # 0.7 s is longer than the dribbling server's gap between bytes (0.5 s) and the chunked one's
    # (0.3 s): only a deadline on the whole request, not on each read, can fire.
    with hostile_server(behaviour) as url:
        result, elapsed = _timed_burst(url, timeout_s=0.7, concurrency=2, duration_s=1.6)
    assert elapsed < 0.1 + 1.6 + TEARDOWN_GRACE_S + SLACK_S
    assert result.latencies_ms == ()
    assert set(result.errors_by_kind) == {"timeout"}
    assert result.errors_by_kind["timeout"] >= 2  # each slot at least once
    # What was left at the end is younger than the timeout (older would have been a timeout).
    assert all(age <= 700 for age in result.in_flight_ages_ms)


def test_server_that_hangs_up_on_accept() -> None:
    with hostile_server("hangup") as url:
        result, elapsed = _timed_burst(url, timeout_s=5.0, concurrency=2, duration_s=0.6)
    assert elapsed < 0.1 + 0.6 + TEARDOWN_GRACE_S + SLACK_S
    assert result.latencies_ms == ()
    assert result.in_flight_at_end == 0
    assert not result.stalled
    resets = result.errors_by_kind.get("reset", 0)
    # Backed off between attempts: ~2 slots x 0.6 s / 50 ms; a spin would be thousands.
    assert 1 <= resets <= 200


def test_connect_that_hangs_times_out() -> None:
    with unaccepting_port() as url:
        result, elapsed = _timed_burst(url, timeout_s=0.3, concurrency=3, duration_s=1.0)
    assert elapsed < 0.1 + 1.0 + TEARDOWN_GRACE_S + SLACK_S
    assert result.latencies_ms == ()
    assert result.errors_by_kind.get("connect", 0) >= 1
