"""verify's judgement, pure: which configurations to run, how rounds combine, what is best beyond the
noise, which runs are not comparable, whether the objective was met, and the capacity search's steps.

verify.py measures; this module decides from what it measured; render_verify.py only formats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from fastapi_tune.measure.histogram import LatencyHistogram
from fastapi_tune.measure.stats import median
from fastapi_tune.plan.slo import PERCENTILES, Measured, Objective, meets

RECOMMENDED: Final = "recommended"
RULE_OF_THUMB: Final = "rule-of-thumb"
SINGLE_WORKER: Final = "single-worker"
# A run failing more than this share of its requests measured something else than the config
# (crashes, timeouts, a full backlog): its throughput and latency are not compared.
MAX_COMPARABLE_ERROR_RATIO: Final = 0.01
# The capacity search: the first step at half the closed-loop throughput (a rate the config
# should hold), then doubling or halving until a step fails and one passes, then bisection until
# the bracket is within 5% (finer than run-to-run noise on a shared machine), at most 6 steps.
CAPACITY_START: Final = 0.5
CAPACITY_RESOLUTION: Final = 0.05
CAPACITY_MAX_STEPS: Final = 6
# Below 1 req/s a 2 s step holds too few requests to judge a percentile.
CAPACITY_MIN_RPS: Final = 1.0
# An open loop fell behind its rate (verify --rate, each capacity step) when the server served less
# than this share of the rate inside the window: at steady state what ends in a window is what
# started in it, less a request or two on the wire at each edge; 5% short is a queue growing by
# 5% of the rate every second, which no rate can be sustained with.
SERVED_SHARE_MIN: Final = 0.95
# A window's edges each cut one request that a steady server answers either side of them: at low
# rates (2 req/s over 3 s is 6 requests) that alone would be 17% short.
SERVED_SLACK_PER_ROUND: Final = 2
# ... or when the latency of the window's last second (openloop.SEGMENT_S) is at least this many
# times the first second's p50, and this much more: a queue growing through the window. Past
# capacity by a share f, the wait grows by f x the window (5% over 6 s: +300 ms), whatever the
# service time; a machine's hiccup moves a whole second's median far less.
GROWTH_RATIO: Final = 2.0
GROWTH_MIN_MS: Final = 50.0
# Fewer responses than this in either second say nothing about its median.
GROWTH_MIN_SAMPLES: Final = 10


@dataclass(frozen=True)
class Planned:
    """One configuration to measure: its label, its worker count (None: the config's own), and the
    other names it stands for (the same effective worker count is measured once)."""

    label: str
    workers: int | None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RateCheck:
    """An open-loop run at a fixed arrival rate (rounds merged): latency from each request's start."""

    rate_rps: float  # the rate asked for
    duration_s: float
    intended: int  # arrivals scheduled in the counted window
    completed: int  # responses to them, any status, whenever they ended (after the window too)
    failed: int  # error statuses, transport errors and timeouts, dropped starts, unsettled at the end
    late: int  # sent more than openloop.LATE_START_S after the intended start
    dropped: int  # never sent: --max-in-flight requests were outstanding
    histogram: LatencyHistogram
    client_cpu_cores: float
    # No defaults: a check that does not say what it served would read as having fallen behind.
    sent: int  # started (on time or late): the arrival rate the generator held
    served: int  # responses that ended inside the window: the rate the server kept up with
    backlog_at_end: int = 0  # requests outstanding when the window closed (largest over rounds)
    drain_s: float | None = None  # from the window's end until they settled (longest over rounds)
    first_second: LatencyHistogram = field(default_factory=lambda: LatencyHistogram.of(()))
    last_second: LatencyHistogram = field(default_factory=lambda: LatencyHistogram.of(()))
    rounds: int = 1

    @property
    def arrival_rps(self) -> float:
        """Requests started per second of window (what the generator held)."""
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def served_rps(self) -> float:
        """Responses that ended inside the window, per second (what the server kept up with)."""
        return self.served / self.duration_s if self.duration_s > 0 else 0.0

    def percentiles(self) -> Mapping[float, float]:
        """p50 .. p99.9 (ms) from the merged histogram, NaN when nothing completed."""
        return self.histogram.percentiles(PERCENTILES)

    def measured(self) -> Measured:
        return Measured(self.percentiles(), self.intended, self.failed, self.histogram.total)


def merge_checks(a: RateCheck, b: RateCheck) -> RateCheck:
    """Two rounds at the same rate as one: counts added, histograms merged, the worst backlog kept."""
    drains = [d for d in (a.drain_s, b.drain_s) if d is not None]
    return RateCheck(
        rate_rps=a.rate_rps,
        duration_s=a.duration_s + b.duration_s,
        intended=a.intended + b.intended,
        completed=a.completed + b.completed,
        failed=a.failed + b.failed,
        late=a.late + b.late,
        dropped=a.dropped + b.dropped,
        histogram=a.histogram.merge(b.histogram),
        client_cpu_cores=max(a.client_cpu_cores, b.client_cpu_cores),
        sent=a.sent + b.sent,
        served=a.served + b.served,
        backlog_at_end=max(a.backlog_at_end, b.backlog_at_end),
        drain_s=max(drains) if drains else None,
        first_second=a.first_second.merge(b.first_second),
        last_second=a.last_second.merge(b.last_second),
        rounds=a.rounds + b.rounds,
    )


def _p50_growth(check: RateCheck) -> tuple[float, float] | None:
    """(first second's p50, last second's p50) in ms, None when either holds too few responses."""
    first, last = check.first_second, check.last_second
    if first.total < GROWTH_MIN_SAMPLES or last.total < GROWTH_MIN_SAMPLES:
        return None
    return first.percentile(50.0), last.percentile(50.0)


def _duration(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def fell_behind(check: RateCheck) -> str | None:
    """'beyond capacity: served 98 of 143 req/s; p50 grew from 12 ms to 3.4 s; ...' when the server
    fell behind the rate (SERVED_SHARE_MIN, GROWTH_*), None when it kept up."""
    growth = _p50_growth(check)
    slack = SERVED_SLACK_PER_ROUND * check.rounds
    short = check.served + slack < SERVED_SHARE_MIN * check.rate_rps * check.duration_s
    grew = growth is not None and growth[1] >= max(GROWTH_RATIO * growth[0], growth[0] + GROWTH_MIN_MS)
    if not (short or grew):
        return None
    parts = [f"served {check.served_rps:.0f} of {check.rate_rps:g} req/s"]
    if growth is not None and growth[1] > growth[0]:
        parts.append(f"p50 grew from {_duration(growth[0])} to {_duration(growth[1])}")
    if check.backlog_at_end:
        drained = f", drained in {check.drain_s:.1f} s" if check.drain_s is not None else ""
        parts.append(f"{check.backlog_at_end} requests in flight at the window's end{drained}")
    if check.dropped:
        parts.append(f"{check.dropped} starts dropped at --max-in-flight")
    return "beyond capacity: " + "; ".join(parts)


def rate_verdict(objective: Objective, check: RateCheck) -> tuple[bool, str]:
    """The objective at a rate: a server that fell behind misses it, whatever the percentiles of
    the requests it did complete say (the rest were still queued when the window closed)."""
    ok, text = meets(objective, check.measured())
    behind = fell_behind(check)
    if behind is None:
        return ok, text
    if ok:
        return False, f"missed: {behind}; the requests it completed alone read {text.removeprefix('met: ')}"
    return False, f"missed: {behind}; {text.removeprefix('missed: ')}"


@dataclass(frozen=True)
class Capacity:
    """The highest arrival rate found to meet the objective, and every step that found it."""

    rate_rps: float | None  # None: not even the lowest rate tried met it
    steps: tuple[tuple[float, bool, str], ...]  # (rate, met, the objective's verdict)


@dataclass(frozen=True)
class Run:
    """One server configuration under the same load."""

    label: str
    workers: int  # worker processes observed after boot
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mib: float  # total RSS of the worker processes at the end of the run
    server_cpu_cores: float
    client_cpu_cores: float
    rounds_rps: tuple[float, ...] = ()  # throughput of each round, for the spread
    aliases: tuple[str, ...] = ()  # other configurations with the same worker count: measured once
    errors_by_status: Mapping[int, int] = field(default_factory=dict)  # error responses by status
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)  # 4xx, 5xx, 429, timeout, reset ...
    at_rate: RateCheck | None = None  # verify --rate: the open loop at that rate
    capacity: Capacity | None = None  # verify --capacity: the highest rate meeting the objective
    notes: tuple[str, ...] = ()  # measurements that started on a server that had not settled

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def comparable(self) -> bool:
        return self.requests > 0 and self.error_ratio <= MAX_COMPARABLE_ERROR_RATIO

    @property
    def names(self) -> str:
        """The label and its aliases: 'recommended = rule-of-thumb'."""
        return " = ".join((self.label, *self.aliases))

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the rounds' throughput; None with fewer than two rounds."""
        if len(self.rounds_rps) < 2:
            return None
        mid = median(self.rounds_rps)
        return (max(self.rounds_rps) - min(self.rounds_rps)) / mid if mid > 0 else None


@dataclass(frozen=True)
class Comparison:
    """Which run was best (if beyond the noise), how the recommendation compares, what is not comparable."""

    best: Run  # the highest throughput among the comparable runs
    recommended: Run | None
    ratio_to_best: float | None  # recommended throughput / best throughput
    memory_vs_rule: float | None  # recommended RSS / rule-of-thumb RSS
    line: str
    noise: float | None = None  # the largest round-to-round spread among the comparable runs
    tied: tuple[str, ...] = ()  # labels within the noise of the best (the best included)
    best_is_clear: bool = False  # the best beat every other run by more than the noise
    not_comparable: tuple[str, ...] = ()  # labels whose errors exclude them, with why


SWEEP_MAX_WORKERS: Final = 32


def plan_runs(rule_of_thumb: int, effective_cpus: float, configured: int, sweep: bool) -> list[Planned]:
    """The configurations in order, each effective worker count once (its other names as aliases)."""
    wanted: list[tuple[str, int | None]] = [
        (RECOMMENDED, None),
        (RULE_OF_THUMB, rule_of_thumb),
        (SINGLE_WORKER, 1),
    ]
    if sweep:
        # A CPU override may say 1024: each count boots a gunicorn, so the sweep stops at a size
        # one machine's verify can run in minutes.
        top = min(SWEEP_MAX_WORKERS, max(2, math.ceil(2 * effective_cpus)))
        wanted += [(f"sweep-{n}", n) for n in range(1, top + 1)]
    by_count: dict[int, Planned] = {}
    for label, workers in wanted:
        count = configured if workers is None else workers
        if count in by_count:
            seen = by_count[count]
            by_count[count] = Planned(seen.label, seen.workers, (*seen.aliases, label))
        else:
            by_count[count] = Planned(label, workers)
    return list(by_count.values())


def combine(rounds: Sequence[Run]) -> Run:
    """One configuration's rounds as one run: medians of rates and latencies; errors and requests
    summed over the rounds (so `errors / requests` is the error ratio of all the rounds)."""
    first = rounds[0]
    p50s = [r.p50_ms for r in rounds if r.p50_ms is not None]
    p99s = [r.p99_ms for r in rounds if r.p99_ms is not None]
    by_status: dict[int, int] = {}
    by_kind: dict[str, int] = {}
    for r in rounds:
        for s, n in r.errors_by_status.items():
            by_status[s] = by_status.get(s, 0) + n
        for k, n in r.errors_by_kind.items():
            by_kind[k] = by_kind.get(k, 0) + n
    checks = [r.at_rate for r in rounds if r.at_rate is not None]
    at_rate = checks[0] if checks else None
    for c in checks[1:]:
        at_rate = merge_checks(at_rate, c) if at_rate is not None else c
    return Run(
        label=first.label,
        workers=first.workers,
        requests=sum(r.requests for r in rounds),
        errors=sum(r.errors for r in rounds),
        throughput_rps=median([r.throughput_rps for r in rounds]),
        p50_ms=median(p50s) if p50s else None,
        p99_ms=median(p99s) if p99s else None,
        rss_mib=max(r.rss_mib for r in rounds),
        server_cpu_cores=round(median([r.server_cpu_cores for r in rounds]), 3),
        client_cpu_cores=round(median([r.client_cpu_cores for r in rounds]), 3),
        rounds_rps=tuple(round(r.throughput_rps, 1) for r in rounds),
        aliases=first.aliases,
        errors_by_status=by_status,
        errors_by_kind=by_kind,
        at_rate=at_rate,
        capacity=next((r.capacity for r in rounds if r.capacity is not None), None),
        notes=tuple(dict.fromkeys(n for r in rounds for n in r.notes)),
    )


def error_text(run: Run) -> str:
    """'12 of 900 (1.3%): 503 x 10, reset x 2', or '0'."""
    if not run.errors:
        return "0"
    codes = [f"{s} x {n}" for s, n in sorted(run.errors_by_status.items())]
    codes += [f"{k} x {n}" for k, n in sorted(run.errors_by_kind.items()) if not k[0].isdigit()]
    detail = f": {', '.join(codes)}" if codes else ""
    return f"{run.errors} of {run.requests} ({run.error_ratio:.1%}){detail}"


def _not_comparable(runs: Sequence[Run]) -> list[str]:
    return [
        f"{r.names} ({r.workers} workers) failed {error_text(r)}, more than"
        f" {MAX_COMPARABLE_ERROR_RATIO:.0%}: its figures measure the failures, not the config"
        for r in runs
        if r.requests and not r.comparable
    ] + [f"{r.names}: no request completed" for r in runs if not r.requests]


def _best_part(best: Run, tied: Sequence[Run], noise: float | None) -> tuple[str, bool]:
    """How the best run is named: clearly, or as a tie within the noise."""
    if noise is None:
        return (
            f"highest throughput {best.names} ({best.workers} workers, {best.throughput_rps:.1f} req/s);"
            " one round, so no noise was measured and no best is named (--repeat 3 measures it)",
            False,
        )
    if len(tied) > 1:
        names = ", ".join(f"{r.names} ({r.workers})" for r in tied)
        return f"tie within noise ({noise:.0%} between rounds): {names}", False
    return f"best beyond the noise ({noise:.0%} between rounds): {best.names} ({best.workers} workers)", True


def _recommended_part(rec: Run, best: Run, rule: Run | None) -> str:
    line = (
        f"recommended ({rec.workers} workers): {rec.throughput_rps:.1f} req/s,"
        f" {rec.throughput_rps / best.throughput_rps:.0%} of the highest ({best.names}, {best.workers}"
        f" workers, {best.throughput_rps:.1f} req/s)"
    )
    if rule is not None and rule is not rec and rule.rss_mib:
        line += (
            f"; rule of thumb ({rule.workers} workers): {rule.throughput_rps:.1f} req/s with"
            f" {rule.rss_mib:.0f} MiB of workers vs {rec.rss_mib:.0f} MiB recommended"
        )
        if rec.p99_ms is not None and rule.p99_ms is not None and rec.p99_ms > 1.25 * rule.p99_ms:
            # Fewer workers each queue more of the same load: the tail grows before the median.
            line += (
                f"; but p99 is {rec.p99_ms:.0f} ms vs {rule.p99_ms:.0f} ms with the rule of thumb"
                " under this load: if such concurrency is real and the tail matters, weigh it"
            )
    if len(rec.rounds_rps) > 1:
        low, high = min(rec.rounds_rps), max(rec.rounds_rps)
        line += f"; the recommended config's rounds ranged {low:.1f}-{high:.1f} req/s (noise)"
    return line


def _find(runs: Sequence[Run], label: str) -> Run | None:
    return next((r for r in runs if r.label == label or label in r.aliases), None)


def judge(runs: Sequence[Run]) -> Comparison | None:
    """Which run was best beyond the noise, how the recommendation compares, which runs are out."""
    clean = [r for r in runs if r.comparable]
    out = _not_comparable(runs)
    if not clean:
        return None
    best = max(clean, key=lambda r: r.throughput_rps)
    spreads = [s for r in clean if (s := r.spread) is not None]
    noise = max(spreads) if spreads else None
    tied = [r for r in clean if noise is not None and r.throughput_rps >= best.throughput_rps * (1 - noise)]
    best_text, clear = _best_part(best, tied, noise)
    rec, rule = _find(runs, RECOMMENDED), _find(runs, RULE_OF_THUMB)
    ratio = rec.throughput_rps / best.throughput_rps if rec in clean and best.throughput_rps else None
    memory = rec.rss_mib / rule.rss_mib if rec and rule and rule.rss_mib else None
    parts = [_recommended_part(rec, best, rule)] if rec is not None and ratio is not None else []
    parts.append(best_text)
    parts += [
        f"at {r.at_rate.rate_rps:g} req/s, {r.names} ({r.workers} workers) fell behind: {line}"
        for r in runs
        if r.at_rate is not None and (line := fell_behind(r.at_rate)) is not None
    ]
    if out:
        parts.append("not comparable: " + "; ".join(out))
    return Comparison(
        best=best,
        recommended=rec,
        ratio_to_best=ratio,
        memory_vs_rule=memory,
        line="; ".join(parts),
        noise=noise,
        tied=tuple(r.label for r in tied),
        best_is_clear=clear,
        not_comparable=tuple(out),
    )


def objective_verdict(run: Run, objective: Objective) -> tuple[bool, str] | None:
    """The objective at the run's open-loop rate: (met, one line), None when no rate was run."""
    check = run.at_rate
    if check is None:
        return None
    ok, text = rate_verdict(objective, check)
    lag = f"; {check.late} late and {check.dropped} dropped starts" if check.late or check.dropped else ""
    return ok, (
        f"{run.names} ({run.workers} workers) at {check.rate_rps:g} req/s (arrived"
        f" {check.arrival_rps:.1f}, served {check.served_rps:.1f} inside the window): objective"
        f" {objective.describe()} {text}{lag}"
    )


def next_rate(start_rps: float, steps: Sequence[tuple[float, bool]]) -> float | None:
    """The capacity search's next rate after `steps` (rate, met); None when it is done."""
    if not steps:
        return max(CAPACITY_MIN_RPS, start_rps)
    if len(steps) >= CAPACITY_MAX_STEPS:
        return None
    failed = [r for r, ok in steps if not ok]
    high = min(failed) if failed else None
    passed = [r for r, ok in steps if ok and (high is None or r < high)]
    low = max(passed) if passed else None
    if high is None:
        assert low is not None
        return low * 2
    if low is None:
        return high / 2 if high / 2 >= CAPACITY_MIN_RPS else None
    if (high - low) / high <= CAPACITY_RESOLUTION:
        return None
    return (low + high) / 2


def capacity_of(steps: Sequence[tuple[float, bool, str]]) -> Capacity:
    """The highest rate met below the lowest rate missed (a noisy pass above a miss does not count)."""
    failed = [r for r, ok, _ in steps if not ok]
    high = min(failed) if failed else math.inf
    passed = [r for r, ok, _ in steps if ok and r < high]
    return Capacity(rate_rps=max(passed) if passed else None, steps=tuple(steps))


def weighted_order(weights: Sequence[float], max_slots: int = 100) -> list[int]:
    """Indices into `weights` in a smooth round robin (nginx's): each appears in proportion to its
    weight, spread out rather than in runs; the weights are scaled to at most `max_slots` slots."""
    positive = [w for w in weights if w > 0]
    if not positive:
        raise ValueError("at least one weight must be > 0")
    scale = max_slots / sum(positive)
    slots = [max(1, round(w * scale)) if w > 0 else 0 for w in weights]
    g = math.gcd(*[s for s in slots if s])
    slots = [s // g for s in slots]
    current = [0] * len(slots)
    order: list[int] = []
    for _ in range(sum(slots)):
        current = [c + s for c, s in zip(current, slots, strict=True)]
        pick = max(range(len(slots)), key=lambda i: current[i])
        current[pick] -= sum(slots)
        order.append(pick)
    return order
