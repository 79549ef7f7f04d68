"""From a curve's shape to a verdict: one builder per class, the stacks' word, the confidence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER, suggested_thread_tokens
from fastapi_tune.judge.case import Case
from fastapi_tune.judge.curve import curve_evidence, exclusion_reason, fit_curve
from fastapi_tune.judge.shape import Shape, implied_workers
from fastapi_tune.judge.stack_evidence import (
    in_threads,
    loop_blocked,
    loop_running,
    seen,
    stacks_word,
)
from fastapi_tune.judge.thresholds import (
    CHEAP_SERVICE_MS,
    CONFIDENCE_RANGE,
    CPU_AMBIGUOUS_WIDTH,
    CPU_BOUND_SPLIT,
    CPU_SATURATED,
    CPU_SUPPORT_MAX,
    MAX_ERROR_RATIO,
    MIN_CLEAN_LEVELS,
    POOL_WAIT_THREADS,
    SERIAL_MAX_PER_WORKER,
    STACKS_CONTRADICT_FACTOR,
    STACKS_LEAN_WEIGHT,
    STARVED_STACKS_FACTOR,
    THREADPOOL_BAND,
    THREADPOOL_RULE_OUT,
    TWO_LEVELS_PER_WORKER,
)
from fastapi_tune.measure.report import (
    EndpointClass,
    Level,
    Verdict,
)


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
        f"only {clean} of {len(levels)} levels are clean (need {MIN_CLEAN_LEVELS}, or 2 reaching"
        f" {TWO_LEVELS_PER_WORKER:g} requests per worker with the server's CPU or stacks): "
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


def _clamp(conf: float) -> float:
    lo, hi = CONFIDENCE_RANGE
    return round(min(max(conf, lo), hi), 3)


def _verdict(
    case: Case,
    cls: EndpointClass,
    factor: float,
    summary: str,
    advice: Sequence[str],
    cpu_support: float = 0.0,
) -> Verdict:
    """The verdict with its confidence: the curve's, the CPU's and the stacks' support combined as
    independent witnesses (1 - the product of their doubts), a contradiction from the stacks
    lowering it, and the case's damping (unknown workers) on the whole. A starved host bends the
    curve and muddles the CPU: it lowers their word, not what the stacks saw."""
    word = stacks_word(case.profile, cls)
    doubt = (1 - case.curve_support * factor * case.starved) * (1 - cpu_support * case.starved)
    # A starved host starves the client too: a loop can idle waiting for requests it was not sent.
    doubt *= 1 - word.support * (STARVED_STACKS_FACTOR if case.starved < 1 else 1.0)
    conf = (1 - doubt) * (STACKS_CONTRADICT_FACTOR if word.contradicts else 1.0) * case.damping
    return Verdict(
        cls=cls,
        confidence=_clamp(conf),
        summary=summary + word.sentence,
        evidence=case.evidence,
        advice=tuple(advice),
    )


def _cpu_lean(case: Case) -> float:
    """Which side of the split the CPU puts a serialised route: -1 loop-blocking .. +1 cpu-bound."""
    assert case.cpu is not None
    return min(max((case.cpu - CPU_BOUND_SPLIT) / CPU_AMBIGUOUS_WIDTH, -1.0), 1.0)


def _stack_lean(case: Case) -> float:
    """Which side the stacks put it: the loop's share computing less its share blocked (0: silent)."""
    prof = case.profile
    if prof is None or not seen(prof):
        return 0.0
    return loop_running(prof) - loop_blocked(prof)


def _serial(case: Case) -> Verdict:
    c, p = case.curve, case.p
    per = f"~{p}/S with {p} worker{'s' if p > 1 else ''}" if case.workers else f"~{c.fit.knee:.0f}/S"
    plateau = c.plateau_rps if c.plateau_rps is not None else c.levels[-1].throughput_rps
    head = (
        f"throughput plateaus at {plateau:.0f} req/s from c~{c.fit.knee:.0f} ({per}, "
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
    cpu_lean, stack_lean = _cpu_lean(case), _stack_lean(case)
    # The CPU splits cpu-bound from loop-blocking, the stacks say it directly (a loop blocked in
    # time.sleep is not computing): they weigh double, since a starved host inflates the demand of
    # a loop that wakes from a blocking call as much as it deflates a computing one's.
    lean = cpu_lean + STACKS_LEAN_WEIGHT * stack_lean
    factor = 0.6 + 0.4 * min(abs(lean), 1.0)
    cpu_support = CPU_SUPPORT_MAX * abs(cpu_lean) if cpu_lean * lean > 0 else 0.0
    if lean >= 0:
        return _verdict(
            case,
            EndpointClass.CPU_BOUND,
            factor,
            f"CPU-bound: {head}, server {case.cpu_what} {case.cpu:.2f} cores per busy worker{case.note()}.",
            _cpu_advice(case),
            cpu_support,
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
        cpu_support,
    )


def _cpu_advice(case: Case) -> tuple[str, ...]:
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


def _threadpool(case: Case) -> Verdict:
    c, implied = case.curve, implied_workers(case)
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
    band = THREAD_TOKENS_PER_WORKER * implied
    matching = f"matching AnyIO's 40 threads x {implied} worker{'s' if implied > 1 else ''}"
    if c.fit.knee < THREADPOOL_BAND[0] * band:
        # Reached here from the stacks (pool threads busy, none waiting for a connection): the
        # threads' hand-offs and the GIL, or a starved host, bent the curve before the limiter.
        factor *= 0.6
        matching = (
            f"before AnyIO's 40 threads x {implied} worker{'s' if implied > 1 else ''}; the stacks show"
            " pool threads busy in the app (a `def` route), so the threads and their hand-offs bind"
        )
    case = replace(case, evidence=replace(case.evidence, suggested_thread_tokens=tokens.tokens))
    return _verdict(
        case,
        EndpointClass.THREADPOOL_BOUND,
        factor,
        f"Threadpool-bound: flat latency ({c.service_ms:.1f} ms) until c~{c.fit.knee:.0f}, then throughput "
        f"plateaus at {c.plateau_rps or 0:.0f} req/s, {matching}{case.note(*extra)}.",
        advice,
    )


def _between(case: Case) -> Verdict:
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
            CPU_SUPPORT_MAX * _cpu_lean(case),
        )
    return _pool(case)


