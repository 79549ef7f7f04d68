"""The measured curve: clean levels, the knee and USL fits, and the evidence they give."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from fastapi_tune.core.rules import SCALED_SHARE, THREAD_TOKENS_PER_WORKER, littles_law_ok
from fastapi_tune.judge.thresholds import MAX_ERROR_RATIO, PLATEAU_MARGIN, USL_MIN_POINTS
from fastapi_tune.measure.demand import LevelDemand
from fastapi_tune.measure.report import (
    Evidence,
    Level,
)
from fastapi_tune.measure.stats import median


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


@dataclass(frozen=True)
class Curve:
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
    # At c=1 (one request at a time) the share of the time a worker wanted a CPU: ~1 when the whole
    # request is CPU work (a handler computing, or a cheap route's framework work), near 0 when it
    # waits (I/O, a thread, a blocking sleep). None without a c=1 level or without the server's CPU.
    cpu_at_one: float | None
    cpu_use_at_one: float | None  # the same on a CPU only (a `def` route's threads' waits left out)
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


def fit_curve(levels: tuple[Level, ...], workers: int) -> Curve:
    fit = knee_fit([(lv.concurrency, lv.throughput_rps) for lv in levels])
    base, top = levels[0], levels[-1]
    n_max = top.concurrency
    efficiency = (top.throughput_rps / n_max) / (base.throughput_rps / base.concurrency)
    plateau = fit.bent and n_max >= PLATEAU_MARGIN * fit.knee
    if len(levels) == 2:  # two points place no knee: they only tell whether the route scaled
        plateau = efficiency < SCALED_SHARE
    past = [lv for lv in levels if lv.concurrency >= fit.knee * PLATEAU_MARGIN] if plateau else [top]
    # A cpu-bound app on fewer cores than workers keeps only as many busy as it has cores.
    busy_cap = max(1.0, fit.knee) if plateau else float(workers)
    cpu = [
        lv.server_cpu_cores / _busy(lv, workers, busy_cap) for lv in past if lv.server_cpu_cores is not None
    ]
    demand = [_gil_demand(lv.demand) / _busy(lv, workers, busy_cap) for lv in past if lv.demand is not None]
    starved, others, top_others = _host_contention(past)
    at_one = use_at_one = None
    if base.concurrency == 1:
        use_at_one = base.server_cpu_cores
        at_one = _gil_demand(base.demand) if base.demand is not None else use_at_one
    littles = [lv.littles_law_ratio for lv in levels if lv.littles_law_ratio is not None]
    return Curve(
        levels=levels,
        fit=fit,
        plateau=plateau,
        n_max=n_max,
        service_ms=_p50(base),
        efficiency_at_max=efficiency,
        latency_inflation=_p50(top) / _p50(base) if _p50(base) > 0 else 1.0,
        plateau_rps=median([lv.throughput_rps for lv in past]) if plateau else None,
        cpu_per_busy_worker=median(cpu) if cpu else None,
        demand_per_busy_worker=median(demand) if demand else None,
        cpu_at_one=at_one,
        cpu_use_at_one=use_at_one,
        starved_levels=starved,
        others_cores=others,
        top_others=top_others,
        little_ok=not littles or littles_law_ok(median(littles)),
    )


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def curve_evidence(curve: Curve | None, levels: Sequence[Level], clean: int, workers: int | None) -> Evidence:
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
