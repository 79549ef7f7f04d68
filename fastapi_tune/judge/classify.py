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

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Final

from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER, littles_law_ok, suggested_thread_tokens
from fastapi_tune.measure.demand import LevelDemand
from fastapi_tune.measure.report import (
    Endpoint,
    EndpointClass,
    Evidence,
    Level,
    ProbeReport,
    StopReason,
    Verdict,
)
from fastapi_tune.measure.stack_attribution import RouteProfile, describe, loop_hotspot
from fastapi_tune.measure.stats import median

# ---------------------------------------------------------------------------------------
# Thresholds

# Above 2% failed requests the successes we count (throughput) and time (latency) are a biased
# sample: timeouts drop exactly the slow requests. Such a level is shown but is not evidence.
MAX_ERROR_RATIO: Final = 0.02
# Fewer than three points cannot tell a line from a bend.
MIN_CLEAN_LEVELS: Final = 3
# The USL has three parameters; the field notes (usl4j, R `usl`) ask for >= 6 points.
USL_MIN_POINTS: Final = 6
# A plateau counts as seen only when the ladder went 30% past the fitted knee: closer than that, a
# +-10% jitter on one level can fake or hide the bend.
PLATEAU_MARGIN: Final = 1.3
# Serialised: the cap is at most 3 requests per worker. A cpu-bound route reaches ~1 (~0.75 per
# worker when two workers share two cores with the load generator); 3 leaves room for noise and for
# a partly GIL-free handler, and stays far below the thread limiter's 40.
SERIAL_MAX_PER_WORKER: Final = 3.0
# With the worker count unknown (remote server) a serial cap can be any small worker count; 16 is
# more workers than a single host usually runs and still well below one thread limiter (40*0.65).
SERIAL_MAX_UNKNOWN_WORKERS: Final = 16.0
# Threadpool: the cap lies within [0.65, 1.3] x 40*P. The limiter caps at exactly 40*P, so the
# band only absorbs fit noise; its upper edge keeps an io-bound route whose latency inflates late
# from the server's own CPU (knee ~75-95 with one worker, see the field notes' 40 ms route) out.
THREADPOOL_BAND: Final = (0.65, 1.3)
# A flat ladder rules the threadpool out only if it reached 1.2 x 40*P: past the knee with margin.
THREADPOOL_RULE_OUT: Final = 1.2
# Server CPU per busy worker splitting cpu-bound (~1.0; ~0.75 on a shared 2-core box) from
# loop-blocking (measured 0.03 for time.sleep in async def): the midpoint, with room either side.
CPU_BOUND_SPLIT: Final = 0.5
# Within this distance of the split a route is mixed (CPU and blocking): lower the confidence.
CPU_AMBIGUOUS_WIDTH: Final = 0.25
# A worker this close to one full core is CPU-saturated whatever else limits it.
CPU_SATURATED: Final = 0.85
# Residual RMS (log throughput) of the hockey-stick fit: +-10% uniform jitter gives ~0.06, so up to
# 0.1 is ordinary noise; at 0.4 (~50%) the curve says little.
NOISE_OK: Final = 0.10
NOISE_BAD: Final = 0.40
# A verdict whose CPU levels were taken while the host had no idle CPU: the demand reading still
# holds (waiting counts), but the curve's shape was bent by the neighbours.
STARVED_FACTOR: Final = 0.8
# Below this service time a request is mostly the framework's own work (measured here: 0.1-0.3 ms
# for a trivial route), and "move heavy work to a process pool" has nothing to move.
CHEAP_SERVICE_MS: Final = 2.0
# Stack samples as evidence: the event loop blocked inside app code in at least this share of
# samples confirms a blocked loop; idle in its selector this often contradicts one.
STACKS_AGREE: Final = 0.3
STACKS_IDLE_CONTRADICTS: Final = 0.6
STACKS_CONFIRM_FACTOR: Final = 1.1
# Pool threads seen waiting for a database connection (per worker, on average): the pool binds.
POOL_WAIT_THREADS: Final = 1.0
STACKS_CONTRADICT_FACTOR: Final = 0.6
# Confidence never claims certainty from a black-box measurement, nor drops to nothing.
CONFIDENCE_RANGE: Final = (0.05, 0.95)
# Unknown worker count: P=1 is a guess that moves both knees.
UNKNOWN_WORKERS_FACTOR: Final = 0.8

