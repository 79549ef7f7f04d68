"""A queueing model of the whole request mix: how many workers meet an objective at an arrival rate.

Pure: no I/O. From the probe, each route i gets three numbers and a share p_i of the traffic:

- ``cpu_ms``: server CPU per request (the level's server CPU / its throughput; median over levels);
- ``loop_ms``: how long a request holds its worker's event loop. A CPU-bound or loop-blocking route
  holds it for its whole service time (p50 at the lowest level: a `time.sleep` in `async def` holds
  it without using the CPU); any other route only for its CPU;
- ``base_ms``: its latency alone (p50 at the lowest level): what no worker count removes.

The mix then has two kinds of servers. W event loops, each serving one request at a time for
L = sum p_i loop_ms_i: capacity W / L. And the C effective CPUs, which every request needs for
D = sum p_i cpu_ms_i: capacity C / D. Throughput is at most the smaller of the two, and approaches
it as mean value analysis says (mva_throughput); so the loop-blocking route's extra workers stop
paying near W / L = C / D: the CPU the rest of the mix needs caps them (throughput_workers).

Latency at a rate λ: base + the wait for a free loop + (with more workers than CPUs) the wait for
a CPU. The loops do not share one queue: each worker serves the connections it accepted, so the
wait for a loop is the busiest worker's M/G/1 queue (Pollaczek-Khinchine, with the mix's loop-time
variance and an imbalance factor, WORKER_IMBALANCE). The wait for a CPU is an M/M/c queue's (Erlang
C: P(wait > t) = C(c, a) e^(-(cμ - λ)t)), the kernel's run queue being shared. A configuration
also keeps each utilisation below MAX_UTILISATION, since the inputs come from one probe on a
machine whose speed varies run to run.
The model ignores per-process overhead beyond what the probe measured, so it never favours more
workers than it needs: the smallest configuration that meets the objective is also the one with
the least memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_UTILISATION",
    "MixDemand",
    "Prediction",
    "RouteDemand",
    "capacity_at",
    "erlang_c",
    "mix_demand",
    "mva_throughput",
    "predict",
    "smallest_meeting",
    "throughput_workers",
]

# Run-to-run speed on a shared 2-core machine varies by 10-15% (benchmarks/README.md: noise 17-19%
# with other work running); a plan at 85% of the modelled capacity survives a slower day.
MAX_UTILISATION: Final = 0.85
# A worker is added only while the model says it buys this much more throughput: each costs memory
# and a share of the CPUs in scheduling that the model does not see, so the measured curve peaks
# where the modelled gain falls below about this (kinds_app: gain 5->6 workers 9.8%, 6->7 5.9%,
# measured best 6; the mix: 4->5 10%, 5->6 6%, measured best 4-6).
MIN_WORKER_GAIN: Final = 0.08
# The busiest worker's share of the requests, over an even split: keep-alive connections stay where
# they were accepted, and a burst of new connections can land on one worker (FIELD-NOTES). Measured
# here on kinds_app at 112 req/s with 3 workers: the shared-queue model predicted p99 ~190 ms, the
# open loop saw 596 ms, as if one worker carried about half again its share.
WORKER_IMBALANCE: Final = 1.5


@dataclass(frozen=True)
class RouteDemand:
    """One route's share of the traffic and what each of its requests costs."""

    route: str
    share: float  # fraction of requests, the shares sum to 1
    cpu_ms: float
    loop_ms: float  # >= cpu_ms
    base_ms: float


@dataclass(frozen=True)
class MixDemand:
    """The mix's per-request averages."""

    routes: tuple[RouteDemand, ...]
    cpu_ms: float  # D
    loop_ms: float  # L
    loop_scv: float  # variance / mean^2 of the loop times across the mix
    base_ms: float  # the slowest route's own latency: the floor of any percentile that covers it

    def max_rps(self, workers: int, cpus: float) -> float:
        """Throughput the model allows: min(W / L, C / D), in requests per second."""
        loops = workers / self.loop_ms * 1000.0 if self.loop_ms > 0 else math.inf
        cpu = cpus / self.cpu_ms * 1000.0 if self.cpu_ms > 0 else math.inf
        return min(loops, cpu)


@dataclass(frozen=True)
class Prediction:
    """The model's latency at one percentile for W workers at a rate."""

    workers: int
    rate_rps: float
    loop_utilisation: float
    cpu_utilisation: float
    latency_ms: float  # math.inf when a utilisation reaches 1
    meets: bool  # latency below the limit and both utilisations within MAX_UTILISATION


