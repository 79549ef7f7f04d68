"""What limits an endpoint: a pure judgement over the levels the probe measured.

The closed-loop model (field notes, "Telling endpoints apart"): at concurrency N with service time S
and P worker processes, throughput grows as N/S until something caps the requests in flight at C,
then stays at C/S while latency grows as N*S/C. The cap C says what the limit is:

- C ~ P (one request per worker): serialised. Server CPU ~ one core per busy worker means cpu-bound,
  low CPU means a blocking call inside `async def` (loop-blocking); without server CPU, `serialized`.
- C ~ 40*P: AnyIO's default thread limiter (40 tokens per event loop) in front of `def` routes.
- 1*P << C << 40*P with low CPU: a pool of ~C/P per worker (database connections, a semaphore).
- a level with requests in flight and none completed: a stall (a deadlock, a pool wait too long).
- no cap within the ladder, or one far beyond 40*P: io-bound (the async path scaled).

C is found by fitting that hockey stick, X(N) = x1 * min(N, C), to the clean levels in log space,
which uses every level at once and so tolerates the noise of a single one. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fastapi_tune.judge.case import make_case
from fastapi_tune.judge.curve import clean_levels
from fastapi_tune.judge.overload import judge_overload
from fastapi_tune.judge.shape import shape_with_stacks
from fastapi_tune.judge.stack_evidence import seen
from fastapi_tune.judge.thresholds import MIN_CLEAN_LEVELS, TWO_LEVELS_PER_WORKER
from fastapi_tune.judge.verdicts import BUILDERS, inconclusive, stalled
from fastapi_tune.measure.report import (
    Endpoint,
    Level,
    ProbeReport,
    StopReason,
    Verdict,
)
from fastapi_tune.measure.stack_attribution import RouteProfile


def classify(
    levels: Sequence[Level], workers: int | None, server_observed: bool, profile: RouteProfile | None = None
) -> Verdict:
    """Judge what limits an endpoint from its ladder of levels (see the module docstring); the stack
    profile, when sampled, confirms or questions the verdict and names the line."""
    clean = clean_levels(levels)
    if any(lv.stalled for lv in levels):
        return stalled(levels, clean, workers)
    if not enough_levels(clean, workers, server_observed, profile):
        return inconclusive(levels, clean, workers)
    case = make_case(levels, clean, workers, server_observed, profile)
    return BUILDERS[shape_with_stacks(case)](case)


def enough_levels(
    clean: Sequence[Level], workers: int | None, server_observed: bool, profile: RouteProfile | None
) -> bool:
    """Three clean levels; or two (the triage's serialised routes) when the top one held
    TWO_LEVELS_PER_WORKER requests per worker and the server's CPU or its stacks were read."""
    if len(clean) >= MIN_CLEAN_LEVELS:
        return True
    p = workers if workers and workers > 0 else 1
    return (
        len(clean) == 2
        and clean[-1].concurrency >= TWO_LEVELS_PER_WORKER * p
        and (server_observed or seen(profile))
    )


def classify_endpoint(e: Endpoint, workers: int | None, server_observed: bool) -> Verdict:
    """One endpoint of a report judged; its server's CPU counts unless it died during the endpoint."""
    seen_cpu = server_observed and e.stop_reason is not StopReason.SERVER_DIED
    return classify(e.levels, workers, seen_cpu, e.profile)


def classify_report(report: ProbeReport) -> ProbeReport:
    """The report with every endpoint judged; the server's CPU counts only where it was observed."""
    observed = report.server.local and report.server.pid is not None
    return replace(
        report,
        endpoints=tuple(
            replace(e, verdict=classify_endpoint(e, report.server.workers, observed))
            for e in report.endpoints
        ),
        overload=judge_overload(report.overload),
    )