# ---------------------------------------------------------------------------------------
# Levels


def exclusion_reason(level: Level) -> str | None:
    """Why a level is not evidence ("client-saturated", "errors 7.5%", ...), or None when it is."""
    if level.stalled:
        return "stalled"
    if level.client_saturated:
        return "client-saturated"
    if level.requests <= 0 or level.throughput_rps <= 0 or level.latency_ms is None:
        return "no successful responses"
    ratio = level.errors / level.requests
    if ratio > MAX_ERROR_RATIO:
        return f"errors {ratio:.1%}"
    return None


def clean_levels(levels: Sequence[Level]) -> tuple[Level, ...]:
    """The levels that count as evidence, by rising concurrency."""
    return tuple(sorted((lv for lv in levels if exclusion_reason(lv) is None), key=lambda lv: lv.concurrency))


# ---------------------------------------------------------------------------------------
# Fits


def usl_fit(points: Sequence[tuple[int, float]]) -> tuple[float, float, float] | None:
    """Least-squares (sigma, kappa, lambda) of X(N) = lambda*N / (1 + sigma*(N-1) + kappa*N*(N-1)).

    None with fewer than USL_MIN_POINTS distinct concurrencies or a non-positive value. The error is
    relative (in X), so high-throughput points do not drown the rest; sigma and kappa are >= 0.
    """
    pts = [(float(n), x) for n, x in points if n >= 1 and x > 0]
    if len({n for n, _ in pts}) < USL_MIN_POINTS or len(pts) != len(points):
        return None
    # For a fixed lambda the model is linear in (sigma, kappa) through D = lambda*N/X - 1; search
    # lambda around the best per-client throughput, golden-section refine the best bracket.
    start = max(x / n for n, x in pts)

    def cost(lam: float) -> tuple[float, float, float]:
        sigma, kappa = _usl_linear(pts, lam)
        sse = 0.0
        for n, x in pts:
            pred = lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))
            sse += math.log(pred / x) ** 2
        return sse, sigma, kappa

    grid = [start * (0.5 + i * 0.01) for i in range(151)]  # 0.5x .. 2x
    costs = [cost(lam)[0] for lam in grid]
    best = min(range(len(grid)), key=costs.__getitem__)
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a = hi - ratio * (hi - lo)
        b = lo + ratio * (hi - lo)
        if cost(a)[0] <= cost(b)[0]:
            hi = b
        else:
            lo = a
    lam = (lo + hi) / 2
    _, sigma, kappa = cost(lam)
    return sigma, kappa, lam


def _usl_linear(pts: Sequence[tuple[float, float]], lam: float) -> tuple[float, float]:
    """Weighted least squares of D = sigma*(N-1) + kappa*N*(N-1), sigma and kappa clamped to >= 0."""
    # Weight 1/(1+D)^2 turns the error in the denominator into a relative error in X.
    rows = []
    for n, x in pts:
        d = lam * n / x - 1
        w = 1 / max(1 + d, 1e-9) ** 2
        rows.append((n - 1, n * (n - 1), d, w))
    saa = sum(w * a * a for a, _, _, w in rows)
    sbb = sum(w * b * b for _, b, _, w in rows)
    sab = sum(w * a * b for a, b, _, w in rows)
    sad = sum(w * a * d for a, _, d, w in rows)
    sbd = sum(w * b * d for _, b, d, w in rows)
    det = saa * sbb - sab * sab
    if det > 1e-12:
        sigma = (sad * sbb - sbd * sab) / det
        kappa = (sbd * saa - sad * sab) / det
        if sigma >= 0 and kappa >= 0:
            return sigma, kappa
    # The unconstrained optimum left the feasible set: the best lies on an edge (one of them 0).
    only_sigma = (max(sad / saa, 0.0), 0.0) if saa > 0 else (0.0, 0.0)
    only_kappa = (0.0, max(sbd / sbb, 0.0)) if sbb > 0 else (0.0, 0.0)

    def sse(sk: tuple[float, float]) -> float:
        return sum(w * (d - sk[0] * a - sk[1] * b) ** 2 for a, b, d, w in rows)

    return min(only_sigma, only_kappa, key=sse)