def mix_demand(routes: Sequence[RouteDemand]) -> MixDemand:
    """The weighted averages of `routes` (shares are normalised here)."""
    total = sum(r.share for r in routes)
    if not routes or total <= 0:
        raise ValueError("a mix needs at least one route with a share > 0")
    norm = tuple(
        RouteDemand(r.route, r.share / total, r.cpu_ms, max(r.loop_ms, r.cpu_ms), r.base_ms) for r in routes
    )
    cpu = sum(r.share * r.cpu_ms for r in norm)
    loop = sum(r.share * r.loop_ms for r in norm)
    second = sum(r.share * r.loop_ms**2 for r in norm)
    scv = second / loop**2 - 1 if loop > 0 else 0.0
    base = max(r.base_ms for r in norm if r.share > 0)
    return MixDemand(routes=norm, cpu_ms=cpu, loop_ms=loop, loop_scv=max(0.0, scv), base_ms=base)


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (c servers, offered load a = λ / μ)."""
    if offered <= 0:
        return 0.0
    if offered >= servers:
        return 1.0
    # The Erlang B recursion is stable for any c; C follows from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho + rho * b)


def _wait_quantile_ms(servers: int, service_ms: float, rate_rps: float, q: float, scv: float) -> float:
    """The q-th percentile (0..100) of the wait in an M/G/c queue, in ms (Allen-Cunneen scaled)."""
    if service_ms <= 0 or rate_rps <= 0:
        return 0.0
    mu = 1000.0 / service_ms
    slack = servers * mu - rate_rps
    if slack <= 0:
        return math.inf
    waiting = erlang_c(servers, rate_rps / mu)
    tail = 1 - q / 100
    if waiting <= tail:
        return 0.0
    return math.log(waiting / tail) / slack * 1000.0 * (1 + scv) / 2


def _pinned_wait_quantile_ms(workers: int, mix: MixDemand, rate_rps: float, q: float) -> float:
    """The q-th percentile of the wait for a busy event loop when each worker queues on its own.

    Keep-alive connections stay on the worker that accepted them (FIELD-NOTES), so the workers are
    not one shared queue (M/G/c) but `workers` separate M/G/1 queues, the busiest of which gets
    WORKER_IMBALANCE times its share. M/G/1: an arrival waits with probability rho, and the wait,
    given that it waits, is about exponential with mean E[W] / rho, E[W] = lambda E[S^2] / (2(1 - rho))
    (Pollaczek-Khinchine).
    """
    lam = rate_rps / workers * WORKER_IMBALANCE / 1000.0  # arrivals per ms at the busiest loop
    rho = lam * mix.loop_ms
    if rho >= 1:
        return math.inf
    tail = 1 - q / 100
    if rho <= tail:
        return 0.0
    second = mix.loop_ms**2 * (1 + mix.loop_scv)
    mean_wait = lam * second / (2 * (1 - rho))
    return math.log(rho / tail) * mean_wait / rho


def predict(
    mix: MixDemand, workers: int, cpus: float, rate_rps: float, q: float, limit_ms: float
) -> Prediction:
    """The q-th percentile latency of the mix with `workers` on `cpus` at `rate_rps`, against limit_ms."""
    loop_util = rate_rps * WORKER_IMBALANCE * mix.loop_ms / 1000.0 / workers
    cpu_util = rate_rps * mix.cpu_ms / 1000.0 / cpus
    latency = mix.base_ms + _pinned_wait_quantile_ms(workers, mix, rate_rps, q)
    if workers > cpus:
        # More event loops than CPUs: a request also waits for a CPU (fractional quotas as fewer,
        # faster servers, which do share one queue: the kernel's).
        servers = max(1, math.floor(cpus))
        latency += _wait_quantile_ms(servers, mix.cpu_ms * servers / cpus, rate_rps, q, 1.0)
    ok = latency < limit_ms and loop_util <= MAX_UTILISATION and cpu_util <= MAX_UTILISATION
    return Prediction(workers, rate_rps, loop_util, cpu_util, latency, ok)


def _meets_all(
    mix: MixDemand, workers: int, cpus: float, rate_rps: float, bounds: Sequence[tuple[float, float]]
) -> bool:
    return all(predict(mix, workers, cpus, rate_rps, q, limit).meets for q, limit in bounds)


def smallest_meeting(
    mix: MixDemand, cpus: float, rate_rps: float, bounds: Sequence[tuple[float, float]], max_workers: int
) -> int | None:
    """The fewest workers (1..max_workers) predicted to meet every (percentile, limit ms) bound."""
    for w in range(1, max_workers + 1):
        if _meets_all(mix, w, cpus, rate_rps, bounds):
            return w
    return None


def capacity_at(mix: MixDemand, workers: int, cpus: float, bounds: Sequence[tuple[float, float]]) -> float:
    """The highest rate (req/s) at which `workers` are predicted to meet every bound; 0 if none."""
    high = mix.max_rps(workers, cpus)
    if not math.isfinite(high) or not _meets_all(mix, workers, cpus, high * 1e-3, bounds):
        return 0.0
    low = high * 1e-3
    for _ in range(40):  # bisection to well under 0.1% of the range
        mid = (low + high) / 2
        low, high = (mid, high) if _meets_all(mix, workers, cpus, mid, bounds) else (low, mid)
    return low


def mva_throughput(mix: MixDemand, cpus: float, max_workers: int) -> list[float]:
    """Closed-loop throughput (req/s) for 1..max_workers workers, by mean value analysis.

    Each worker cycles: it holds its event loop without the CPU for L - D ms, then needs D ms of CPU
    from C CPUs. The C CPUs are one server of D / C plus a delay of D (C - 1) / C (Seidmann's
    approximation of a multi-server station). Checked against wrk with `Connection: close` on the
    issue's mix (1-4 workers: 76/141/193/230 modelled, 73/147/201/230 measured) and on kinds_app
    (4-6 workers: 200/231/254 modelled, 195/222/239 measured).
    """
    if mix.cpu_ms <= 0:
        return [1000.0 * n / max(mix.loop_ms, 1e-9) for n in range(1, max_workers + 1)]
    service = mix.cpu_ms / cpus
    delay = max(mix.loop_ms - mix.cpu_ms, 0.0) + mix.cpu_ms * (cpus - 1) / cpus
    queue, out = 0.0, []
    for n in range(1, max_workers + 1):
        response = service * (1 + queue)
        rate = n / (delay + response)
        queue = rate * response
        out.append(rate * 1000.0)
    return out


def throughput_workers(mix: MixDemand, cpus: float, max_workers: int = 64) -> int:
    """The fewest workers past which one more buys less than MIN_WORKER_GAIN of throughput (MVA)."""
    rates = mva_throughput(mix, cpus, max_workers)
    n = 1
    while n < len(rates) and rates[n] >= rates[n - 1] * (1 + MIN_WORKER_GAIN):
        n += 1
    return n
