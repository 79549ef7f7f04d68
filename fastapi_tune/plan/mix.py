"""Sizing from the whole request mix and an objective: the probe's routes -> mixmodel -> workers, replicas.

Pure: no I/O. plan.py calls `size_for_mix` and `replicas_for_objective`; the model itself and its
assumptions are in mixmodel.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from fastapi_tune.measure.demand import BUSY_OTHERS_CORES
from fastapi_tune.measure.report import Endpoint, EndpointClass, ProbeReport
from fastapi_tune.measure.stats import median
from fastapi_tune.plan.mixmodel import (
    MIN_WORKER_GAIN,
    MixDemand,
    RouteDemand,
    capacity_at,
    mix_demand,
    mva_throughput,
    smallest_meeting,
    throughput_workers,
)
from fastapi_tune.plan.slo import Objective

__all__ = ["MixSizing", "ReplicaObjective", "mix_of_report", "replicas_for_objective", "size_for_mix"]

# Routes that hold their worker's event loop for their whole service time, not only for their CPU:
# a blocking call in `async def`, or a serialised route whose CPU was not seen. A CPU-bound route
# holds it for its CPU time; its wall time at the probe also holds waits for a CPU that other
# processes took, which the model counts apart (the CPU queue).
LOOP_HOLDING: Final = (EndpointClass.LOOP_BLOCKING, EndpointClass.SERIALIZED)
# One replica means downtime on every node drain (the same floor as plan.MIN_REPLICAS).
MIN_REPLICAS: Final = 2


@dataclass(frozen=True)
class MixSizing:
    """What the mix model says for this host: the CPU cap on workers and, with an objective, the size."""

    mix: MixDemand
    cpus: float
    max_workers: int  # the largest count considered (memory, the database, the profile)
    throughput_workers: int  # workers past which one more buys under MIN_WORKER_GAIN (mean value analysis)
    max_rps: float  # the modelled throughput (mean value analysis) with throughput_workers
    objective: Objective | None
    target_rps: float | None
    workers: int | None  # fewest workers predicted to meet the objective at the target; None: none do
    capacity_rps: float | None  # predicted highest rate meeting the objective with `workers` (or the best)
    best_workers: int | None  # with an objective: the count with the highest capacity at it
    capacities_rps: tuple[float, ...]  # with an objective: predicted capacity at it for 1..max_workers
    why: str

    def capacity_with(self, workers: int) -> float | None:
        """Predicted highest rate meeting the objective with `workers`; None without an objective."""
        if not self.capacities_rps:
            return None
        return self.capacities_rps[min(workers, len(self.capacities_rps)) - 1]


@dataclass(frozen=True)
class ReplicaObjective:
    """Replicas of a fixed-size pod that meet the objective at the target rate."""

    replicas: int
    per_pod_rps: float  # predicted capacity of one pod at the objective
    why: str


def _route_demand(e: Endpoint, share: float) -> RouteDemand | None:
    """One route's CPU per request, loop time and base latency from its clean levels; None if unmeasured."""
    levels = [lv for lv in e.levels if not lv.client_saturated and lv.throughput_rps > 0 and not lv.errors]
    cpu = [
        lv.server_cpu_cores / lv.throughput_rps * 1000.0 for lv in levels if lv.server_cpu_cores is not None
    ]
    base = [lv.latency_ms.p50 for lv in sorted(levels, key=lambda lv: lv.concurrency) if lv.latency_ms]
    if not cpu or not base:
        return None
    cpu_ms = median(cpu)
    loop_ms = cpu_ms
    if e.verdict is not None and e.verdict.cls in LOOP_HOLDING:
        loop_ms = max(cpu_ms, e.verdict.evidence.service_time_ms or base[0])
    return RouteDemand(e.route, share, cpu_ms, loop_ms, base[0])


