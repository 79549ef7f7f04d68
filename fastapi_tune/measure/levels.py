"""One level of the ladder: its duration, how its burst becomes a Level, and the rules that end a climb."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fastapi_tune.core.rules import P99_MIN_SAMPLES
from fastapi_tune.measure.demand import (
    LevelDemand,
)
from fastapi_tune.measure.loadgen import (
    BurstResult,
)
from fastapi_tune.measure.probe_options import ProbeOptions
from fastapi_tune.measure.report import Latency, Level
from fastapi_tune.measure.stats import summarize

# A level counts at least this many completions when the time allows, so that c=1 on a 100 ms
# route is not judged from five requests (one request more or less would move it by 20%).
_MIN_COMPLETIONS: Final = 15


_MAX_LEVEL_S: Final = 3.0


# One Python thread drives the generator: near a full core, it and not the app is the limit.
CLIENT_SATURATED_CORES: Final = 0.85


# Above this share of failed requests a level is not evidence and the ladder stops politely.
ERROR_STOP_RATIO: Final = 0.05


# A worker below a quarter of the busiest one's CPU, while the server used at least 0.2 cores.
WORKER_IMBALANCE_RATIO: Final = 0.25


WORKER_IMBALANCE_MIN_CORES: Final = 0.2


# Saturated: two doublings of concurrency bought less than this gain in throughput.
_SATURATION_GAIN: Final = 1.15


# The threadpool knee sits at 40 x workers (AnyIO's default limiter); to see it plateau the
# ladder must reach well past it.
KNEE_MARGIN: Final = 1.5


EXTENSION_CAP: Final = 1024


def imbalanced(concurrency: int, per_worker: tuple[float, ...] | None) -> bool:
    """Some workers idled while another worked, with enough connections to keep all busy."""
    if not per_worker or len(per_worker) < 2 or concurrency < 2 * len(per_worker):
        return False
    busiest = max(per_worker)
    # Below 0.2 cores the server is mostly waiting and the split says nothing.
    return (
        sum(per_worker) >= WORKER_IMBALANCE_MIN_CORES and min(per_worker) < WORKER_IMBALANCE_RATIO * busiest
    )


# A level with requests in flight and none answered is re-measured for STALL_CONFIRM_S (the first
# level: up to the request timeout); it is a stall when again nothing completes and those requests
# are much older than any answer the route gave before: 3x the previous level's slowest answer and
# at least a second (2 s when there is no previous level to compare with).
STALL_CONFIRM_S: Final = 3.0


STALL_AGE_FACTOR: Final = 3.0


STALL_MIN_AGE_MS: Final = 1000.0


STALL_FIRST_LEVEL_MS: Final = 2000.0


def is_stall(result: BurstResult, previous: Level | None) -> bool:
    """Nothing completed while requests waited far longer than the route ever took."""
    oldest = result.oldest_in_flight_ms
    if not result.stalled or oldest is None:
        return False
    if previous is not None and previous.latency_ms is not None:
        return oldest >= max(STALL_AGE_FACTOR * previous.latency_ms.max, STALL_MIN_AGE_MS)
    return oldest >= STALL_FIRST_LEVEL_MS


def make_level(
    result: BurstResult,
    server_cpu: float | None,
    rss: tuple[int, ...] | None,
    by_worker: tuple[float, ...] | None = None,
    demand: LevelDemand | None = None,
    previous: Level | None = None,
) -> Level:
    """Turn one burst's raw counts into a level with its honesty checks."""
    b = summarize(result)
    latency = None
    littles: float | None = None
    if b.mean_ms is not None and b.p50_ms is not None and b.p90_ms is not None and b.max_ms is not None:
        latency = Latency(
            p50=round(b.p50_ms, 3),
            p90=round(b.p90_ms, 3),
            p99=None if b.p99_ms is None else round(b.p99_ms, 3),
            max=round(b.max_ms, 3),
            mean=round(b.mean_ms, 3),
        )
        # Closed loop, no think time: completions/s x mean latency ~ concurrency. Far below 1
        # means requests were in flight but not completing (stalls, timeouts) or the window
        # was too short for the latency.
        littles = round(b.samples / max(result.duration_s, 1e-9) * b.mean_ms / 1000 / result.concurrency, 3)
    return Level(
        concurrency=result.concurrency,
        requests=b.requests,
        errors=b.errors,
        errors_by_kind=b.errors_by_kind,
        duration_s=result.duration_s,
        throughput_rps=b.throughput_rps,
        latency_ms=latency,
        server_cpu_cores=None if server_cpu is None else round(server_cpu, 3),
        server_rss_bytes=rss,
        client_cpu_cores=b.client_cpu_cores,
        client_saturated=b.client_cpu_cores >= CLIENT_SATURATED_CORES,
        littles_law_ratio=littles,
        p99_supported=b.samples >= P99_MIN_SAMPLES,
        server_cpu_by_worker=None if by_worker is None else tuple(round(c, 3) for c in by_worker),
        worker_imbalance=imbalanced(result.concurrency, by_worker),
        demand=demand,
        errors_by_status=b.errors_by_status,
        in_flight_at_end=result.in_flight_at_end,
        oldest_in_flight_ms=None
        if result.oldest_in_flight_ms is None
        else round(result.oldest_in_flight_ms, 1),
        stalled=is_stall(result, previous),
    )


def default_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to max_concurrency (which is included even when not a power of two)."""
    levels = [1]
    while levels[-1] * 2 <= max_concurrency:
        levels.append(levels[-1] * 2)
    if levels[-1] != max_concurrency:
        levels.append(max_concurrency)
    return levels


def saturated(levels: Sequence[Level]) -> bool:
    """Two doublings of concurrency that bought (almost) no throughput."""
    clean = [
        lv for lv in levels if not lv.client_saturated and lv.errors <= ERROR_STOP_RATIO * max(lv.requests, 1)
    ]
    if len(clean) < 3:
        return False
    a, c = clean[-3], clean[-1]
    return c.concurrency >= 4 * a.concurrency and c.throughput_rps < _SATURATION_GAIN * a.throughput_rps


def still_scaling(levels: Sequence[Level]) -> bool:
    """Throughput still grows about in step with concurrency at the top of the ladder."""
    if len(levels) < 2:
        return False
    a, b = levels[-2], levels[-1]
    if a.throughput_rps <= 0:
        return False
    return b.throughput_rps / a.throughput_rps >= 0.7 * b.concurrency / a.concurrency


def level_duration(options: ProbeOptions, concurrency: int, previous: Level | None) -> float:
    """The counted window: fixed by --duration, else long enough for _MIN_COMPLETIONS."""
    if options.duration_s is not None:
        return options.duration_s
    if previous is None or previous.latency_ms is None:
        return options.base_duration_s
    # Service at this level is at least as slow as at the last one (closed loop).
    needed = _MIN_COMPLETIONS * previous.latency_ms.mean / 1000 / concurrency
    return min(_MAX_LEVEL_S, max(options.base_duration_s, needed))
