"""verify at an arrival rate: one open-loop run counted as the objective counts it (--rate), and the
search for the highest rate that meets the objective (--capacity).

The deciding rules (the objective, falling behind, the next step's rate) are verify/judge.py's; this
module only drives the open loop (measure/openloop.py) and hands its counts to them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from fastapi_tune.measure.loadgen import LiveCount, RequestSpec
from fastapi_tune.measure.openloop import run_open_loop
from fastapi_tune.measure.stats import errors_by_kind
from fastapi_tune.plan.slo import Objective
from fastapi_tune.verify.judge import (
    CAPACITY_START,
    Capacity,
    RateCheck,
    capacity_of,
    next_rate,
    rate_verdict,
)

__all__ = ["CapacitySearch", "open_loop_check", "open_timeout"]

# In an open loop with an objective (--rate, a capacity step) a request gets at most this many times
# the objective's largest bound (at least 1 s) before it counts as a timeout, a failure: it failed
# the objective long before, and an overloaded run then ends within seconds, not the full --timeout.
_STEP_TIMEOUT_FACTOR: Final = 3.0

# Capacity steps last at least this many times the objective's largest bound (see CapacitySearch),
# at most _MAX_STEP_S: a p99 < 300 ms objective gets 3 s steps, about 20 s per configuration.
_STEP_BOUNDS: Final = 10.0
_MAX_STEP_S: Final = 10.0
# The open loop's own warm-up before its counted window (connections opened, the server warmed).
_WARMUP_S: Final = 0.5


def open_loop_check(
    specs: Sequence[RequestSpec],
    rate: float,
    duration_s: float,
    timeout_s: float,
    max_in_flight: int,
    stop: threading.Event,
    live: LiveCount | None = None,
) -> RateCheck:
    """One open-loop run at `rate`, counted as the objective counts it."""
    r = run_open_loop(
        specs,
        rate,
        duration_s,
        max_in_flight=max_in_flight,
        timeout_s=timeout_s,
        warmup_s=_WARMUP_S,
        stop=stop,
        live=live,
    )
    failed = sum(errors_by_kind(r.status_counts, r.errors_by_kind).values()) + r.dropped_starts
    failed += r.in_flight_at_end
    return RateCheck(
        rate_rps=rate,
        duration_s=r.duration_s,
        intended=r.intended_starts,
        completed=r.completed,
        failed=failed,
        late=r.late_starts,
        dropped=r.dropped_starts,
        histogram=r.histogram,
        client_cpu_cores=r.client_cpu_s / r.duration_s if r.duration_s > 0 else 0.0,
        sent=r.sent,
        served=r.served_in_window,
        backlog_at_end=r.backlog_at_end,
        drain_s=r.drain_s,
        first_second=r.first_segment,
        last_second=r.last_segment,
    )


def open_timeout(objective: Objective | None, timeout_s: float) -> float:
    """An open-loop request's timeout: with an objective, _STEP_TIMEOUT_FACTOR x its largest bound."""
    if objective is None:
        return timeout_s
    return min(timeout_s, max(1.0, _STEP_TIMEOUT_FACTOR * objective.largest_bound_s))


@dataclass(frozen=True)
class CapacitySearch:
    """The highest arrival rate meeting `objective` (met by the percentiles, and served without
    falling behind): short open-loop steps (judge.next_rate), each on a settled server."""

    objective: Objective
    step_s: float  # the user's step length (--duration); lengthened for slow bounds, see step_seconds
    timeout_s: float
    max_in_flight: int

    def step_seconds(self) -> float:
        # A rate above capacity builds its queue at (rate - capacity) per second: within a step of T
        # seconds the wait reaches the bound L only beyond capacity x (1 + L / T). Steps of at least
        # 10 L keep that overstatement within 10%.
        return min(_MAX_STEP_S, max(self.step_s, _STEP_BOUNDS * self.objective.largest_bound_s))

    def run(
        self,
        specs: Sequence[RequestSpec],
        throughput_rps: float,
        stop: threading.Event,
        step: Callable[[str], None],
        settle: Callable[[str], None],
    ) -> Capacity:
        """Search from CAPACITY_START x the closed loop's throughput; `step` shows progress."""
        timeout, step_s = open_timeout(self.objective, self.timeout_s), self.step_seconds()
        steps: list[tuple[float, bool, str]] = []
        while not stop.is_set():
            rate = next_rate(throughput_rps * CAPACITY_START, [(r, ok) for r, ok, _ in steps])
            if rate is None:
                break
            step(f"capacity search, step {len(steps) + 1}: {rate:.1f} req/s")
            settle(f"capacity step at {rate:.1f} req/s")
            check = open_loop_check(specs, rate, step_s, timeout, self.max_in_flight, stop)
            if stop.is_set():
                break
            ok, text = rate_verdict(self.objective, check)
            steps.append((round(rate, 2), ok, text))
        return capacity_of(steps)
