"""The triage: every route measured briefly first, so that each gets a verdict whatever the budget.

A full ladder costs ~5-7 s per route; a real app has 20 to 200 of them (FIELD-NOTES, "Apps are
big; budgets are small"). The triage measures each route with three short levels instead:

1. c=1: the service time, and the CPU each request takes (the workers' schedstat);
2. c = SPREAD_PER_WORKER x workers, with the stacks sampled while it runs: does throughput grow
   past the workers, and is the event loop computing, blocked in app code, or idle in its
   selector (which tells cpu, loop-blocking and io apart directly), are pool threads busy;
3. c = past AnyIO's 40 threads per worker, only when level 2 scaled: where a `def` route's
   thread limiter, a pool, or the server's own CPU caps it.

Each short level ends once it holds enough answers (Pace); a serialised route stops after level 2.
The server is then let drain (drain.py) so the next route does not inherit this one's backlog.
Measurement only: what the levels mean is the judge's business.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Final

from fastapi_tune.core.rules import SCALED_SHARE, THREAD_TOKENS_PER_WORKER
from fastapi_tune.discover.openapi import Operation
from fastapi_tune.measure.drain import wait_drained
from fastapi_tune.measure.ladder import Ladder, Pace, Session
from fastapi_tune.measure.loadgen import RequestSpec
from fastapi_tune.measure.report import Endpoint, EvidenceDepth, Level, StopReason
from fastapi_tune.measure.stack_attribution import RouteProfile, attribute
from fastapi_tune.measure.stacks import StackRecorder, Unavailable
from fastapi_tune.measure.stats import median

# Level 2 holds this many requests in flight per worker: past one per worker, so that a serialised
# route (one request per worker at a time) and a scaling one differ by a factor of four.
SPREAD_PER_WORKER: Final = 4

# Level 3 sits this far past the thread limiter's knee (40 per worker), rounded up to a multiple
# of 16: 64 for one worker, 128 for two. The judge needs 1.3x past a knee to call it a plateau.
KNEE_REACH: Final = 1.5

# Stacks are sampled over level 2 at this rate: its window is short, and nonblocking sampling at
# 100 Hz stayed within the run-to-run noise of the app's throughput (benchmarks/stacks_overhead.py).
STACKS_HZ: Final = 100
# ... and for at least this long (~25 samples per worker), however late py-spy attaches (within
# the level's longest window).
STACKS_MIN_S: Final = 0.25

# The paces, sized from measurement on the 2-core machine (benchmarks/breadth.py): c=1 needs a few
# answers for a service time; level 2 a window long enough for ~25 stack samples per worker;
# level 3 a warm-up and a window of a few service times (SLOW_WINDOW_SERVICES: its answers arrive
# in waves), bounded so that a slow route costs at most about 3 s.
C1_PACE: Final = Pace(warmup_s=0.05, min_s=0.1, max_s=1.0, completions=4)
SPREAD_PACE: Final = Pace(warmup_s=0.15, min_s=0.2, max_s=1.0, completions=10)
KNEE_PACE: Final = Pace(warmup_s=0.1, min_s=0.2, max_s=1.0, completions=32)

# What a route's first two levels (and its drain) cost at least (a fast route, measured: ~0.45 s on
# the 2-core machine): the triage keeps this much of the budget for each route still to come, or
# what they have cost so far on this host when that is more (a busy host slows everything).
TRIAGE_MIN_S: Final = 0.5


@dataclass
class TriageClock:
    """What the routes' first two levels and drain have cost so far on this host."""

    costs: list[float] = field(default_factory=list)

    def reserve_s(self) -> float:
        """What each route still to come keeps of the budget for its first two levels."""
        return max(TRIAGE_MIN_S, median(self.costs)) if self.costs else TRIAGE_MIN_S


SLOW_WARMUP_MAX_S: Final = 0.5
# A slow route's answers come in waves one service time apart while many are in flight: a window
# of three service times holds enough of them for a throughput (two read 174-348 req/s for 285).
SLOW_WINDOW_SERVICES: Final = 3.0


def triage_concurrency(workers: int | None, max_concurrency: int | None) -> tuple[int, int]:
    """(level 2, level 3) concurrency for this many workers (unknown: one), within --max-concurrency."""
    p = workers if workers and workers > 0 else 1
    spread = SPREAD_PER_WORKER * p
    knee = 16 * math.ceil(KNEE_REACH * THREAD_TOKENS_PER_WORKER * p / 16)
    if max_concurrency is not None:
        spread, knee = min(spread, max_concurrency), min(knee, max_concurrency)
    return spread, knee


def scaled(first: Level, spread: Level) -> bool:
    """Level 2 kept SCALED_SHARE of linear growth from c=1 (core.rules): worth measuring level 3."""
    if first.throughput_rps <= 0 or spread.concurrency <= first.concurrency:
        return False
    linear = spread.concurrency / first.concurrency
    return spread.throughput_rps / first.throughput_rps >= SCALED_SHARE * linear


