"""From a curve's shape to a verdict: one builder per class, the stacks' word, the confidence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final

from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER, suggested_thread_tokens
from fastapi_tune.judge.curve import Curve, curve_evidence, exclusion_reason, fit_curve
from fastapi_tune.judge.thresholds import (
    CHEAP_SERVICE_MS,
    CONFIDENCE_RANGE,
    CPU_AMBIGUOUS_WIDTH,
    CPU_BOUND_SPLIT,
    CPU_SATURATED,
    MAX_ERROR_RATIO,
    MIN_CLEAN_LEVELS,
    NOISE_BAD,
    NOISE_OK,
    POOL_WAIT_THREADS,
    SERIAL_MAX_PER_WORKER,
    SERIAL_MAX_UNKNOWN_WORKERS,
    STACKS_AGREE,
    STACKS_CONFIRM_FACTOR,
    STACKS_CONTRADICT_FACTOR,
    STACKS_IDLE_CONTRADICTS,
    STARVED_FACTOR,
    THREADPOOL_BAND,
    THREADPOOL_RULE_OUT,
    UNKNOWN_WORKERS_FACTOR,
)
from fastapi_tune.measure.report import (
    EndpointClass,
    Evidence,
    Level,
    Verdict,
)
from fastapi_tune.measure.stack_attribution import RouteProfile, describe, loop_hotspot


def _inconclusive_why(levels: Sequence[Level], clean: int) -> tuple[str, tuple[str, ...]]:
    reasons = [exclusion_reason(lv) for lv in levels]
    n_client = sum(r == "client-saturated" for r in reasons)
    errored = [lv for lv, r in zip(levels, reasons, strict=True) if r is not None and r != "client-saturated"]
    if not levels:
        return "no levels were measured", ("Probe the endpoint again; nothing completed.",)
    if n_client == len(levels):
        return (
            f"all {len(levels)} levels were limited by the load generator, not the app",
            (
                "The load generator ran out of CPU: probe from another machine or with fewer "
                "concurrent clients.",
            ),
        )
    why = (
        f"only {clean} of {len(levels)} levels are clean (need {MIN_CLEAN_LEVELS}): "
        f"{n_client} client-saturated, {len(errored)} with errors above {MAX_ERROR_RATIO:.0%} or no responses"
    )
    if errored and len(errored) >= n_client:
        kinds: dict[str, int] = {}
        for lv in errored:
            for kind, count in lv.errors_by_kind.items():
                kinds[kind] = kinds.get(kind, 0) + count
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()) if v) or "none completed"
        return why, (f"Fix the failing requests first ({detail}), then probe again.",)
    return why, ("Probe again with more concurrency levels (the ladder needs at least 3 usable ones).",)


def inconclusive(levels: Sequence[Level], clean: tuple[Level, ...], workers: int | None) -> Verdict:
    why, advice = _inconclusive_why(levels, len(clean))
    curve = fit_curve(clean, workers or 1) if clean else None
    return Verdict(
        cls=EndpointClass.INCONCLUSIVE,
        confidence=0.0,
        summary=f"Inconclusive: {why}.",
        evidence=curve_evidence(curve, levels, len(clean), workers),
        advice=advice,
    )


class Shape(Enum):
    """Where the curve's cap sits, relative to the workers and the thread limiter."""

    SERIAL = "about one request per worker"
    THREADPOOL = "about 40 requests per worker"
    BETWEEN = "between one and 40 per worker"
    UNCAPPED = "no cap, or one far past the thread limiter"


@dataclass(frozen=True)
class _Case:
    """What every builder reads: the curve, the worker count, the CPU, the shared confidence."""

    curve: Curve
    workers: int | None  # as observed; None when unknown
    p: int  # workers, 1 when unknown
    cpu: float | None  # server CPU demand per busy worker (use where demand was not read); None: unobserved
    cpu_what: str  # "CPU demand (on CPU + waiting)" or "CPU"
    confidence: float
    notes: tuple[str, ...]
    evidence: Evidence
    profile: RouteProfile | None = None  # the server's stacks at the most loaded clean level

    def note(self, *extra: str) -> str:
        parts = [*self.notes, *extra]
        return f" ({'; '.join(parts)})" if parts else ""


