"""Rules more than one module applies: each lives here once, so the probe, the plan, verify and
the renderers cannot disagree about it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# AnyIO's default thread limiter: 40 tokens per event loop, i.e. per worker process (FIELD-NOTES).
THREAD_TOKENS_PER_WORKER: Final = 40
# Thread tokens to suggest: at least twice the default (a smaller raise is not worth a deploy),
# 25% over the concurrency per worker the probe reached, never past the point where threads only
# queue on the database pool or the GIL.
MIN_SUGGESTED_TOKENS: Final = 2 * THREAD_TOKENS_PER_WORKER
MAX_SUGGESTED_TOKENS: Final = 400
TOKENS_HEADROOM: Final = 1.25
TOKENS_STEP: Final = 10
# Throughput kept this share of linear growth between two levels: the route scaled (a serialised
# one keeps one request per worker busy, so 1/4 of linear from c=1 to 4 per worker). The triage
# measures its third level only past such a step, and the judge reads a two-level curve by it.
SCALED_SHARE: Final = 0.5
# p99 from fewer samples is one or two requests' luck, not a percentile.
P99_MIN_SAMPLES: Final = 200
# Little's law (throughput x mean latency / concurrency) outside 1 +- 0.3 means the client
# measured something other than a steady closed loop (stalls, a window too short).
LITTLE_TOLERANCE: Final = 0.3
# A closed loop at c=N always has N requests in flight when a level closes: that is no news. A
# request older than a few times the level's p99 (the slowest completed request when p99 has too
# few samples) was stuck. Measured on the sample app (22 levels, a busy host): the oldest request
# in flight at a level's end was 0.0-1.01 x the level's slowest answer. The floor keeps a busy
# machine's scheduling hiccups on a millisecond route quiet.
STUCK_IN_FLIGHT_FACTOR: Final = 4.0
STUCK_IN_FLIGHT_MIN_MS: Final = 100.0


# How much harm each class does to a server, in order: `check` and `compare` call a route whose class
# moved up this order regressed. io-bound scales on one event loop; threadpool-bound and pool-bound
# cap at a known size that a setting raises; cpu-bound holds one worker per request but uses its CPU
# (serialized: cpu-bound or loop-blocking, unseen; ranked with the milder); loop-blocking holds the
# worker without using it (a blocking call in `async def`); stalled answers nothing. Keyed by the
# report's class names (inconclusive has no rank: it cannot be compared).
CLASS_HARM: Final[Mapping[str, int]] = {
    "io-bound": 0,
    "threadpool-bound": 1,
    "pool-bound": 1,
    "cpu-bound": 2,
    "serialized": 2,
    "loop-blocking": 3,
    "stalled": 4,
}


def rule_of_thumb_workers(logical_cpus: int) -> int:
    """gunicorn's documented starting point, (2 x cores) + 1, with the cores it counts (logical)."""
    return 2 * logical_cpus + 1


def littles_law_ok(ratio: float) -> bool:
    """Whether throughput x mean latency / concurrency is near 1, as a steady closed loop gives."""
    return abs(ratio - 1) <= LITTLE_TOLERANCE


def stuck_in_flight(oldest_ms: float | None, p99_ms: float | None, max_ms: float | None) -> bool:
    """Whether the oldest request unanswered at a level's end is news: stuck, not the loop's normal."""
    if oldest_ms is None:
        return False
    usual = p99_ms if p99_ms is not None else max_ms
    if usual is None:  # nothing completed to compare with: a stall, which is always news
        return True
    return oldest_ms > max(STUCK_IN_FLIGHT_FACTOR * usual, STUCK_IN_FLIGHT_MIN_MS)


@dataclass(frozen=True)
class ThreadTokens:
    """A thread-limiter size per worker and the arithmetic behind it."""

    tokens: int
    need: float  # peak concurrency x headroom / workers, before rounding and bounds
    why: str


def suggested_thread_tokens(peak_concurrency: int, workers: int) -> ThreadTokens:
    """Tokens per worker so that each of `workers` holds its share of `peak_concurrency` in threads."""
    need = peak_concurrency * TOKENS_HEADROOM / max(workers, 1)
    rounded = math.ceil(need / TOKENS_STEP) * TOKENS_STEP
    tokens = min(MAX_SUGGESTED_TOKENS, max(MIN_SUGGESTED_TOKENS, rounded))
    arithmetic = f"{peak_concurrency} x {TOKENS_HEADROOM:g} / {workers} worker(s) = {need:.0f}"
    if tokens == rounded:
        bound = f", rounded up to {tokens}" if rounded != need else ""
    elif tokens == MIN_SUGGESTED_TOKENS:
        bound = f", raised to the floor of {tokens} (2 x the default {THREAD_TOKENS_PER_WORKER})"
    else:
        bound = f", capped at {tokens} (more threads only queue on the database pool or the GIL)"
    return ThreadTokens(tokens=tokens, need=need, why=arithmetic + bound)


# -- Overload (issue 28): how an app behaves far past its knee ------------------------------------
# The stress level, in flight per worker: past AnyIO's 40 threads and the pools apps usually ship
# (SQLAlchemy 5 + 10, asyncpg 10), where the known collapses live (FIELD-NOTES, "Overload").
OVERLOAD_PER_WORKER: Final = 64
# Goodput at the stress level against the route's plateau (its best clean throughput): at or above
# HOLDS the app held; below COLLAPSES (or nothing completed) it collapsed; between, it degraded.
# A queue that only adds latency keeps its goodput (completions count however late), so it holds.
OVERLOAD_HOLDS: Final = 0.8
OVERLOAD_COLLAPSES: Final = 0.3


class OverloadBehaviour(StrEnum):
    """How an app (or a route) behaved at the stress level, as the report spells it."""

    HOLDS = "holds"
    DEGRADES = "degrades"
    COLLAPSES = "collapses"
    WEDGED = "wedged"  # after the load stopped, one request got no answer within the timeout


def overload_behaviour(
    goodput_rps: float, plateau_rps: float | None, completed: int, wedged: bool | None
) -> OverloadBehaviour:
    """The behaviour of one stress trial: its goodput against the plateau, then the wedge check."""
    if wedged:
        return OverloadBehaviour.WEDGED
    if completed == 0:
        return OverloadBehaviour.COLLAPSES
    if plateau_rps is None or plateau_rps <= 0:
        return OverloadBehaviour.HOLDS  # nothing to compare with: it answered
    ratio = goodput_rps / plateau_rps
    if ratio >= OVERLOAD_HOLDS:
        return OverloadBehaviour.HOLDS
    return OverloadBehaviour.COLLAPSES if ratio < OVERLOAD_COLLAPSES else OverloadBehaviour.DEGRADES


def fell_over(behaviour: OverloadBehaviour) -> bool:
    """A trial the bisection counts as past the collapse point."""
    return behaviour in (OverloadBehaviour.COLLAPSES, OverloadBehaviour.WEDGED)