def usl_peak(sigma: float, kappa: float) -> float | None:
    """The concurrency of peak throughput, sqrt((1-sigma)/kappa); None when throughput never falls."""
    if kappa <= 0 or sigma >= 1:
        return None
    return math.sqrt((1 - sigma) / kappa)


@dataclass(frozen=True)
class KneeFit:
    """The hockey stick X(N) = per_client_rps * min(N, knee) fitted in log space."""

    per_client_rps: float  # 1/S: throughput per client before the knee
    knee: float  # requests in flight at the cap; the highest level when no bend was found
    rms: float  # residual RMS of log throughput
    bent: bool  # the fit found a cap below the highest level


def knee_fit(points: Sequence[tuple[int, float]]) -> KneeFit:
    """Fit the linear-then-flat closed-loop curve; the knee is searched between the lowest and top N."""
    pts = sorted((n, x) for n, x in points if n >= 1 and x > 0)
    if not pts:
        raise ValueError("knee_fit needs at least one point with N >= 1 and X > 0")
    n_lo, n_hi = pts[0][0], pts[-1][0]
    steps = 400
    # From the top down so that among equal fits the larger knee (the plainer "no cap") wins.
    candidates = [n_hi * (n_lo / n_hi) ** (i / steps) for i in range(steps + 1)] if n_hi > n_lo else [n_hi]
    best: tuple[float, float, float] | None = None
    for c in candidates:
        offsets = [math.log(x) - math.log(min(n, c)) for n, x in pts]
        a = sum(offsets) / len(offsets)
        sse = sum((o - a) ** 2 for o in offsets)
        if best is None or sse < best[0] - 1e-12:
            best = (sse, a, c)
    assert best is not None
    sse, a, c = best
    return KneeFit(per_client_rps=math.exp(a), knee=c, rms=math.sqrt(sse / len(pts)), bent=c < n_hi * 0.999)


# ---------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True)
class _Curve:
    """The numbers every verdict draws on."""

    levels: tuple[Level, ...]
    fit: KneeFit
    plateau: bool  # the ladder went PLATEAU_MARGIN past the knee
    n_max: int
    service_ms: float
    efficiency_at_max: float
    latency_inflation: float
    plateau_rps: float | None
    cpu_per_busy_worker: float | None  # past the knee when there is a plateau, else at the top level
    demand_per_busy_worker: float | None  # on CPU + waiting for one, where the server's demand was read
    starved_levels: int  # of the levels past the knee, those taken while the host had no idle CPU
    others_cores: float | None  # other processes' CPU over those levels (median)
    top_others: tuple[str, ...]  # the biggest of them, by name
    little_ok: bool


def _p50(level: Level) -> float:
    assert level.latency_ms is not None  # clean levels have latency
    return level.latency_ms.p50


def _busy(lv: Level, workers: int, busy_cap: float) -> float:
    """Workers that can be busy at this level: no more than requests in flight, workers, or the cap."""
    return min(float(lv.concurrency), float(workers), busy_cap)


def _gil_demand(d: LevelDemand) -> float:
    """The workers' CPU demand, each counted at most one core beyond what it actually ran.

    Every thread's wait is summed: forty pool threads taking turns at the GIL wait a lot each, yet
    one Python process cannot use more than about one core of what it waits for.
    """
    return sum(max(w.on_cpu_cores, min(w.demand_cores, 1.0)) for w in d.workers)