def _serial_cap(workers: int | None, p: int) -> float:
    return SERIAL_MAX_UNKNOWN_WORKERS if workers is None else SERIAL_MAX_PER_WORKER * p


def _implied_workers(case: _Case) -> int:
    """Unknown workers: the knee must sit near 40 x some whole number of workers."""
    if case.workers is not None:
        return case.p
    return max(1, round(case.curve.fit.knee / THREAD_TOKENS_PER_WORKER))


def shape(case: _Case) -> Shape:
    """The curve's kind: a pure decision on the knee, which every builder then explains."""
    knee, lo, hi = case.curve.fit.knee, THREADPOOL_BAND[0], THREADPOOL_BAND[1]
    if not case.curve.plateau:
        return Shape.UNCAPPED
    if knee <= _serial_cap(case.workers, case.p):
        return Shape.SERIAL
    band_knee = THREAD_TOKENS_PER_WORKER * _implied_workers(case)
    if lo * band_knee <= knee <= hi * band_knee:
        return Shape.THREADPOOL
    if knee < lo * THREAD_TOKENS_PER_WORKER * case.p:
        return Shape.BETWEEN
    return Shape.UNCAPPED


def _clamp(conf: float) -> float:
    lo, hi = CONFIDENCE_RANGE
    return round(min(max(conf, lo), hi), 3)


def _stacks_say(case: _Case, cls: EndpointClass) -> tuple[float, str]:
    """What the sampled stacks add to a verdict: a confidence factor and a sentence (or '')."""
    prof = case.profile
    if prof is None or prof.loop.samples == 0:
        return 1.0, ""
    where = describe(prof)
    blocked, idle = prof.loop.app_blocked, prof.loop.idle
    if cls is EndpointClass.LOOP_BLOCKING and blocked is not None and blocked >= STACKS_AGREE:
        return STACKS_CONFIRM_FACTOR, f" The stacks agree: {loop_hotspot(prof, blocked=True)}."
    if cls is EndpointClass.LOOP_BLOCKING and idle >= STACKS_IDLE_CONTRADICTS:
        return STACKS_CONTRADICT_FACTOR, (
            f" But the stacks show the event loop idle {idle:.0%} of samples, waiting for I/O, not blocked:"
            f" the limit may be elsewhere ({where})."
        )
    if cls is EndpointClass.CPU_BOUND and blocked is not None and blocked >= STACKS_AGREE:
        return STACKS_CONTRADICT_FACTOR, (
            f" But the stacks show the event loop blocked off the CPU {blocked:.0%} of samples ({where}):"
            " part of the time is a blocking call, not computation."
        )
    return 1.0, f" Stacks: {where}."


def _verdict(case: _Case, cls: EndpointClass, factor: float, summary: str, advice: Sequence[str]) -> Verdict:
    stack_factor, said = _stacks_say(case, cls)
    return Verdict(
        cls=cls,
        confidence=_clamp(case.confidence * factor * stack_factor),
        summary=summary + said,
        evidence=case.evidence,
        advice=tuple(advice),
    )


def _serial(case: _Case) -> Verdict:
    c, p = case.curve, case.p
    per = f"~{p}/S with {p} worker{'s' if p > 1 else ''}" if case.workers else f"~{c.fit.knee:.0f}/S"
    head = (
        f"throughput plateaus at {c.plateau_rps or 0:.0f} req/s from c~{c.fit.knee:.0f} ({per}, "
        f"S={c.service_ms:.1f} ms), latency x{c.latency_inflation:.1f} at c={c.n_max}"
    )
    if case.cpu is None:
        return _verdict(
            case,
            EndpointClass.SERIALIZED,
            0.85,
            f"Serialized: {head}{case.note()}; without the server's CPU this cannot tell cpu-bound from "
            "loop-blocking: suspect loop-blocking if the handler is `async def` and calls a blocking client "
            "(requests, time.sleep, a sync DB driver), cpu-bound if it computes.",
            (
                "Probe with the server running on this machine so its CPU is measured.",
                "If it blocks in `async def`: use an async driver or declare the route `def`.",
                "If it computes: one worker per effective CPU; move heavy work to a process pool.",
            ),
        )
    ambiguity = min(abs(case.cpu - CPU_BOUND_SPLIT) / CPU_AMBIGUOUS_WIDTH, 1.0)
    factor = 0.6 + 0.4 * ambiguity
    if case.cpu >= CPU_BOUND_SPLIT:
        return _verdict(
            case,
            EndpointClass.CPU_BOUND,
            factor,
            f"CPU-bound: {head}, server {case.cpu_what} {case.cpu:.2f} cores per busy worker{case.note()}.",
            _cpu_advice(case),
        )
    return _verdict(
        case,
        EndpointClass.LOOP_BLOCKING,
        factor,
        f"Loop-blocking: {head}, yet server {case.cpu_what} only {case.cpu:.2f} cores per busy "
        "worker: a blocking call "
        f"inside `async def` holds the event loop{case.note()}.",
        (
            "Use an async driver for the blocking call (asyncpg, httpx.AsyncClient, aiofiles, "
            "redis.asyncio), "
            "or declare the route `def` so it runs in the thread pool.",
            "More workers only multiply the plateau; they do not remove the block.",
        ),
    )


