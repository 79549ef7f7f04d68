"""What every verdict builder reads about one endpoint: its curve, its CPU, the witnesses' weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi_tune.judge.curve import Curve, curve_evidence, fit_curve
from fastapi_tune.judge.stack_evidence import in_threads, seen
from fastapi_tune.judge.thresholds import (
    CURVE_SUPPORT_BASE,
    CURVE_SUPPORT_MAX,
    CURVE_SUPPORT_STEP,
    NOISE_BAD,
    NOISE_OK,
    STARVED_FACTOR,
    UNKNOWN_WORKERS_FACTOR,
)
from fastapi_tune.measure.report import Evidence, Level
from fastapi_tune.measure.stack_attribution import RouteProfile


@dataclass(frozen=True)
class Case:
    """What every builder reads: the curve, the worker count, the CPU, the shared confidence."""

    curve: Curve
    workers: int | None  # as observed; None when unknown
    p: int  # workers, 1 when unknown
    cpu: float | None  # server CPU demand per busy worker (use where demand was not read); None: unobserved
    cpu_what: str  # "CPU demand (on CPU + waiting)" or "CPU"
    cpu_at_one: float | None  # a worker's CPU demand at c=1 (Curve.cpu_at_one); None: unobserved
    curve_support: float  # how strongly the curve alone backs a verdict: its levels, noise, Little's law
    damping: float  # what lowers any verdict: unknown workers
    starved: float  # what a starved host leaves of the curve's and the CPU's word (the stacks keep theirs)
    notes: tuple[str, ...]
    evidence: Evidence
    profile: RouteProfile | None = None  # the stacks: at the triage's spread level, or the top clean one

    def note(self, *extra: str) -> str:
        parts = [*self.notes, *extra]
        return f" ({'; '.join(parts)})" if parts else ""


def make_case(
    levels: Sequence[Level],
    clean: tuple[Level, ...],
    workers: int | None,
    observed: bool,
    profile: RouteProfile | None = None,
) -> Case:
    """The curve and the confidence every class shares: levels, noise, Little's law, known workers."""
    p = workers if workers and workers > 0 else 1
    curve = fit_curve(clean, p)
    support = min(CURVE_SUPPORT_MAX, CURVE_SUPPORT_BASE + CURVE_SUPPORT_STEP * len(clean))
    noise = min(max((curve.fit.rms - NOISE_OK) / (NOISE_BAD - NOISE_OK), 0.0), 1.0)
    support *= 1 - 0.5 * noise
    if not curve.little_ok:
        support *= 0.85
    damping = starved = 1.0
    notes: tuple[str, ...] = ()
    if workers is None:
        damping *= UNKNOWN_WORKERS_FACTOR
        notes = ("worker count unknown, 1 assumed",)
    cpu, cpu_what = curve.cpu_per_busy_worker, "CPU"
    # A `def` route's waits are its threads' (each wakes and waits for a CPU and the GIL): summed,
    # they read as CPU wanted. Its on-CPU time is what it used; demand tells the loop's kinds apart.
    threads = profile is not None and seen(profile) and in_threads(profile)
    if curve.demand_per_busy_worker is not None and not threads:
        # A worker waiting for a CPU wanted it: demand, not use, tells CPU work from a blocked loop.
        cpu, cpu_what = curve.demand_per_busy_worker, "CPU demand (on CPU + waiting)"
    if curve.starved_levels:
        starved = STARVED_FACTOR
        names = f": {', '.join(curve.top_others)}" if curve.top_others else ""
        others = f"{curve.others_cores:.2f} cores" if curve.others_cores is not None else "its CPU"
        notes = (
            *notes,
            f"the host was starved at {curve.starved_levels} level(s), other processes took {others}{names}",
        )
    return Case(
        curve=curve,
        workers=workers,
        p=p,
        cpu=cpu if observed else None,
        cpu_what=cpu_what,
        cpu_at_one=(curve.cpu_use_at_one if threads else curve.cpu_at_one) if observed else None,
        curve_support=support,
        damping=damping,
        starved=starved,
        notes=notes,
        evidence=curve_evidence(curve, levels, len(clean), workers),
        profile=profile,
    )
