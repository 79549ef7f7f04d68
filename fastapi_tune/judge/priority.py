"""Which triaged routes get a full ladder first: a pure ordering over their triage verdicts.

The triage gives every route a verdict; the budget left after it buys full ladders for some. They
go first to the routes where a ladder changes most (field notes, "Apps are big; budgets are
small"): verdicts the triage left uncertain, then serialised routes (cpu-bound, loop-blocking,
pool-bound: their plateau sizes the workers), then the slowest; a route that carries more of the
traffic (--mix, access-log shares) moves up within that order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from fastapi_tune.judge.classify import classify_endpoint
from fastapi_tune.judge.thresholds import DEEPEN_UNCERTAIN_BELOW
from fastapi_tune.measure.probe_options import DeepenPick
from fastapi_tune.measure.report import Endpoint, EndpointClass, ServerInfo

# What the workers' count hangs on: a route capped at about one request per worker, or by a pool.
_SIZES_WORKERS: Final = frozenset(
    {
        EndpointClass.CPU_BOUND,
        EndpointClass.LOOP_BLOCKING,
        EndpointClass.SERIALIZED,
        EndpointClass.POOL_BOUND,
    }
)
# Group scores: a route in a higher group goes first unless a lower one carries several times the
# traffic (the weight factor is the square root of the route's share over the mean share); within
# a group the slower route first (its service time's rank adds up to _SLOWNESS).
_GROUP: Final = {"uncertain": 3.0, "serialised": 2.0, "slowest": 1.0}
_SLOWNESS: Final = 0.5
# A route without a weight counts as this share of the mean weight.
_UNWEIGHTED: Final = 0.05


def _group(e: Endpoint, workers: int | None, observed: bool) -> str:
    v = classify_endpoint(e, workers, observed)
    if v.cls is EndpointClass.INCONCLUSIVE or v.confidence < DEEPEN_UNCERTAIN_BELOW:
        return "uncertain"
    if v.cls in _SIZES_WORKERS:
        return "serialised"
    return "slowest"


def _service_ms(e: Endpoint) -> float:
    first = e.levels[0].latency_ms if e.levels else None
    return first.p50 if first is not None else 0.0


def deepen_order(
    triaged: Sequence[Endpoint], server: ServerInfo, weights: Mapping[str, float]
) -> list[DeepenPick]:
    """Every triaged route, in the order its full ladder should come (see the module docstring)."""
    if not triaged:
        return []
    observed = server.local and server.pid is not None
    # A route the weights leave out carries none of the known traffic (an access log that never
    # saw it): it goes after the others, still in its group's order among its like.
    shares = [weights.get(e.route, 0.0) if weights else 1.0 for e in triaged]
    mean = sum(shares) / len(shares) or 1.0
    floor = _UNWEIGHTED * mean
    slow = sorted(range(len(triaged)), key=lambda i: _service_ms(triaged[i]))
    slowness = {i: rank / max(len(triaged) - 1, 1) for rank, i in enumerate(slow)}
    scored: list[tuple[float, int, str]] = []
    for i, e in enumerate(triaged):
        group = _group(e, server.workers, observed)
        score = (_GROUP[group] + _SLOWNESS * slowness[i]) * math.sqrt(max(shares[i], floor) / mean)
        scored.append((score, i, group))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [DeepenPick(i, group) for _, i, group in scored]