def _host_contention(past: Sequence[Level]) -> tuple[int, float | None, tuple[str, ...]]:
    """(starved levels, other processes' cores, their top names) over the levels read for the CPU."""
    read = [lv.demand for lv in past if lv.demand is not None]
    names: dict[str, float] = {}
    for d in read:
        for c in d.top_others:
            names[c.name] = max(names.get(c.name, 0.0), c.cores)
    top = tuple(n for n, _ in sorted(names.items(), key=lambda kv: -kv[1])[:3])
    others = median([d.others_cores for d in read]) if read else None
    return sum(d.starved for d in read), others, top


def _curve(levels: tuple[Level, ...], workers: int) -> _Curve:
    fit = knee_fit([(lv.concurrency, lv.throughput_rps) for lv in levels])
    base, top = levels[0], levels[-1]
    n_max = top.concurrency
    plateau = fit.bent and n_max >= PLATEAU_MARGIN * fit.knee
    past = [lv for lv in levels if lv.concurrency >= fit.knee * PLATEAU_MARGIN] if plateau else [top]
    # A cpu-bound app on fewer cores than workers keeps only as many busy as it has cores.
    busy_cap = max(1.0, fit.knee) if plateau else float(workers)
    cpu = [
        lv.server_cpu_cores / _busy(lv, workers, busy_cap) for lv in past if lv.server_cpu_cores is not None
    ]
    demand = [_gil_demand(lv.demand) / _busy(lv, workers, busy_cap) for lv in past if lv.demand is not None]
    starved, others, top_others = _host_contention(past)
    littles = [lv.littles_law_ratio for lv in levels if lv.littles_law_ratio is not None]
    return _Curve(
        levels=levels,
        fit=fit,
        plateau=plateau,
        n_max=n_max,
        service_ms=_p50(base),
        efficiency_at_max=(top.throughput_rps / n_max) / (base.throughput_rps / base.concurrency),
        latency_inflation=_p50(top) / _p50(base) if _p50(base) > 0 else 1.0,
        plateau_rps=median([lv.throughput_rps for lv in past]) if plateau else None,
        cpu_per_busy_worker=median(cpu) if cpu else None,
        demand_per_busy_worker=median(demand) if demand else None,
        starved_levels=starved,
        others_cores=others,
        top_others=top_others,
        little_ok=not littles or littles_law_ok(median(littles)),
    )


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _evidence(curve: _Curve | None, levels: Sequence[Level], clean: int, workers: int | None) -> Evidence:
    excluded = [exclusion_reason(lv) for lv in levels]
    base = Evidence(
        clean_levels=clean,
        workers=workers,
        threadpool_knee_expected=THREAD_TOKENS_PER_WORKER * (workers or 1),
        excluded_client_saturated=sum(r == "client-saturated" for r in excluded),
        excluded_errors=sum(r is not None and r != "client-saturated" for r in excluded),
    )
    if curve is None:
        return base
    usl = (
        usl_fit([(lv.concurrency, lv.throughput_rps) for lv in curve.levels])
        if clean >= USL_MIN_POINTS
        else None
    )
    sigma, kappa = (usl[0], usl[1]) if usl is not None else (None, None)
    return replace(
        base,
        efficiency_at_max=_round(curve.efficiency_at_max),
        latency_inflation=_round(curve.latency_inflation),
        knee_concurrency=max(1, round(curve.fit.knee)) if curve.plateau else None,
        plateau_rps=_round(curve.plateau_rps, 2),
        service_time_ms=_round(curve.service_ms, 3),
        server_cpu_per_busy_worker=_round(curve.cpu_per_busy_worker, 3),
        server_cpu_demand_per_busy_worker=_round(curve.demand_per_busy_worker, 3),
        starved_levels=curve.starved_levels if curve.demand_per_busy_worker is not None else None,
        host_others_cores=_round(curve.others_cores, 3),
        max_clean_concurrency=curve.n_max,
        fit_rms=_round(curve.fit.rms),
        usl_sigma=_round(sigma, 6),
        usl_kappa=_round(kappa, 8),
        usl_peak_concurrency=(
            _round(usl_peak(sigma, kappa), 1) if sigma is not None and kappa is not None else None
        ),
    )