def mix_of_report(
    report: ProbeReport, weights: Mapping[str, float] | None
) -> tuple[MixDemand | None, tuple[str, ...]]:
    """The mix: the report's routes with `weights` ("GET /a" -> weight; None: equal shares, as
    verify drives them), and what could not be modelled."""
    names = {e.route for e in report.endpoints}
    unknowns = [
        f"--mix names {n}, which the probe report does not have" for n in sorted(set(weights or {}) - names)
    ]
    routes: list[RouteDemand] = []
    for e in report.endpoints:
        share = 1.0 if weights is None else float(weights.get(e.route, 0.0))
        if share <= 0:
            continue
        demand = _route_demand(e, share)
        if demand is None:
            unknowns.append(f"{e.route}: no server CPU or clean level measured, left out of the mix model")
        else:
            routes.append(demand)
    others = [
        v for e in report.endpoints if e.verdict and (v := e.verdict.evidence.host_others_cores) is not None
    ]
    if others and median(others) >= BUSY_OTHERS_CORES:
        unknowns.append(
            f"other processes used {median(others):.2f} cores while the probe ran: the mix model counts"
            " every effective CPU as the server's, so on a host this busy an objective can be missed"
            " (`verify --rate R --slo ...` measures it there)"
        )
    if not routes:
        return None, tuple(unknowns)
    return mix_demand(routes), tuple(unknowns)


def _bounds(objective: Objective) -> list[tuple[float, float]]:
    return [(b.percentile, b.limit_ms) for b in objective.latency]


def _mix_text(mix: MixDemand) -> str:
    parts = ", ".join(
        f"{r.route} {r.share:.0%}: {r.cpu_ms:.1f} ms CPU, {r.loop_ms:.1f} ms on the loop" for r in mix.routes
    )
    return f"mix ({parts}) -> D = {mix.cpu_ms:.2f} ms CPU and L = {mix.loop_ms:.2f} ms loop per request"


def size_for_mix(
    mix: MixDemand, cpus: float, max_workers: int, objective: Objective | None, target_rps: float | None
) -> MixSizing:
    """The CPU cap on workers, and with an objective and a target, the fewest workers predicted to meet it."""
    max_workers = max(1, max_workers)
    w_star = min(max_workers, throughput_workers(mix, cpus, max_workers))
    rates = mva_throughput(mix, cpus, w_star + 1)
    gain = f"{rates[w_star] / rates[w_star - 1] - 1:.0%}" if len(rates) > w_star else "-"
    why = (
        f"{_mix_text(mix)}; throughput by mean value analysis (W loops, {cpus:g} CPUs): workers stop"
        f" paying at W = {w_star} ({rates[w_star - 1]:.0f} req/s modelled; one more would add {gain},"
        f" below {MIN_WORKER_GAIN:.0%})"
    )
    workers = capacity = best = None
    caps: dict[int, float] = {}
    if objective is not None:
        bounds = _bounds(objective)
        caps = {w: capacity_at(mix, w, cpus, bounds) for w in range(1, max_workers + 1)}
        best = max(caps, key=lambda w: (caps[w], -w))
        if target_rps is not None:
            workers = smallest_meeting(mix, cpus, target_rps, bounds, max_workers)
        capacity = caps[workers if workers is not None else best]
    return MixSizing(
        mix=mix,
        cpus=cpus,
        max_workers=max_workers,
        throughput_workers=w_star,
        max_rps=rates[w_star - 1],
        objective=objective,
        target_rps=target_rps,
        workers=workers,
        capacity_rps=capacity,
        best_workers=best,
        capacities_rps=tuple(caps[w] for w in sorted(caps)),
        why=why,
    )


def replicas_for_objective(
    mix: MixDemand, pod_cpus: float, workers_per_pod: int, objective: Objective, target_rps: float
) -> ReplicaObjective | None:
    """Replicas of `workers_per_pod` on `pod_cpus` that meet the objective at target_rps; None: no pod can."""
    per_pod = capacity_at(mix, workers_per_pod, pod_cpus, _bounds(objective))
    if per_pod <= 0:
        return None
    replicas = max(MIN_REPLICAS, math.ceil(target_rps / per_pod))
    why = (
        f"{_mix_text(mix)}; one pod ({workers_per_pod} worker(s), {pod_cpus:g} CPU) is predicted to meet"
        f" {objective.describe()} up to {per_pod:.1f} req/s; {target_rps:g} / {per_pod:.1f}"
        f" -> {replicas} replicas (at least {MIN_REPLICAS})"
    )
    return ReplicaObjective(replicas=replicas, per_pod_rps=per_pod, why=why)