def _cpu_advice(case: _Case) -> tuple[str, ...]:
    """CPU work: one worker per CPU; heavy work to a process pool, unless the route is framework-cheap."""
    if case.curve.service_ms < CHEAP_SERVICE_MS:
        return (
            "Run one worker process per effective CPU: each takes its share of these requests.",
            f"Each request costs ~{case.curve.service_ms:.1f} ms, mostly the framework's own work (routing, "
            "validation, serialisation): there is no heavy work to move to a process pool; more workers, up "
            "to one per CPU, are what scales it.",
        )
    return (
        "Run one worker process per effective CPU: more workers than cores add memory, not throughput.",
        "Move heavy, non-critical work to a process pool (ProcessPoolExecutor) or a task queue; "
        "threads and async do not help CPU work under the GIL.",
    )


def _threadpool(case: _Case) -> Verdict:
    c, implied = case.curve, _implied_workers(case)
    factor, extra = 1.0, []
    if case.workers is None:
        factor *= 0.9
        extra.append(f"the knee fits {implied} worker{'s' if implied > 1 else ''} x 40 threads")
    tokens = suggested_thread_tokens(c.n_max, implied)
    advice = [
        f"Raise AnyIO's thread limit in the app's lifespan (40 per worker by default; {tokens.why}):",
        "import anyio.to_thread",
        f"anyio.to_thread.current_default_thread_limiter().total_tokens = {tokens.tokens}",
        "Or make the route `async def` with an async driver, which needs no threads.",
    ]
    if case.cpu is not None and case.cpu >= CPU_SATURATED:
        factor *= 0.7
        advice.append(
            f"Server CPU is already {case.cpu:.2f} cores per worker at the plateau: more threads alone may "
            "not help, add workers too."
        )
    case = replace(case, evidence=replace(case.evidence, suggested_thread_tokens=tokens.tokens))
    return _verdict(
        case,
        EndpointClass.THREADPOOL_BOUND,
        factor,
        f"Threadpool-bound: flat latency ({c.service_ms:.1f} ms) until c~{c.fit.knee:.0f}, then throughput "
        f"plateaus at {c.plateau_rps or 0:.0f} req/s, matching AnyIO's 40 threads x "
        f"{implied} worker{'s' if implied > 1 else ''}{case.note(*extra)}.",
        advice,
    )


def _between(case: _Case) -> Verdict:
    """Capped well above one request per worker yet well below the thread limiter."""
    c, p, cpu = case.curve, case.p, case.cpu
    plateau = c.plateau_rps or 0.0
    if case.profile is not None and case.profile.threadpool.pool_wait_threads >= POOL_WAIT_THREADS:
        # Threads queue for a database connection: the pool binds first, whatever the CPU does.
        return _pool(case)
    if cpu is not None and cpu >= CPU_BOUND_SPLIT:
        return _verdict(
            case,
            EndpointClass.CPU_BOUND,
            0.7,
            f"CPU-bound: throughput plateaus at {plateau:.0f} req/s from c~{c.fit.knee:.0f} with "
            f"server {case.cpu_what} "
            f"{cpu:.2f} cores per worker: each request needs about "
            f"{1000 * cpu * p / max(plateau, 1e-9):.1f} ms "
            f"of CPU within S={c.service_ms:.1f} ms{case.note()}.",
            (
                "Run one worker process per effective CPU: the workers' CPU is the limit.",
                "Profile the handler's CPU (serialisation, validation) and move heavy, "
                "non-critical work to a "
                "process pool or a task queue.",
            ),
        )
    return _pool(case)


