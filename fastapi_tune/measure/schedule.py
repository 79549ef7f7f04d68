"""How a probe spends its time: the budget, the triage of every route, then full ladders in order.

The budget: --max-seconds when given; otherwise DEFAULT_BUDGET_S, which covers apps of up to
DEFAULT_BUDGET_S / ROUTE_S routes, and ROUTE_S per route beyond that. The triage (triage.py) runs
first over every route, so that each has a verdict; what is left goes to full ladders, one route
after the other in the judge's order (ambiguous verdicts, serialised routes, the slowest, the
routes that carry the traffic). The plan is announced before the triage and again after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from fastapi_tune.measure.probe_options import BudgetPlan, DeepenOrder, DeepenPick
from fastapi_tune.measure.report import Endpoint, ServerInfo, StopReason

# The default budget, and what it grows by per route past the DEFAULT_BUDGET_S / ROUTE_S routes it
# covers (48): the triage measured ~0.8-1.2 s per route on the shared 2-core machine, plus time for
# the full ladders of the routes that need them most.
DEFAULT_BUDGET_S: Final = 60.0
ROUTE_S: Final = 1.25

# Estimates for the announcement, measured with benchmarks/breadth.py on the 2-core machine (one
# uvicorn worker and two gunicorn workers, routes of every kind): a route's triage with its
# drain, and a full ladder resumed from the triage's levels.
TRIAGE_ROUTE_S: Final = 1.0
LADDER_S: Final = 5.0

# A full ladder gets at least this much of the budget, or it does not start: a ladder cut after a
# level or two adds little to the triage's levels.
LADDER_MIN_S: Final = 3.0

# Routes whose triage ended on these are not climbed again: the ladder would meet the same
# failure (and a stall its long recovery).
_NOT_DEEPENED: Final = frozenset(
    {
        StopReason.ERRORS,
        StopReason.RATE_LIMITED,
        StopReason.STALLED,
        StopReason.SERVER_DIED,
        StopReason.INTERRUPTED,
        StopReason.REQUEST_BUDGET,
    }
)


def budget_s(routes: int, max_seconds: float | None) -> tuple[float, bool]:
    """The probe's budget for this many routes, and whether it grew past the default."""
    if max_seconds is not None:
        return max_seconds, False
    grown = ROUTE_S * routes
    return max(DEFAULT_BUDGET_S, grown), grown > DEFAULT_BUDGET_S


def initial_plan(routes: int, budget: float, grown: bool, spent_s: float) -> BudgetPlan:
    """Before the triage: its estimate, and how many full ladders should fit after it."""
    triage = TRIAGE_ROUTE_S * routes
    left = budget - spent_s - triage
    ladders = min(routes, max(0, int(left // LADDER_S)))
    return BudgetPlan(
        routes=routes,
        budget_s=budget,
        grown=grown,
        triage_s=triage,
        ladder_s=LADDER_S,
        ladders=ladders,
        spent_s=spent_s,
    )


def deepenable(endpoints: Sequence[Endpoint]) -> list[int]:
    """The triaged routes a full ladder can add to: measured, and not ended by a failure."""
    return [i for i, e in enumerate(endpoints) if e.levels and e.stop_reason not in _NOT_DEEPENED]


def _fallback_order(
    triaged: Sequence[Endpoint], server: ServerInfo, weights: Mapping[str, float]
) -> Sequence[DeepenPick]:
    """Without a judge: the heaviest routes first, then the slowest at c=1."""

    def key(i: int) -> tuple[float, float]:
        e = triaged[i]
        first = e.levels[0].latency_ms
        return (-weights.get(e.route, 1.0), -(first.p50 if first else 0.0))

    return [DeepenPick(i, "slowest") for i in sorted(deepenable(triaged), key=key)]


def picks_for(
    order: DeepenOrder | None,
    triaged: Sequence[Endpoint],
    server: ServerInfo,
    weights: Mapping[str, float],
) -> list[DeepenPick]:
    """The judge's order, kept to the routes a ladder can add to, each once."""
    allowed = set(deepenable(triaged))
    chosen = (order or _fallback_order)(triaged, server, weights)
    picks: list[DeepenPick] = []
    for pick in chosen:
        if pick.index in allowed:
            picks.append(pick)
            allowed.discard(pick.index)
    return picks


def after_triage(
    plan: BudgetPlan, picks: Sequence[DeepenPick], took_s: float, now_left_s: float
) -> BudgetPlan:
    """The plan once the triage is done: the ladders that fit in what is left, in order."""
    fit = min(len(picks), max(0, int(now_left_s // LADDER_S)))
    if picks and fit == 0 and now_left_s >= LADDER_MIN_S:
        fit = 1
    return BudgetPlan(
        routes=plan.routes,
        budget_s=plan.budget_s,
        grown=plan.grown,
        triage_s=plan.triage_s,
        ladder_s=plan.ladder_s,
        ladders=fit,
        spent_s=plan.spent_s,
        triage_took_s=took_s,
        picks=tuple(picks[:fit]),
    )


def ladder_deadline(now: float, deadline: float, picks_left: int) -> float | None:
    """This ladder's share of what is left (at least LADDER_MIN_S); None: no ladder fits any more."""
    left = deadline - now
    if left < LADDER_MIN_S:
        return None
    return now + max(left / max(picks_left, 1), min(LADDER_S, left))
