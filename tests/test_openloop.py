"""fastapi_tune.measure.openloop: the arrival schedule, the histogram, and runs against real servers."""

from __future__ import annotations

import itertools
import math
import random
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from fastapi_tune.measure import openloop
from fastapi_tune.measure.histogram import LatencyHistogram
from fastapi_tune.measure.loadgen import TEARDOWN_GRACE_S, LiveCount, RequestSpec
from fastapi_tune.measure.openloop import arrival_offsets, run_open_loop
from tests.hostile import Behaviour, hostile_server
from tests.servers import free_port, serve

# What a busy 2-core machine may add to a run's own schedule before the test calls it hung.
SLACK_S = 2.0

# -- the schedule (pure) ---------------------------------------------------------------------------


def test_constant_schedule_count_and_spacing() -> None:
    offsets = arrival_offsets(100.0, 2.0, "constant")
    assert len(offsets) == 200
    assert offsets[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert all(g == pytest.approx(0.01) for g in gaps)
    assert offsets[-1] < 2.0


def test_poisson_schedule_count_and_mean_gap() -> None:
    rate, duration = 200.0, 20.0
    offsets = arrival_offsets(rate, duration, "poisson", seed=7)
    expected = rate * duration
    # Poisson count: sd = sqrt(4000) ~ 63; five of them is a bound no seed should cross.
    assert abs(len(offsets) - expected) < 5 * math.sqrt(expected)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    # Exponential gaps: their sd equals their mean (constant spacing would have sd 0).
    assert statistics.stdev(gaps) == pytest.approx(1 / rate, rel=0.1)
    assert all(0 < t < duration for t in offsets)


def test_poisson_schedule_is_seeded() -> None:
    assert arrival_offsets(50.0, 5.0, "poisson", seed=1) == arrival_offsets(50.0, 5.0, "poisson", seed=1)
    assert arrival_offsets(50.0, 5.0, "poisson", seed=1) != arrival_offsets(50.0, 5.0, "poisson", seed=2)


@pytest.mark.parametrize(
    ("rate", "arrival", "message"),
    [
        pytest.param(0.0, "constant", "rate_rps", id="zero-rate"),
        pytest.param(10.0, "bursty", "arrival", id="unknown-arrival"),
    ],
)
def test_schedule_rejects_bad_input(rate: float, arrival: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        arrival_offsets(rate, 1.0, arrival)  # type: ignore[arg-type]


# -- the histogram (pure) --------------------------------------------------------------------------


def test_histogram_percentiles_within_one_percent() -> None:
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(3.0, 0.8) for _ in range(20_000))
    hist = LatencyHistogram.of(values)
    assert hist.total == len(values)
    for q in (50.0, 90.0, 99.0, 99.9):
        exact = values[math.ceil(q / 100 * len(values)) - 1]
        assert hist.percentile(q) == pytest.approx(exact, rel=0.011)
    assert hist.percentile(100.0) == values[-1]
    assert hist.percentile(0.0) == values[0]


def test_histogram_merge_equals_histogram_of_both() -> None:
    rng = random.Random(4)
    a = [rng.uniform(0.5, 50.0) for _ in range(500)]
    b = [rng.uniform(10.0, 900.0) for _ in range(300)]
    assert LatencyHistogram.of(a).merge(LatencyHistogram.of(b)) == LatencyHistogram.of(a + b)
    assert LatencyHistogram.of(a).merge(LatencyHistogram.of([])) == LatencyHistogram.of(a)


def test_empty_histogram() -> None:
    hist = LatencyHistogram.of([])
    assert hist.total == 0
    assert math.isnan(hist.percentile(50.0))


# -- runs against real servers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    with serve("tests.apps.openloop_app:app") as server:
        yield server.url


@pytest.mark.slow
@pytest.mark.parametrize("arrival", ["constant", "poisson"])
def test_rate_well_below_capacity_is_met(app_url: str, arrival: str) -> None:
    rate, warmup, duration = 200.0, 0.3, 1.5
    live = LiveCount()
    result = run_open_loop(
        RequestSpec("GET", f"{app_url}/ok"),
        rate,
        duration,
        arrival=arrival,  # type: ignore[arg-type]
        warmup_s=warmup,
        seed=11,
        max_in_flight=64,
        live=live,
    )
    # Exactly the schedule's starts that fall in the window were counted.
    schedule = arrival_offsets(rate, warmup + duration, arrival, seed=11)  # type: ignore[arg-type]
    assert result.intended_starts == sum(1 for t in schedule if t >= warmup)
    assert result.dropped_starts == 0
    assert dict(result.errors_by_kind) == {}
    assert set(result.status_counts) == {200}
    assert result.completed == result.sent == result.intended_starts
    assert result.duration_s == pytest.approx(duration)
    # Poisson arrivals hold the rate on average only: the schedule's own count is the reference.
    assert result.arrival_rps == pytest.approx(result.intended_starts / duration)
    # The server kept up: what ended inside the window is what started in it, but for the
    # requests on the wire at either edge (a few at 200 req/s).
    assert result.served_rps == pytest.approx(result.arrival_rps, rel=0.2)
    assert result.backlog_at_end <= 0.2 * rate
    assert result.drain_s is not None
    assert result.drain_s < 1.0
    assert result.first_segment.total > 0
    assert result.last_segment.total > 0
    assert result.in_flight_at_end == 0
    assert not result.stalled
    # A trivial route at a fifth of a core: most starts are on time, even on a busy machine.
    assert result.late_starts <= 0.5 * result.intended_starts
    assert result.percentiles_ms[50.0] <= result.percentiles_ms[99.9]
    # ~0.1 ms of CPU per start is 0.02 core at 200 req/s; a scheduler that spun between starts
    # would burn a whole core.
    assert result.client_cpu_s / result.duration_s < 0.5
    assert live.read()[0] == result.completed


@pytest.mark.slow
def test_the_generators_own_lateness_is_counted_late_not_as_latency(
    app_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer that wakes late (a VM's, while the server burns a core: 1-5 ms) is the generator's
    delay, not the server's: the start is counted late, its latency runs from when it went out."""
    late_s = 0.03
    fire = openloop._Scheduler.fire

    def late_fire(self: openloop._Scheduler) -> None:
        time.sleep(late_s)  # blocks the generator's loop: every wake-up comes 30 ms late
        fire(self)

    monkeypatch.setattr(openloop._Scheduler, "fire", late_fire)
    result = run_open_loop(RequestSpec("GET", f"{app_url}/ok"), 20.0, 1.0, warmup_s=0.2)
    assert result.completed > 0
    assert result.late_starts > 0.5 * result.intended_starts
    assert result.mean_start_lag_ms >= 1000 * late_s
    # /ok answers in about a millisecond; 30 ms of the generator's lateness would read as more.
    assert result.percentiles_ms[50.0] < 1000 * late_s * 0.5


@pytest.mark.slow
def test_rate_far_above_capacity_drops_starts_beyond_the_bound(app_url: str) -> None:
    # /block serves ~50 req/s; ask for 300 with at most 4 requests in flight.
    result = run_open_loop(RequestSpec("GET", f"{app_url}/block"), 300.0, 1.5, warmup_s=0.0, max_in_flight=4)
    assert result.dropped_starts > 0.3 * result.intended_starts
    assert result.sent + result.dropped_starts == result.intended_starts
    assert dict(result.errors_by_kind) == {}
    # The server served what it could, far below the rate; the generator held the rate it could
    # send within the bound and queued nothing itself: no request waited for a busy connection,
    # so latency is the server's own queue of at most 4 (4 x 20 ms, and slack for a busy machine).
    assert result.served_rps < 0.5 * 300.0
    assert result.arrival_rps == pytest.approx(result.sent / result.duration_s)
    assert result.connections_opened <= 4
    assert result.backlog_at_end <= 4
    assert result.percentiles_ms[50.0] < 400.0


@pytest.mark.slow
def test_rate_above_capacity_serves_the_capacity_and_its_latency_grows(app_url: str) -> None:
    # /block serves ~50 req/s; at 100 req/s with a generous bound the queue builds in the server.
    result = run_open_loop(
        RequestSpec("GET", f"{app_url}/block"), 100.0, 2.0, warmup_s=0.0, max_in_flight=256
    )
    assert result.dropped_starts == 0
    assert result.arrival_rps == pytest.approx(100.0, rel=0.05)
    # Every request is answered in the end, so the window's responses count the arrival rate...
    assert result.completed == result.intended_starts
    # ...but inside the window the server served at most its capacity, and left a backlog.
    assert result.served_rps < 0.75 * 100.0
    assert result.backlog_at_end > 0.25 * result.intended_starts
    assert result.drain_s is not None
    assert result.drain_s > 0.5
    # The queue grew through the window: the last second waited far longer than the first.
    assert result.last_segment.percentile(50.0) > 3 * result.first_segment.percentile(50.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param("silent", id="never-answers"),
        pytest.param("dribble", id="dribbles-a-byte-every-0.5s"),
        pytest.param("slow_chunked", id="slow-chunked-body"),
    ],
)
def test_unanswered_requests_time_out_from_their_intended_start(behaviour: Behaviour) -> None:
    # 0.6 s: longer than the gaps between the dribbled bytes or chunks, so only a deadline on the
    # whole request can fire.
    warmup, duration, timeout = 0.2, 1.0, 0.6
    with hostile_server(behaviour) as url:
        started = time.monotonic()
        result = run_open_loop(
            RequestSpec("GET", url), 40.0, duration, warmup_s=warmup, timeout_s=timeout, max_in_flight=4
        )
        elapsed = time.monotonic() - started
    assert elapsed < warmup + duration + timeout + TEARDOWN_GRACE_S + SLACK_S
    assert result.latencies_ms == ()
    # Every counted start ends as exactly one thing: here a timeout or a drop.
    assert result.errors_by_kind.get("timeout", 0) + result.dropped_starts == result.intended_starts
    assert result.errors_by_kind.get("timeout", 0) > 0
    assert result.dropped_starts > 0
    assert result.in_flight_at_end == 0


def test_stop_reports_what_is_still_in_flight() -> None:
    stop = threading.Event()
    threading.Timer(0.6, stop.set).start()
    with hostile_server("silent") as url:
        started = time.monotonic()
        result = run_open_loop(
            RequestSpec("GET", url), 20.0, 30.0, warmup_s=0.1, timeout_s=30.0, max_in_flight=4, stop=stop
        )
        elapsed = time.monotonic() - started
    assert elapsed < 0.6 + TEARDOWN_GRACE_S + SLACK_S
    assert result.in_flight_at_end > 0
    assert result.stalled
    assert result.duration_s < 1.5


def test_refused_connections_are_errors_not_silence() -> None:
    port = free_port()  # nothing listens here any more
    result = run_open_loop(RequestSpec("GET", f"http://127.0.0.1:{port}/"), 50.0, 0.6, warmup_s=0.0)
    assert result.latencies_ms == ()
    assert result.errors_by_kind.get("connect", 0) > 0
    settled = sum(result.errors_by_kind.values()) + result.dropped_starts + result.in_flight_at_end
    assert settled == result.intended_starts


def test_rejects_bad_input() -> None:
    spec = RequestSpec("GET", "http://127.0.0.1:1/")
    with pytest.raises(ValueError, match="rate_rps"):
        run_open_loop(spec, 0.0, 1.0)
    with pytest.raises(ValueError, match="max_in_flight"):
        run_open_loop(spec, 10.0, 1.0, max_in_flight=0)
    with pytest.raises(ValueError, match="spec"):
        run_open_loop([], 10.0, 1.0)