def _pool(case: _Case) -> Verdict:
    """Capped at K in flight per worker, 1 < K << 40, with little CPU: something holds K slots each."""
    c, p = case.curve, case.p
    plateau = c.plateau_rps or 0.0
    # Little's law at the plateau: requests in service = throughput x the time each holds a slot,
    # which is at least the service time the client saw at the lowest level (the slot may also be
    # held for work after the response, e.g. asyncpg's reset round trip: K is a lower bound).
    k = plateau * c.service_ms / 1000 / p
    case = replace(case, evidence=replace(case.evidence, pool_size_per_worker=round(k, 1)))
    cpu_too = (
        " (near a full core: the CPU is about to bind too)" if (case.cpu or 0) >= CPU_BOUND_SPLIT else ""
    )
    if case.cpu is None:
        return _verdict(
            case,
            EndpointClass.INCONCLUSIVE,
            0.5,
            f"Inconclusive: throughput plateaus at {plateau:.0f} req/s with ~{k:.0f} requests in service per "
            f"worker, neither ~1 (one per worker) nor ~{THREAD_TOKENS_PER_WORKER} (threads per worker), and "
            f"the server's CPU was not measured{case.note()}.",
            (
                f"Look for a limit of ~{k:.0f} per worker: a connection pool, a semaphore, a rate limit "
                "downstream, or a thread limiter set by the app.",
            ),
        )
    return _verdict(
        case,
        EndpointClass.POOL_BOUND,
        0.85 if case.workers is not None else 0.6,
        f"Pool-bound: throughput plateaus at {plateau:.0f} req/s from c~{c.fit.knee:.0f} with ~{k:.1f} "
        f"requests in service per worker (plateau x S={c.service_ms:.1f} ms / {p} worker(s)), server "
        f"{case.cpu_what} {case.cpu:.2f} cores per busy worker{cpu_too}: each worker holds a pool of "
        f"~{k:.0f} (database connections, an HTTP client pool, a semaphore){case.note()}.",
        (
            "Throughput = workers x pool / service time: a larger pool per worker (if the "
            "database allows it) "
            f"or more workers raise the plateau; each worker opens its own pool of ~{k:.0f}.",
            "Keep workers x pool size x replicas within the database's max_connections (less its reserved "
            "slots): `fastapi-tune recommend --db-max-connections N --db-pool-size M` does the arithmetic.",
            "The pool may also be held after the response (a reset round trip): the real size can be larger.",
        ),
    )


def _io(case: _Case) -> Verdict:
    """No cap within the ladder, or one far past the thread limiter: the async path scaled."""
    c, p = case.curve, case.p
    tp_knee = THREAD_TOKENS_PER_WORKER * p
    factor, extra = 1.0, []
    advice = [
        "The async path scales: a few workers suffice (about one per core leaves CPU headroom).",
        "Watch downstream pool sizes (database, HTTP client): they, not the workers, cap concurrency.",
    ]
    if c.plateau:
        factor *= 0.85
        cpu_txt = f", server CPU {case.cpu:.2f} cores per worker" if case.cpu is not None else ""
        extra.append(
            f"growth slowed past c~{c.fit.knee:.0f}{cpu_txt}, far beyond the thread limiter (~{tp_knee}): "
            "the server's own per-request CPU or a downstream limit"
        )
    elif c.n_max < THREADPOOL_RULE_OUT * tp_knee:
        factor *= 0.6
        extra.append(
            f"the ladder stopped at c={c.n_max}, below 1.2 x the thread limiter's knee (~{tp_knee}): "
            "threadpool-bound cannot be ruled out"
        )
        advice.append(
            f"To rule out the thread limiter, probe up to c>={math.ceil(THREADPOOL_RULE_OUT * tp_knee)}."
        )
    if not c.plateau and c.n_max < SERIAL_MAX_PER_WORKER * p:
        factor *= 0.6
        extra.append(f"the ladder never went past the {p} workers, so a serial limit is not ruled out")
    return _verdict(
        case,
        EndpointClass.IO_BOUND,
        factor,
        f"IO-bound: throughput grows to {c.levels[-1].throughput_rps:.0f} req/s at c={c.n_max} "
        f"(efficiency {c.efficiency_at_max:.2f}), p50 latency {c.service_ms:.1f} ms at "
        f"c={c.levels[0].concurrency} and x{c.latency_inflation:.2f} at c={c.n_max}{case.note(*extra)}.",
        advice,
    )