# ---------------------------------------------------------------------------------------
# Too little evidence


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


def _inconclusive(levels: Sequence[Level], clean: tuple[Level, ...], workers: int | None) -> Verdict:
    why, advice = _inconclusive_why(levels, len(clean))
    curve = _curve(clean, workers or 1) if clean else None
    return Verdict(
        cls=EndpointClass.INCONCLUSIVE,
        confidence=0.0,
        summary=f"Inconclusive: {why}.",
        evidence=_evidence(curve, levels, len(clean), workers),
        advice=advice,
    )


# ---------------------------------------------------------------------------------------
# The curve's shape, then one builder per verdict


class Shape(Enum):
    """Where the curve's cap sits, relative to the workers and the thread limiter."""

    SERIAL = "about one request per worker"
    THREADPOOL = "about 40 requests per worker"
    BETWEEN = "between one and 40 per worker"
    UNCAPPED = "no cap, or one far past the thread limiter"


@dataclass(frozen=True)
class _Case:
    """What every builder reads: the curve, the worker count, the CPU, the shared confidence."""

    curve: _Curve
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


_BUILDERS: Final = {
    Shape.SERIAL: _serial,
    Shape.THREADPOOL: _threadpool,
    Shape.BETWEEN: _between,
    Shape.UNCAPPED: _io,
}


def _case(
    levels: Sequence[Level],
    clean: tuple[Level, ...],
    workers: int | None,
    observed: bool,
    profile: RouteProfile | None = None,
) -> _Case:
    """The curve and the confidence every class shares: levels, noise, Little's law, known workers."""
    p = workers if workers and workers > 0 else 1
    curve = _curve(clean, p)
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
        evidence=_evidence(curve, levels, len(clean), workers),
        profile=profile,
    )


def _stalled(levels: Sequence[Level], clean: tuple[Level, ...], workers: int | None) -> Verdict:
    """Requests were in flight and none completed: a deadlock or a pool wait longer than the window."""
    first = min((lv for lv in levels if lv.stalled), key=lambda lv: lv.concurrency)
    p = workers or 1
    last_ok = (
        f"; up to c={clean[-1].concurrency} it served {clean[-1].throughput_rps:.0f} req/s" if clean else ""
    )
    age = f" (the oldest waited {first.oldest_in_flight_ms:.0f} ms)" if first.oldest_in_flight_ms else ""
    evidence = replace(
        _evidence(_curve(clean, p) if clean else None, levels, len(clean), workers),
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


def classify(
    levels: Sequence[Level], workers: int | None, server_observed: bool, profile: RouteProfile | None = None
) -> Verdict:
    """Judge what limits an endpoint from its ladder of levels (see the module docstring); the stack
    profile, when sampled, confirms or questions the verdict and names the line."""
    clean = clean_levels(levels)
    if any(lv.stalled for lv in levels):
        return _stalled(levels, clean, workers)
    if len(clean) < MIN_CLEAN_LEVELS:
        return _inconclusive(levels, clean, workers)
    case = _case(levels, clean, workers, server_observed, profile)
    return _BUILDERS[shape(case)](case)


def classify_report(report: ProbeReport) -> ProbeReport:
    """The report with every endpoint judged; the server's CPU counts only where it was observed."""
    observed = report.server.local and report.server.pid is not None

    def judged(e: Endpoint) -> Endpoint:
        seen = observed and e.stop_reason is not StopReason.SERVER_DIED
        return replace(e, verdict=classify(e.levels, report.server.workers, seen, e.profile))

    return replace(report, endpoints=tuple(judged(e) for e in report.endpoints))
