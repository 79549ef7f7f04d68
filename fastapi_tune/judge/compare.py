"""Judging a probe report against a baseline: did any route get worse beyond the measured noise?

Pure: two ProbeReports in, a BaselineComparison out, no I/O. Per route (method + path template, the
key the report uses) the status is unchanged, improved, regressed, new, gone or inconclusive, with
every number and the noise it was judged against. A route regressed when

- its class moved up the harm order (core/rules.CLASS_HARM: io-bound < threadpool/pool-bound < cpu-bound
  < loop-blocking < stalled), and the change is believable: the new run's stacks show the new class's
  signature (an event loop blocked in app code, or computing in app code, or threads waiting for a
  database pool connection), or the route was stalled (observed directly), or both verdicts are
  confident and were read on a host with CPU to spare;
- or its CPU per request, p50 latency or peak throughput got worse beyond max(floor, K x noise), where
  the change is the median ratio new/base over the concurrency levels both ladders measured cleanly
  (pairing level with level removes the trend across concurrency: CPU per request falls as batching
  rises) and the noise is the standard error of that median, from the spread of the per-level ratios.
  The floors (judge/thresholds.py) cover what one run cannot see: a shift of the whole run (the
  shared machine's CPU running slower for its whole length), measured by benchmarks/check_noise.py;
- or it now fails requests at a level the baseline answered cleanly, or fails its first request.

Latency and throughput are compared only at levels where neither run was starved (the host had no
idle CPU while the workers waited for one): there they measure the neighbours, not the app. CPU per
request (CPU time the workers spent, over completions) holds on a busy host and is judged everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.core.rules import CLASS_HARM
from fastapi_tune.judge.curve import exclusion_reason
from fastapi_tune.judge.thresholds import (
    BUSY_STARVED_SHARE,
    CAPACITY_FLOOR,
    CLASS_MAX_STARVED_SHARE,
    CLASS_MIN_CONFIDENCE,
    CPU_FLOOR,
    DETREND_MIN,
    LADDER_REACH,
    LATENCY_FLOOR,
    MAX_ERROR_RATIO,
    NOISE_K,
    NOISY_BAND_FACTOR,
    POOL_WAIT_THREADS,
    SERVER_CPU_MIN_S,
    SINGLE_LEVEL_FACTOR,
    STACKS_AGREE,
)
from fastapi_tune.measure.preflight import FAILED_PREFIX
from fastapi_tune.measure.report import Endpoint, EndpointClass, Level, ProbeReport, StopReason, Verdict
from fastapi_tune.measure.stack_attribution import Hotspot, RouteProfile, ThreadKind, describe, loop_hotspot
from fastapi_tune.measure.stats import median

_BUDGET_STOPS: Final = frozenset({StopReason.TIME_BUDGET, StopReason.REQUEST_BUDGET, StopReason.INTERRUPTED})


class RouteStatus(StrEnum):
    UNCHANGED = "unchanged"
    IMPROVED = "improved"
    REGRESSED = "regressed"
    NEW = "new"
    GONE = "gone"
    INCONCLUSIVE = "inconclusive"


class Metric(StrEnum):
    """What is compared per route, as the JSON names it."""

    CPU = "cpu_per_request_ms"
    LATENCY = "p50_ms"
    CAPACITY = "peak_rps"


METRIC_LABELS: Final = {
    Metric.CPU: "CPU per request",
    Metric.LATENCY: "p50",
    Metric.CAPACITY: "peak throughput",
}
METRIC_UNITS: Final = {Metric.CPU: "ms", Metric.LATENCY: "ms", Metric.CAPACITY: "req/s"}


class Change(StrEnum):
    WORSE = "worse"
    BETTER = "better"
    SAME = "same"
    NOT_JUDGED = "not judged"


class CompareOutcome(StrEnum):
    """The whole comparison: what `check` and `compare` exit with."""

    PASSED = "passed"  # nothing regressed
    REGRESSED = "regressed"
    NOT_JUDGED = "not judged"  # no route in both runs could be judged: the runner was too busy


@dataclass(frozen=True)
class MetricJudgement:
    """One metric of one route: the values, the change, and the noise it was judged against."""

    metric: Metric
    outcome: Change
    base: float | None = None  # median over the paired levels (peak throughput: the highest)
    new: float | None = None
    change: float | None = None  # relative: median per-level ratio new/base - 1 (peak: ratio of peaks)
    noise: float | None = None  # relative standard error of that median; None from one level
    band: float | None = None  # the change had to exceed this (relative) to count
    levels: tuple[int, ...] = ()  # the concurrencies compared
    note: str = ""  # why not judged

    @property
    def label(self) -> str:
        return METRIC_LABELS[self.metric]

    @property
    def unit(self) -> str:
        return METRIC_UNITS[self.metric]


@dataclass(frozen=True)
class ClassJudgement:
    base: EndpointClass | None
    new: EndpointClass | None
    base_confidence: float | None
    new_confidence: float | None
    outcome: Change
    note: str = ""  # what confirmed the change, or why it was not judged


@dataclass(frozen=True)
class RouteComparison:
    method: str
    path: str
    status: RouteStatus
    klass: ClassJudgement | None = None
    metrics: tuple[MetricJudgement, ...] = ()
    errors: str | None = None  # the new run failed requests the baseline answered
    reasons: tuple[str, ...] = ()  # one line each: what regressed, improved, or why not judged
    culprit: Hotspot | None = None  # the app line the new run's stacks name, for a regressed route
    culprit_is_new: bool = False  # not among the baseline's hot lines

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class BaselineComparison:
    routes: tuple[RouteComparison, ...]
    busy: str | None = None  # one line when the runner was too busy to judge everything

    def count(self, status: RouteStatus) -> int:
        return sum(r.status is status for r in self.routes)

    @property
    def outcome(self) -> CompareOutcome:
        if self.count(RouteStatus.REGRESSED):
            return CompareOutcome.REGRESSED
        both = [r for r in self.routes if r.status not in (RouteStatus.NEW, RouteStatus.GONE)]
        if both and all(r.status is RouteStatus.INCONCLUSIVE for r in both):
            return CompareOutcome.NOT_JUDGED
        return CompareOutcome.PASSED


# ---------------------------------------------------------------------------------------
# Levels paired by concurrency


@dataclass(frozen=True)
class _Pair:
    concurrency: int
    base: Level
    new: Level

    @property
    def starved(self) -> bool:
        return any(lv.demand is not None and lv.demand.starved for lv in (self.base, self.new))


def _clean(levels: Sequence[Level]) -> dict[int, Level]:
    """Clean levels by concurrency (a level measured again in a second pass: the later one)."""
    return {lv.concurrency: lv for lv in levels if exclusion_reason(lv) is None}


def pair_levels(base: Sequence[Level], new: Sequence[Level]) -> list[_Pair]:
    """The concurrencies both ladders measured cleanly, with both levels."""
    a, b = _clean(base), _clean(new)
    return [_Pair(n, a[n], b[n]) for n in sorted(a.keys() & b.keys())]


def cpu_ms_per_request(level: Level) -> float | None:
    """Workers' CPU time per successful response (ms): the server's CPU cut to the counted window when
    it holds at least SERVER_CPU_MIN_S (its clock ticks are 10 ms), else the scheduler clocks (exact,
    but read around the warm-up too: on a starved host the two windows' rates differ)."""
    if level.throughput_rps <= 0:
        return None
    cut = level.server_cpu_cores
    if cut is not None and cut * level.duration_s >= SERVER_CPU_MIN_S:
        return cut / level.throughput_rps * 1000
    d = level.demand
    cores = d.on_cpu_cores if d is not None and d.workers else cut
    return None if cores is None or cores <= 0 else cores / level.throughput_rps * 1000


def _p50(level: Level) -> float | None:
    return None if level.latency_ms is None or level.latency_ms.p50 <= 0 else level.latency_ms.p50


def _rps(level: Level) -> float | None:
    return level.throughput_rps if level.throughput_rps > 0 else None


# ---------------------------------------------------------------------------------------
# Metrics


def _mad(values: Sequence[float]) -> float:
    mid = median(values)
    return median([abs(v - mid) for v in values])


def _detrended_mad(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The MAD of ys around their least-squares line over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return median([abs(y - my - slope * (x - mx)) for x, y in zip(xs, ys, strict=True)])


def median_noise(concurrencies: Sequence[int], logs: Sequence[float]) -> float | None:
    """Standard error of the median of the per-level log ratios: 1.25 x 1.4826 x MAD / sqrt(n).

    From DETREND_MIN levels on, the MAD is also taken around the ratios' trend over log concurrency
    and the smaller one kept: a serialised route's ratio grows with the queue, which is the
    regression's shape, not noise. None for one level: no spread to measure.
    """
    if len(logs) < 2:
        return None
    mad = _mad(logs)
    if len(logs) >= DETREND_MIN and len(set(concurrencies)) == len(concurrencies):
        mad = min(mad, _detrended_mad([math.log2(c) for c in concurrencies], logs))
    return 1.2533 * 1.4826 * mad / math.sqrt(len(logs))


@dataclass(frozen=True)
class _MetricRule:
    metric: Metric
    value: Callable[[Level], float | None]
    floor: float
    worse_when_up: bool
    peak: bool  # compare the highest value of each run, not the median ratio
    unstarved_only: bool


_RULES: Final = (
    _MetricRule(Metric.CPU, cpu_ms_per_request, CPU_FLOOR, True, False, False),
    _MetricRule(Metric.LATENCY, _p50, LATENCY_FLOOR, True, False, True),
    _MetricRule(Metric.CAPACITY, _rps, CAPACITY_FLOOR, False, True, True),
)


def judge_metric(rule: _MetricRule, pairs: Sequence[_Pair]) -> MetricJudgement:
    """One metric over the paired levels: the change against max(floor, K x noise)."""
    usable = [p for p in pairs if not (rule.unstarved_only and p.starved)]
    values = [
        (p.concurrency, vb, vn) for p in usable if (vb := rule.value(p.base)) and (vn := rule.value(p.new))
    ]
    if not values:
        why = (
            "no level with CPU to spare in both runs"
            if pairs and rule.unstarved_only
            else "no level in common"
        )
        if pairs and rule.metric is Metric.CPU:
            why = "the server's CPU was not observed"
        return MetricJudgement(rule.metric, Change.NOT_JUDGED, note=why)
    logs = [math.log(vn / vb) for _, vb, vn in values]
    if rule.peak:
        base, new = max(v[1] for v in values), max(v[2] for v in values)
        shift = math.log(new / base)
    else:
        base, new = median([v[1] for v in values]), median([v[2] for v in values])
        shift = median(logs)
    noise = median_noise([v[0] for v in values], logs)
    floor = math.log1p(rule.floor)
    band = floor * SINGLE_LEVEL_FACTOR if noise is None else max(floor, NOISE_K * noise)
    worse = shift if rule.worse_when_up else -shift
    outcome = Change.WORSE if worse > band else Change.BETTER if worse < -band else Change.SAME
    # Within a band this wide "same" would claim what the levels cannot tell: not judged. (A change
    # beyond even such a band still counts.)
    too_noisy = outcome is Change.SAME and band > NOISY_BAND_FACTOR * floor
    return MetricJudgement(
        rule.metric,
        Change.NOT_JUDGED if too_noisy else outcome,
        note=f"too noisy to tell: the levels disagree by +-{math.expm1(noise or 0):.0%}" if too_noisy else "",
        base=base,
        new=new,
        change=math.expm1(shift),
        noise=None if noise is None else math.expm1(noise),
        band=math.expm1(band),
        levels=tuple(v[0] for v in values),
    )


# ---------------------------------------------------------------------------------------
# Class


def stacks_confirm(profile: RouteProfile | None, cls: EndpointClass) -> str | None:
    """What the stacks show of `cls`'s signature (one line), or None when they do not show it.

    Not threadpool-bound: a `def` route doing blocking I/O fills pool threads at any high level, bound
    by the limiter or not (unchanged runs showed 21-30 busy threads per worker either way)."""
    if profile is None:
        return None
    loop, pool = profile.loop, profile.threadpool
    if cls is EndpointClass.LOOP_BLOCKING and (loop.app_blocked or 0) >= STACKS_AGREE:
        return loop_hotspot(profile, blocked=True)
    if cls is EndpointClass.CPU_BOUND and (loop.app_running or 0) >= STACKS_AGREE:
        return loop_hotspot(profile, blocked=False)
    if cls is EndpointClass.POOL_BOUND and pool.pool_wait_threads >= POOL_WAIT_THREADS:
        return describe(profile)
    return None


def _new_in_stacks(base: Endpoint, new: Endpoint, cls: EndpointClass, base_confidence: float) -> str | None:
    """The new class's signature in this run's stacks when it was not in the baseline's (a baseline
    misread on a starved host must not make the same code look changed). Without baseline stacks: a
    loop blocked in app code counts (neither computing nor awaiting code shows it), the others only
    against a sure baseline verdict."""
    seen = stacks_confirm(new.profile, cls)
    if seen is None:
        return None
    if base.profile is None:
        sure = base_confidence >= CLASS_MIN_CONFIDENCE or cls is EndpointClass.LOOP_BLOCKING
        return seen if sure else None
    return None if stacks_confirm(base.profile, cls) is not None else seen


def _starved_share(levels: Sequence[Level]) -> float:
    clean = list(_clean(levels).values())
    return sum(lv.demand is not None and lv.demand.starved for lv in clean) / max(len(clean), 1)


def _top(e: Endpoint) -> int:
    return max(_clean(e.levels), default=0)


def _cut_short(a: Endpoint, b: Endpoint) -> bool:
    """`a`'s ladder stopped for the budget below half of `b`'s top: it did not reach b's knee."""
    return a.stop_reason in _BUDGET_STOPS and _top(a) < LADDER_REACH * _top(b)


def _why_unbelieved(base: Endpoint, new: Endpoint, vb: Verdict, vn: Verdict) -> str | None:
    """Why a class change without the stacks' word is not believed, or None when it is."""
    low = min(vb.confidence, vn.confidence)
    if low < CLASS_MIN_CONFIDENCE:
        return f"a verdict is unsure (confidence {low:.2f} < {CLASS_MIN_CONFIDENCE})"
    starved = max(_starved_share(base.levels), _starved_share(new.levels))
    if starved > CLASS_MAX_STARVED_SHARE:
        return f"read on a host with no idle CPU ({starved:.0%} of the levels starved)"
    if _cut_short(base, new) or _cut_short(new, base):
        return f"the ladders stopped at c={_top(base)} and c={_top(new)} (time budget): not comparable"
    return None


def judge_class(base: Endpoint, new: Endpoint) -> ClassJudgement:
    """Whether the route's class moved in the harm order, and what makes that believable."""
    vb, vn = base.verdict, new.verdict
    head = (
        None if vb is None else vb.cls,
        None if vn is None else vn.cls,
        None if vb is None else vb.confidence,
        None if vn is None else vn.confidence,
    )
    if vb is None or vn is None or vb.cls not in CLASS_HARM or vn.cls not in CLASS_HARM:
        return ClassJudgement(*head, Change.NOT_JUDGED, "a verdict is missing or inconclusive")
    hb, hn = CLASS_HARM[vb.cls], CLASS_HARM[vn.cls]
    if hb == hn:
        return ClassJudgement(*head, Change.SAME)
    outcome = Change.WORSE if hn > hb else Change.BETTER
    if vn.cls is EndpointClass.STALLED:
        return ClassJudgement(*head, outcome, "requests in flight and none completed")
    seen = _new_in_stacks(base, new, vn.cls, vb.confidence)
    if seen is not None:
        return ClassJudgement(*head, outcome, f"the stacks show it: {seen}")
    why = _why_unbelieved(base, new, vb, vn)
    if why is not None:
        return ClassJudgement(
            *head, Change.NOT_JUDGED, f"class change not judged: {why}, and the stacks show nothing new"
        )
    return ClassJudgement(*head, outcome, f"confidence {vb.confidence:.2f} -> {vn.confidence:.2f}")


# ---------------------------------------------------------------------------------------
# Errors


def judge_errors(base: Endpoint, new: Endpoint) -> str | None:
    """The first level where the new run failed requests that the baseline's level answered cleanly."""
    clean = _clean(base.levels)
    for lv in sorted(new.levels, key=lambda x: x.concurrency):
        if lv.concurrency not in clean or not lv.requests:
            continue
        failed = lv.errors / lv.requests
        if failed > MAX_ERROR_RATIO or lv.stalled or lv.throughput_rps <= 0:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(lv.errors_by_kind.items())) or "none completed"
            return (
                f"{failed:.0%} of requests failed at c={lv.concurrency} ({kinds}) where the baseline"
                f" failed {clean[lv.concurrency].errors} of {clean[lv.concurrency].requests}"
            )
    return None


# ---------------------------------------------------------------------------------------
# A route


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {unit}"


def band_text(band: float) -> str:
    """A band symmetric in ratio: +50% up is the same as -33% down."""
    return f"+{band:.0%}/{1 / (1 + band) - 1:.0%}"


def metric_line(m: MetricJudgement) -> str:
    """`p50 21.9 -> 83.1 ms (+268%; band +50%/-33%, noise +-1% over 4 levels)`."""
    if m.outcome is Change.NOT_JUDGED:
        return f"{m.label}: not judged ({m.note})"
    noise = (
        "one level, no spread" if m.noise is None else f"noise +-{m.noise:.0%} over {len(m.levels)} levels"
    )
    return (
        f"{m.label} {_fmt(m.base, '').strip()} -> {_fmt(m.new, m.unit)} ({m.change or 0:+.0%};"
        f" band {band_text(m.band or 0)}, {noise})"
    )


def culprit(profile: RouteProfile | None, cls: EndpointClass | None) -> Hotspot | None:
    """The app line to point at: the thread kind the class is about first, else the hottest line."""
    if profile is None or not profile.hotspots:
        return None
    pool = cls in (EndpointClass.THREADPOOL_BOUND, EndpointClass.POOL_BOUND)
    kind = ThreadKind.THREADPOOL if pool else ThreadKind.EVENT_LOOP
    return next((h for h in profile.hotspots if h.thread is kind), profile.hotspots[0])


def _spots(profile: RouteProfile | None) -> set[tuple[str, int]]:
    return set() if profile is None else {(h.file, h.line) for h in profile.hotspots}


def compare_routes(base: Endpoint, new: Endpoint) -> RouteComparison:
    """One route measured in both runs: its class, metrics and errors, and the status they add up to."""
    klass = judge_class(base, new)
    pairs = pair_levels(base.levels, new.levels)
    metrics = tuple(judge_metric(rule, pairs) for rule in _RULES)
    errors = judge_errors(base, new)
    cls_text = f"{klass.base} -> {klass.new}: {klass.note}"
    worse = [cls_text] if klass.outcome is Change.WORSE else []
    worse += [metric_line(m) for m in metrics if m.outcome is Change.WORSE]
    worse += [errors] if errors else []
    better = [cls_text] if klass.outcome is Change.BETTER else []
    better += [metric_line(m) for m in metrics if m.outcome is Change.BETTER]
    judged = klass.outcome is not Change.NOT_JUDGED or any(
        m.outcome is not Change.NOT_JUDGED for m in metrics
    )
    if worse:
        status, reasons = RouteStatus.REGRESSED, worse
    elif better:
        status, reasons = RouteStatus.IMPROVED, better
    elif judged:
        status, reasons = RouteStatus.UNCHANGED, []
    else:
        notes = [klass.note, *(f"{m.label}: {m.note}" for m in metrics)]
        status, reasons = (
            RouteStatus.INCONCLUSIVE,
            ["nothing could be judged: " + "; ".join(filter(None, notes))],
        )
    if (
        klass.outcome is Change.NOT_JUDGED
        and klass.base != klass.new
        and status is not RouteStatus.INCONCLUSIVE
    ):
        reasons.append(klass.note)
    spot = culprit(new.profile, klass.new) if status is RouteStatus.REGRESSED else None
    return RouteComparison(
        new.method,
        new.path,
        status,
        klass,
        metrics,
        errors,
        tuple(reasons),
        spot,
        spot is not None and (spot.file, spot.line) not in _spots(base.profile),
    )


# ---------------------------------------------------------------------------------------
# Two reports


def _busy_note(base: ProbeReport, new: ProbeReport) -> str | None:
    """One line when the new run's host was too busy to judge latency, throughput and classes everywhere."""
    levels = [lv for e in new.endpoints for lv in e.levels if lv.demand is not None]
    starved = sum(lv.demand is not None and lv.demand.starved for lv in levels)
    if not levels or starved <= BUSY_STARVED_SHARE * len(levels):
        return None
    facts = [f"{starved} of {len(levels)} levels had no idle CPU"]
    if new.host_load is not None:
        facts.append(f"other processes used {new.host_load.others_cores:.1f} cores when it started")
    return (
        f"the runner was busy ({'; '.join(facts)}): latency and throughput are judged only at levels"
        " with CPU to spare, class changes where the stacks show them; a route with nothing left to"
        " judge is inconclusive, not a regression"
    )


def _key(method: str, path: str) -> tuple[str, str]:
    return method.upper(), path


def check_same_app(base: ProbeReport, new: ProbeReport, base_name: str, new_name: str) -> None:
    """Refuse to compare reports of two different apps (one line, exit 3)."""
    a, b = base.settings.get("app"), new.settings.get("app")
    if isinstance(a, str) and isinstance(b, str) and a != b:
        raise BadInputError(f"{base_name} is a report of {a}, {new_name} of {b}: compare reports of one app")
    root_a, root_b = urlsplit(base.target).path.rstrip("/"), urlsplit(new.target).path.rstrip("/")
    if root_a != root_b:
        raise BadInputError(
            f"{base_name} probed {root_a or '/'}, {new_name} probed {root_b or '/'}:"
            " compare reports of one app"
        )
    ka = {_key(e.method, e.path) for e in base.endpoints}
    kb = {_key(e.method, e.path) for e in new.endpoints} | {_key(s.method, s.path) for s in new.skipped}
    if ka and kb and not ka & kb:
        sample = ", ".join(f"{m} {p}" for m, p in sorted(ka)[:2])
        raise BadInputError(
            f"{new_name} has none of the routes {base_name} measured ({sample}...): a report of another app?"
        )


def _missing(base: Endpoint, new: ProbeReport) -> RouteComparison:
    """A route the baseline measured and the new run did not: failing now, not reached, or gone."""
    key = _key(base.method, base.path)
    skipped = next((s for s in new.skipped if _key(s.method, s.path) == key), None)
    head = (base.method, base.path)
    if skipped is None:
        return RouteComparison(*head, RouteStatus.GONE, reasons=("not in the app any more",))
    if skipped.reason.startswith(FAILED_PREFIX):
        return RouteComparison(
            *head, RouteStatus.REGRESSED, reasons=(f"now fails its first request: {skipped.reason}",)
        )
    return RouteComparison(
        *head, RouteStatus.INCONCLUSIVE, reasons=(f"not measured in this run: {skipped.reason}",)
    )


def compare_reports(base: ProbeReport, new: ProbeReport) -> BaselineComparison:
    """Every route of either report, judged; routes in the baseline's order, then the new ones."""
    fresh = {_key(e.method, e.path): e for e in new.endpoints}
    routes: list[RouteComparison] = []
    for b in base.endpoints:
        n = fresh.pop(_key(b.method, b.path), None)
        routes.append(_missing(b, new) if n is None else compare_routes(b, n))
    for n in fresh.values():
        cls = n.verdict.cls if n.verdict is not None else None
        klass = ClassJudgement(
            None, cls, None, None if n.verdict is None else n.verdict.confidence, Change.NOT_JUDGED
        )
        routes.append(
            RouteComparison(n.method, n.path, RouteStatus.NEW, klass, reasons=(f"new route: {cls}",))
        )
    return BaselineComparison(tuple(routes), _busy_note(base, new))


def all_new(report: ProbeReport) -> BaselineComparison:
    """A first run, with no baseline yet: every route it measured is new."""
    return compare_reports(replace(report, endpoints=(), skipped=()), report)