BUILDERS: Final = {
    Shape.SERIAL: _serial,
    Shape.THREADPOOL: _threadpool,
    Shape.BETWEEN: _between,
    Shape.UNCAPPED: _io,
}


def make_case(
    levels: Sequence[Level],
    clean: tuple[Level, ...],
    workers: int | None,
    observed: bool,
    profile: RouteProfile | None = None,
) -> _Case:
    """The curve and the confidence every class shares: levels, noise, Little's law, known workers."""
    p = workers if workers and workers > 0 else 1
    curve = fit_curve(clean, p)
    conf = 0.95 * min(1.0, 0.55 + 0.15 * (len(clean) - MIN_CLEAN_LEVELS))
    noise = min(max((curve.fit.rms - NOISE_OK) / (NOISE_BAD - NOISE_OK), 0.0), 1.0)
    conf *= 1 - 0.5 * noise
    if not curve.little_ok:
        conf *= 0.85
    notes: tuple[str, ...] = ()
    if workers is None:
        conf *= UNKNOWN_WORKERS_FACTOR
        notes = ("worker count unknown, 1 assumed",)
    cpu, cpu_what = curve.cpu_per_busy_worker, "CPU"
    if curve.demand_per_busy_worker is not None:
        # A worker waiting for a CPU wanted it: demand, not use, tells CPU work from a blocked loop.
        cpu, cpu_what = curve.demand_per_busy_worker, "CPU demand (on CPU + waiting)"
    if curve.starved_levels:
        conf *= STARVED_FACTOR
        names = f": {', '.join(curve.top_others)}" if curve.top_others else ""
        others = f"{curve.others_cores:.2f} cores" if curve.others_cores is not None else "its CPU"
        notes = (
            *notes,
            f"the host was starved at {curve.starved_levels} level(s), other processes took {others}{names}",
        )
    return _Case(
        curve=curve,
        workers=workers,
        p=p,
        cpu=cpu if observed else None,
        cpu_what=cpu_what,
        confidence=conf,
        notes=notes,
        evidence=curve_evidence(curve, levels, len(clean), workers),
        profile=profile,
    )


def stalled(levels: Sequence[Level], clean: tuple[Level, ...], workers: int | None) -> Verdict:
    """Requests were in flight and none completed: a deadlock or a pool wait longer than the window."""
    first = min((lv for lv in levels if lv.stalled), key=lambda lv: lv.concurrency)
    p = workers or 1
    last_ok = (
        f"; up to c={clean[-1].concurrency} it served {clean[-1].throughput_rps:.0f} req/s" if clean else ""
    )
    age = f" (the oldest waited {first.oldest_in_flight_ms:.0f} ms)" if first.oldest_in_flight_ms else ""
    evidence = replace(
        curve_evidence(fit_curve(clean, p) if clean else None, levels, len(clean), workers),
        stalled_at_concurrency=first.concurrency,
    )
    return Verdict(
        cls=EndpointClass.STALLED,
        confidence=0.9,
        summary=(
            f"Stalled: at c={first.concurrency}, {first.in_flight_at_end} requests were in flight "
            "and not one "
            f"completed in {first.duration_s:.1f} s{age}{last_ok}. The server stopped answering under load."
        ),
        evidence=evidence,
        advice=(
            "Known cause: `def` dependencies (or routes) holding threadpool threads while they wait for a "
            "database pool connection that another thread holds, e.g. a sync SQLAlchemy session from a "
            f"`def` dependency: AnyIO's {THREAD_TOKENS_PER_WORKER} threads per worker each hold a session, "
            "and the pool (SQLAlchemy's default: 5 + 10 overflow) runs dry.",
            "Sizes that avoid it: a pool of at least the thread limit per worker (pool_size + "
            "max_overflow >= "
            f"{THREAD_TOKENS_PER_WORKER}), or a thread limit no larger than the pool, or async dependencies "
            "that take the connection only where it is used.",
            "Confirm in the server's log: `QueuePool limit of size 5 overflow 10 reached` after "
            "pool_timeout.",
        ),
    )