def _pool(case: Case) -> Verdict:
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
        CPU_SUPPORT_MAX * max(0.0, -_cpu_lean(case)),
    )


def _io(case: Case) -> Verdict:
    """No cap within the ladder, or one far past the thread limiter: the async path scaled."""
    c, p = case.curve, case.p
    tp_knee = THREAD_TOKENS_PER_WORKER * p
    factor, extra = 1.0, []
    advice = [
        "The async path scales: a few workers suffice (about one per core leaves CPU headroom).",
        "Watch downstream pool sizes (database, HTTP client): they, not the workers, cap concurrency.",
    ]
    if c.n_max < THREADPOOL_RULE_OUT * tp_knee and case.profile is not None and in_threads(case.profile):
        return _threadpool_ahead(case)
    if c.plateau:
        factor *= 0.85
        cpu_txt = f", server CPU {case.cpu:.2f} cores per worker" if case.cpu is not None else ""
        where = (
            f"far beyond the thread limiter (~{tp_knee})"
            if c.fit.knee >= tp_knee
            else "yet no pool thread was busy in the stacks (an async route)"
        )
        extra.append(
            f"growth slowed past c~{c.fit.knee:.0f}{cpu_txt}, {where}: the server's own per-request CPU"
            " or a downstream limit"
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


def _cpu_work(case: Case) -> Verdict:
    """At c=1 a worker wanted a CPU most of the time: the request is CPU work, however it scaled."""
    c, at = case.curve, case.cpu_at_one or 0.0
    top = c.levels[-1]
    cap = (
        f"throughput plateaus at {c.plateau_rps or 0:.0f} req/s from c~{c.fit.knee:.0f}"
        if c.plateau
        else f"throughput reaches {top.throughput_rps:.0f} req/s at c={c.n_max}"
    )
    cpu = f", server {case.cpu_what} {case.cpu:.2f} cores per busy worker" if case.cpu is not None else ""
    lean = min(max((at - CPU_BOUND_SPLIT) / CPU_AMBIGUOUS_WIDTH, 0.0), 1.0)
    return _verdict(
        case,
        EndpointClass.CPU_BOUND,
        0.7,
        f"CPU-bound: at c=1 a worker wanted a CPU {min(at, 1.0):.0%} of the time (S={c.service_ms:.1f} ms):"
        f" the whole request is CPU work; {cap}{cpu}{case.note()}.",
        _cpu_advice(case),
        CPU_SUPPORT_MAX * lean,
    )


def _threadpool_ahead(case: Case) -> Verdict:
    """Still scaling below the thread limiter, with pool threads busy in the app: a `def` route that
    will plateau at 40 threads per worker (the levels stopped before that knee)."""
    c, p = case.curve, case.p
    tp_knee = THREAD_TOKENS_PER_WORKER * p
    tokens = suggested_thread_tokens(max(c.n_max, math.ceil(THREADPOOL_RULE_OUT * tp_knee)), p)
    case = replace(case, evidence=replace(case.evidence, suggested_thread_tokens=tokens.tokens))
    return _verdict(
        case,
        EndpointClass.THREADPOOL_BOUND,
        0.6,
        f"Threadpool-bound: a `def` route (pool threads busy inside the app), still scaling at c={c.n_max}"
        f" ({c.levels[-1].throughput_rps:.0f} req/s, S={c.service_ms:.1f} ms); it will plateau near"
        f" AnyIO's 40 threads x {p} worker{'s' if p > 1 else ''}, past the levels measured{case.note()}.",
        (
            f"Raise AnyIO's thread limit in the app's lifespan (40 per worker by default; {tokens.why}),"
            " or make the route `async def` with an async driver.",
            f"To see the knee, probe up to c>={math.ceil(THREADPOOL_RULE_OUT * tp_knee)}.",
        ),
    )


BUILDERS: Final = {
    Shape.SERIAL: _serial,
    Shape.THREADPOOL: _threadpool,
    Shape.BETWEEN: _between,
    Shape.UNCAPPED: _io,
    Shape.CPU_WORK: _cpu_work,
}


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