def _paced(options_duration: float | None, pace: Pace, service_s: float | None) -> Pace:
    """The pace for this route: --duration fixes the window; a slow route warms up and counts longer."""
    if options_duration is not None:
        return replace(pace, min_s=options_duration, max_s=options_duration)
    if service_s is None:
        return pace
    warmup = max(pace.warmup_s, min(service_s, SLOW_WARMUP_MAX_S))
    window = min(pace.max_s, max(pace.min_s, SLOW_WINDOW_SERVICES * service_s))
    return replace(pace, warmup_s=warmup, min_s=window)


def _service_s(level: Level | None) -> float | None:
    return None if level is None or level.latency_ms is None else level.latency_ms.p50 / 1000


@dataclass
class _Found:
    """What the triage of one route gathered besides its levels."""

    reason: StopReason = StopReason.MAX_LEVEL
    detail: str = ""
    profile: RouteProfile | None = None
    unavailable: str | None = None


def triage_route(
    session: Session,
    op: Operation,
    spec: RequestSpec,
    share_until: float,
    must_until: float,
    clock: TriageClock | None = None,
) -> Endpoint:
    """The route's triage levels (its stacks sampled at level 2), then a drained server.

    Its first two levels, which carry most of the evidence, start while they fit before
    `must_until` (the budget less what the later routes need for theirs); the third only while it
    fits the route's share, `share_until`. Raises ServerDied like a ladder; every other end (errors,
    429, a stall, the budget) is the endpoint's stop reason.
    """
    started, third_s = time.monotonic(), 0.0
    ladder = Ladder(session, op, spec, share_until)
    found = _Found(unavailable=_why_no_stacks(session))
    spread_c, knee_c = triage_concurrency(session.workers, session.options.max_concurrency)
    for n, pace, sampled in ((1, C1_PACE, False), (spread_c, SPREAD_PACE, True), (knee_c, KNEE_PACE, False)):
        if n in {lv.concurrency for lv in ladder.levels}:
            continue  # --max-concurrency 1 or 4: the levels coincide
        # Without the server's CPU or stacks (a remote server) two levels are no verdict: the third
        # is measured whatever the second showed.
        observed = session.demand is not None or session.watcher is not None or bool(session.worker_pids)
        flat = len(ladder.levels) >= 2 and not scaled(ladder.levels[0], ladder.levels[-1])
        if n == knee_c and observed and flat:
            found.reason = StopReason.SATURATED
            break
        level_started = time.monotonic()
        go_on = _level(session, ladder, n, pace, sampled, found, share_until if n == knee_c else must_until)
        if n == knee_c:
            third_s = time.monotonic() - level_started
        if not go_on:
            break
    if found.reason is not StopReason.STALLED:  # a stall has its own, longer recovery
        last = ladder.levels[-1] if ladder.levels else None
        wait_drained(session.worker_pids, last, session.budget.stop, session.budget.deadline)
    if clock is not None and len(ladder.levels) >= 2:
        clock.costs.append(time.monotonic() - started - third_s)
    return Endpoint(
        op.method,
        op.path,
        op.url,
        tuple(sorted(ladder.levels, key=lambda lv: lv.concurrency)),
        found.reason,
        found.detail,
        profile=found.profile,
        profile_unavailable=None if found.profile is not None else found.unavailable,
        evidence_depth=EvidenceDepth.TRIAGE,
    )


def _level(
    session: Session, ladder: Ladder, n: int, pace: Pace, sampled: bool, found: _Found, until: float
) -> bool:
    """Measure one triage level (sampling the stacks over it when asked); False: the triage ends."""
    first = ladder.levels[0] if ladder.levels else None
    paced = _paced(session.options.duration_s, pace, _service_s(first))
    before = ladder.cannot_start(n, paced, until)
    if before is not None:
        found.reason = before
        return False
    recorder = _recorder(session) if sampled else None
    try:
        if recorder is None:
            level, result = ladder.measure(n, paced)
        else:
            level, result = ladder.measure(n, paced, lambda: recorder.sampled_s() >= STACKS_MIN_S)
    finally:
        sample = recorder.stop() if recorder is not None else None
    if isinstance(sample, Unavailable):
        found.unavailable = f"{sample.reason} ({sample.how_to_enable})"
    elif sample is not None and level is not None:
        found.profile = attribute(sample, session.app_files)
    if level is None:
        found.reason = StopReason.INTERRUPTED if session.budget.stop.is_set() else StopReason.TIME_BUDGET
        return False
    stop = ladder.stop_after(level, result)
    if stop is not None:
        found.reason, found.detail = stop
        return False
    return True


def _recorder(session: Session) -> StackRecorder | None:
    if not session.options.profile or not session.worker_pids:
        return None
    recorder = StackRecorder(session.worker_pids, STACKS_HZ, session.app_files)
    recorder.start()
    return recorder


def _why_no_stacks(session: Session) -> str | None:
    if session.options.profile and not session.worker_pids:
        return "the server is not on this machine: its stacks cannot be read"
    return None
