"""The probe: discovery, then a ladder of closed-loop bursts per endpoint, measured honestly.

Measurement only: the probe returns levels, and the command's flow hands them to classify.py. The
ladder's stopping rules look at throughput and errors (to spend the time budget where it tells
something), but the reading of a curve is not theirs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import httpx

from fastapi_tune import __version__, checks
from fastapi_tune.deadline import within
from fastapi_tune.demand import DemandWatcher, HostBusy, LevelDemand, demand_between, host_busy_now, supported
from fastapi_tune.discovery import (
    Operation,
    apply_excludes,
    discover,
    document_routes,
    explicit_operations,
    fetch_json,
    parse_body_option,
    parse_endpoint,
    parse_header,
    parse_param_option,
    resolve_target,
)
from fastapi_tune.errors import TargetUnreachableError, UsageError
from fastapi_tune.host import HostFacts
from fastapi_tune.loadgen import (
    BurstResult,
    LiveCount,
    RequestSpec,
    opening_s,
    run_burst,
)
from fastapi_tune.observe import ServerWatcher, find_server, server_cwd
from fastapi_tune.preflight import json_getter, preflight_all, resolve_ids
from fastapi_tune.redact import redact_headers, redact_url
from fastapi_tune.report import (
    Endpoint,
    Latency,
    Level,
    ProbeReport,
    ServerInfo,
    Skipped,
    StopReason,
    route_name,
)
from fastapi_tune.rules import P99_MIN_SAMPLES, THREAD_TOKENS_PER_WORKER
from fastapi_tune.samples import Body
from fastapi_tune.signals import stop_on_signals
from fastapi_tune.stack_attribution import attribute
from fastapi_tune.stacks import StackSample, Unavailable, sample_workers
from fastapi_tune.stats import summarize

DEFAULT_MAX_CONCURRENCY: Final = 128
# A level counts at least this many completions when the time allows, so that c=1 on a 100 ms
# route is not judged from five requests (one request more or less would move it by 20%).
_MIN_COMPLETIONS: Final = 15
_MAX_LEVEL_S: Final = 3.0
# One Python thread drives the generator: near a full core, it and not the app is the limit.
CLIENT_SATURATED_CORES: Final = 0.85
# Above this share of failed requests a level is not evidence and the ladder stops politely.
ERROR_STOP_RATIO: Final = 0.05
# A worker below a quarter of the busiest one's CPU, while the server used at least 0.2 cores.
WORKER_IMBALANCE_RATIO: Final = 0.25
WORKER_IMBALANCE_MIN_CORES: Final = 0.2
# Saturated: two doublings of concurrency bought less than this gain in throughput.
_SATURATION_GAIN: Final = 1.15
# The threadpool knee sits at 40 x workers (AnyIO's default limiter); to see it plateau the
# ladder must reach well past it.
_KNEE_MARGIN: Final = 1.5
_EXTENSION_CAP: Final = 1024


@dataclass(frozen=True)
class ProbeOptions:
    """What the user asked for; validated by `check_options`."""

    url: str
    openapi: str | None = None
    endpoints: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    levels: tuple[int, ...] | None = None
    max_concurrency: int | None = None
    duration_s: float | None = None
    warmup_s: float = 0.2
    max_seconds: float = 60.0
    max_requests: int = 500_000
    timeout_s: float = 10.0
    verify_tls: bool = True
    allow_remote: bool = False
    base_duration_s: float = 0.5
    unsafe: bool = False  # drive POST/PUT/PATCH/DELETE from the document too
    params: tuple[str, ...] = ()  # --param NAME=VALUE
    bodies: tuple[str, ...] = ()  # --body "POST /items=@body.json"
    preflight: bool = True  # one request per endpoint first; failing ones are skipped
    profile: bool = True  # sample the server's stacks at each route's most loaded clean level
    app_dir: Path | None = None  # the app's own files, for naming its lines (default: the server's cwd)
    # Route name ("GET /orders/{oid}", as the report names it) -> weight, e.g. its share of the
    # traffic in the access logs. When given, endpoints are preflighted and measured heaviest
    # first, so a budget too short for all of them is spent on the routes that carry the traffic;
    # routes without a weight come last, in the document's order.
    route_weights: Mapping[str, float] | None = None


class ProbeEvents(Protocol):
    """What a renderer can show while the probe runs (the probe itself never prints)."""

    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None: ...

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None: ...

    def level_done(self, op: Operation, level: Level) -> None: ...

    def endpoint_done(self, endpoint: Endpoint) -> None: ...

    def host_checked(self, busy: HostBusy) -> None: ...


class _Quiet:
    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None:
        pass

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None:
        pass

    def level_done(self, op: Operation, level: Level) -> None:
        pass

    def endpoint_done(self, endpoint: Endpoint) -> None:
        pass

    def host_checked(self, busy: HostBusy) -> None:
        pass


def check_options(o: ProbeOptions) -> None:
    """Reject option values that cannot work (NaN, infinity, out of range), before anything is sent."""
    if o.levels is not None and not o.levels:
        raise UsageError("--levels: expected positive integers such as 1,8,64")
    for n in o.levels or ():
        checks.whole(n, "--levels", 1, checks.MAX_CONCURRENCY)
    if o.max_concurrency is not None:
        checks.whole(o.max_concurrency, "--max-concurrency", 1, checks.MAX_CONCURRENCY)
    if o.duration_s is not None:
        checks.number(o.duration_s, "--duration", 0.05, 600, " seconds")
    checks.number(o.max_seconds, "--max-seconds", checks.MIN_BUDGET_S, checks.MAX_SECONDS, " seconds")
    checks.whole(o.max_requests, "--max-requests", 1, checks.MAX_REQUESTS)
    checks.number(o.timeout_s, "--timeout", checks.MIN_TIMEOUT_S, checks.MAX_TIMEOUT_S, " seconds")
    checks.number(o.warmup_s, "warm-up", 0, 600, " seconds")
    top = max(o.levels) if o.levels else (o.max_concurrency or DEFAULT_MAX_CONCURRENCY)
    checks.open_files_allow(top, "--levels" if o.levels else "--max-concurrency")


# ---------------------------------------------------------------------------------------
# Levels from bursts


def imbalanced(concurrency: int, per_worker: tuple[float, ...] | None) -> bool:
    """Some workers idled while another worked, with enough connections to keep all busy."""
    if not per_worker or len(per_worker) < 2 or concurrency < 2 * len(per_worker):
        return False
    busiest = max(per_worker)
    # Below 0.2 cores the server is mostly waiting and the split says nothing.
    return (
        sum(per_worker) >= WORKER_IMBALANCE_MIN_CORES and min(per_worker) < WORKER_IMBALANCE_RATIO * busiest
    )


# A level with requests in flight and none answered is re-measured for STALL_CONFIRM_S (the first
# level: up to the request timeout); it is a stall when again nothing completes and those requests
# are much older than any answer the route gave before: 3x the previous level's slowest answer and
# at least a second (2 s when there is no previous level to compare with).
STALL_CONFIRM_S: Final = 3.0
STALL_AGE_FACTOR: Final = 3.0
STALL_MIN_AGE_MS: Final = 1000.0
STALL_FIRST_LEVEL_MS: Final = 2000.0


def is_stall(result: BurstResult, previous: Level | None) -> bool:
    """Nothing completed while requests waited far longer than the route ever took."""
    oldest = result.oldest_in_flight_ms
    if not result.stalled or oldest is None:
        return False
    if previous is not None and previous.latency_ms is not None:
        return oldest >= max(STALL_AGE_FACTOR * previous.latency_ms.max, STALL_MIN_AGE_MS)
    return oldest >= STALL_FIRST_LEVEL_MS


def make_level(
    result: BurstResult,
    server_cpu: float | None,
    rss: tuple[int, ...] | None,
    by_worker: tuple[float, ...] | None = None,
    demand: LevelDemand | None = None,
    previous: Level | None = None,
) -> Level:
    """Turn one burst's raw counts into a level with its honesty checks."""
    b = summarize(result)
    latency = None
    littles: float | None = None
    if b.mean_ms is not None and b.p50_ms is not None and b.p90_ms is not None and b.max_ms is not None:
        latency = Latency(
            p50=round(b.p50_ms, 3),
            p90=round(b.p90_ms, 3),
            p99=None if b.p99_ms is None else round(b.p99_ms, 3),
            max=round(b.max_ms, 3),
            mean=round(b.mean_ms, 3),
        )
        # Closed loop, no think time: completions/s x mean latency ~ concurrency. Far below 1
        # means requests were in flight but not completing (stalls, timeouts) or the window
        # was too short for the latency.
        littles = round(b.samples / max(result.duration_s, 1e-9) * b.mean_ms / 1000 / result.concurrency, 3)
    return Level(
        concurrency=result.concurrency,
        requests=b.requests,
        errors=b.errors,
        errors_by_kind=b.errors_by_kind,
        duration_s=result.duration_s,
        throughput_rps=b.throughput_rps,
        latency_ms=latency,
        server_cpu_cores=None if server_cpu is None else round(server_cpu, 3),
        server_rss_bytes=rss,
        client_cpu_cores=b.client_cpu_cores,
        client_saturated=b.client_cpu_cores >= CLIENT_SATURATED_CORES,
        littles_law_ratio=littles,
        p99_supported=b.samples >= P99_MIN_SAMPLES,
        server_cpu_by_worker=None if by_worker is None else tuple(round(c, 3) for c in by_worker),
        worker_imbalance=imbalanced(result.concurrency, by_worker),
        demand=demand,
        errors_by_status=b.errors_by_status,
        in_flight_at_end=result.in_flight_at_end,
        oldest_in_flight_ms=None
        if result.oldest_in_flight_ms is None
        else round(result.oldest_in_flight_ms, 1),
        stalled=is_stall(result, previous),
    )


# ---------------------------------------------------------------------------------------
# The ladder


def default_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, ... up to max_concurrency (which is included even when not a power of two)."""
    levels = [1]
    while levels[-1] * 2 <= max_concurrency:
        levels.append(levels[-1] * 2)
    if levels[-1] != max_concurrency:
        levels.append(max_concurrency)
    return levels


def saturated(levels: Sequence[Level]) -> bool:
    """Two doublings of concurrency that bought (almost) no throughput."""
    clean = [
        lv for lv in levels if not lv.client_saturated and lv.errors <= ERROR_STOP_RATIO * max(lv.requests, 1)
    ]
    if len(clean) < 3:
        return False
    a, c = clean[-3], clean[-1]
    return c.concurrency >= 4 * a.concurrency and c.throughput_rps < _SATURATION_GAIN * a.throughput_rps


def still_scaling(levels: Sequence[Level]) -> bool:
    """Throughput still grows about in step with concurrency at the top of the ladder."""
    if len(levels) < 2:
        return False
    a, b = levels[-2], levels[-1]
    if a.throughput_rps <= 0:
        return False
    return b.throughput_rps / a.throughput_rps >= 0.7 * b.concurrency / a.concurrency


def level_duration(options: ProbeOptions, concurrency: int, previous: Level | None) -> float:
    """The counted window: fixed by --duration, else long enough for _MIN_COMPLETIONS."""
    if options.duration_s is not None:
        return options.duration_s
    if previous is None or previous.latency_ms is None:
        return options.base_duration_s
    # Service at this level is at least as slow as at the last one (closed loop).
    needed = _MIN_COMPLETIONS * previous.latency_ms.mean / 1000 / concurrency
    return min(_MAX_LEVEL_S, max(options.base_duration_s, needed))


class _StopAt(threading.Event):
    """A burst's stop flag: set by the user's stop (Ctrl-C, SIGTERM), or once `deadline` passes.

    The ladder only starts a level that should fit the budget; this holds the budget when it
    does not (a busy machine opening thousands of connections slowly). run_burst polls is_set.
    """

    def __init__(self, user: threading.Event, deadline: float) -> None:
        super().__init__()
        self.user = user
        self.deadline = deadline

    def is_set(self) -> bool:
        return self.user.is_set() or time.monotonic() >= self.deadline


@dataclass
class _Budget:
    deadline: float
    max_requests: int
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _server_gone(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except OSError:
        return True


@dataclass(frozen=True)
class _Session:
    """What every ladder of one probe shares."""

    options: ProbeOptions
    workers: int | None
    watcher: ServerWatcher | None
    budget: _Budget
    events: ProbeEvents
    host: str
    port: int
    demand: DemandWatcher | None = None
    worker_pids: tuple[int, ...] = ()  # whose stacks to sample; empty: not local, no profile
    app_dir: Path | None = None


def _planned_levels(options: ProbeOptions) -> list[int]:
    if options.levels is not None:
        return list(options.levels)
    return default_levels(options.max_concurrency or DEFAULT_MAX_CONCURRENCY)


class Ladder:
    """One endpoint's climb through concurrency levels until it saturates, errs or runs out of budget.

    `prior` resumes a ladder that an earlier pass left at its time budget.
    """

    def __init__(
        self,
        session: _Session,
        op: Operation,
        spec: RequestSpec,
        deadline: float,
        prior: Sequence[Level] = (),
    ) -> None:
        self.s = session
        self.op = op
        self.spec = spec
        self.deadline = deadline
        self.fixed = session.options.levels is not None
        self.levels: list[Level] = list(prior)
        self.plan = _planned_levels(session.options)

    def run(self) -> Endpoint:
        """Measure level after level; the endpoint with its levels and why the climb ended."""
        done = {lv.concurrency for lv in self.levels}
        todo = [n for n in self.plan if n not in done]
        if self.levels and not todo and not self.fixed and still_scaling(self.levels):
            todo.append(self.levels[-1].concurrency * 2)  # _extend decides again after it
        reason, detail = StopReason.MAX_LEVEL, ""
        while todo:
            n = todo.pop(0)
            before = self._cannot_start(n)
            if before is not None:
                reason = before
                break
            level, result = self._measure(n)
            if level is None:
                reason = StopReason.INTERRUPTED if self.s.budget.stop.is_set() else StopReason.TIME_BUDGET
                break
            stop = self._stop_after(level, result)
            if stop is not None:
                reason, detail = stop
                break
            if not todo and self._extend(n):
                todo.append(n * 2)
        op = self.op
        return Endpoint(op.method, op.path, op.url, tuple(self.levels), reason, detail)

    def _cannot_start(self, n: int) -> StopReason | None:
        """Why level `n` must not start: a stop request, or a budget it would overrun."""
        budget, options = self.s.budget, self.s.options
        if budget.stop.is_set():
            return StopReason.INTERRUPTED
        duration = level_duration(options, n, self.levels[-1] if self.levels else None)
        # An endpoint's first level may overrun its share (every endpoint gets one when the time
        # allows), never the whole probe's budget.
        until = min(self.deadline, budget.deadline) if self.levels else budget.deadline
        if time.monotonic() + opening_s(n) + options.warmup_s + duration > until:
            return StopReason.TIME_BUDGET
        if budget.requests >= budget.max_requests:
            return StopReason.REQUEST_BUDGET
        return None

    def _measure(self, n: int) -> tuple[Level | None, BurstResult]:
        """One burst at concurrency `n`, cut out of the server's CPU samples; None when stopped early."""
        options, watcher = self.s.options, self.s.watcher
        duration = level_duration(options, n, self.levels[-1] if self.levels else None)
        live = LiveCount()
        self.s.events.level_started(self.op, n, live.read)
        # Demand is read around the whole burst (the warm-up carries the same load): two reads of
        # /proc cost a few ms, where a sampling thread would compete with the load generator.
        before = self.s.demand.snapshot() if self.s.demand is not None else None
        stop = _StopAt(self.s.budget.stop, self.s.budget.deadline)
        result = run_burst(self.spec, n, options.warmup_s, duration, stop, live)
        if result.stalled and not self.s.budget.stop.is_set():
            # Nothing answered in the short window: a slow route, or a stuck one. Measure once more
            # for longer, so that "slow" is measured and "stuck" is sure.
            confirm = options.timeout_s if not self.levels else STALL_CONFIRM_S
            longer = max(duration, min(confirm, self.s.budget.deadline - time.monotonic() - 1))
            result = run_burst(self.spec, n, 0.0, longer, stop, live)
        if result.duration_s <= 0:  # stopped during the warm-up: nothing was counted
            return None, result
        if result.duration_s < 0.5 * duration and not self.s.budget.stop.is_set():
            return None, result  # cut short by the time budget: too little to be evidence
        demand = None
        if before is not None and self.s.demand is not None:
            demand = demand_between(before, self.s.demand.snapshot())
        server_cpu = by_worker = rss = None
        if watcher is not None:
            cut = watcher.cpu_cores_between(result.window_start, result.window_end)
            if cut is not None:
                server_cpu, by_worker = cut
            rss = watcher.worker_rss()
        level = make_level(
            result, server_cpu, rss, by_worker, demand, self.levels[-1] if self.levels else None
        )
        self.levels.append(level)
        self.s.budget.requests += level.requests
        self.s.events.level_done(self.op, level)
        return level, result

    def _stop_after(self, level: Level, result: BurstResult) -> tuple[StopReason, str] | None:
        """Whether the level just measured ends the ladder (and why), or raises ServerDied."""
        n = level.concurrency
        if self.s.budget.stop.is_set():
            return StopReason.INTERRUPTED, ""
        transport = level.errors_by_kind.get("connect", 0) + level.errors_by_kind.get("reset", 0)
        if (
            level.requests
            and level.requests == level.errors == transport
            and _server_gone(self.s.host, self.s.port)
        ):
            raise ServerDied(self.op, n, self.levels)
        if level.stalled:
            # Nothing completed while requests waited: more load only deepens the stall.
            return StopReason.STALLED, (
                f"{level.in_flight_at_end} requests in flight, none completed, at c={n}"
            )
        if level.errors_by_kind.get("429"):
            wait = f"Retry-After {result.retry_after_s:g} s" if result.retry_after_s else ""
            return StopReason.RATE_LIMITED, wait
        if level.errors > ERROR_STOP_RATIO * max(level.requests, 1):
            top_kind = max(level.errors_by_kind.items(), key=lambda kv: kv[1])[0]
            return StopReason.ERRORS, f"{level.errors}/{level.requests} failed, mostly {top_kind}, at c={n}"
        if not self.fixed and saturated(self.levels):
            return StopReason.SATURATED, ""
        return None

    def _extend(self, n: int) -> bool:
        """Still scaling at the top: a `def` route's threadpool knee (40 x workers) may lie beyond."""
        workers, options = self.s.workers, self.s.options
        return (
            not self.fixed
            and options.max_concurrency is None
            and workers is not None
            and n < _KNEE_MARGIN * THREAD_TOKENS_PER_WORKER * workers
            and n * 2 <= _EXTENSION_CAP
            and still_scaling(self.levels)
        )


class ServerDied(Exception):
    """Every request of a level failed to connect and the port no longer answers."""

    def __init__(self, op: Operation, concurrency: int, levels: list[Level]) -> None:
        super().__init__(f"{op.method} {op.path} at c={concurrency}")
        self.op = op
        self.concurrency = concurrency
        self.levels = levels


# ---------------------------------------------------------------------------------------
# The whole probe


@dataclass(frozen=True)
class ProbeOutcome:
    report: ProbeReport
    error: TargetUnreachableError | None = None  # the server died mid-probe: report is partial


# How long the host is watched before the probe, to warn when other work already takes its CPU.
HOST_CHECK_S: Final = 0.5
# The OpenAPI document and the preflight each get this long at most, whatever the server does.
DISCOVERY_DEADLINE_S: Final = 30.0
# The preflight (one request per endpoint, ~3 ms each on loopback) may use this share of
# --max-seconds; endpoints it does not reach are skipped as over the time budget.
PREFLIGHT_SHARE: Final = 0.25


def _openapi_url(options: ProbeOptions, base: str) -> str:
    """Where the document is; an absolute --openapi URL is checked like the target (loopback only)."""
    if not options.openapi:
        return base + "/openapi.json"
    if not options.openapi.startswith(("http://", "https://")):
        return base + "/" + options.openapi.lstrip("/")
    # Its host is checked like the target's; a query (?format=json) is the document's business.
    resolve_target(options.openapi.split("#", 1)[0].split("?", 1)[0], options.allow_remote)
    return options.openapi


def _given(options: ProbeOptions) -> tuple[dict[str, str], dict[tuple[str, str], Body]]:
    params = dict(parse_param_option(p) for p in options.params)
    bodies: dict[tuple[str, str], Body] = {}
    for text in options.bodies:
        method, path, content, content_type = parse_body_option(text, _read_body_file)
        bodies[(method, path)] = Body(content, content_type)
    return params, bodies


def _read_body_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"--body @{path}: cannot read it ({e.strerror or e})") from None


def find_operations(
    options: ProbeOptions, base: str, headers: Sequence[tuple[str, str]], started: float | None = None
) -> tuple[list[Operation], list[Skipped], str | None]:
    """Operations to probe from -e and/or the OpenAPI document, less --exclude, less failing ones.

    Everything here keeps to the probe's budget counted from `started`: the document and the list
    routes within it, the preflight within PREFLIGHT_SHARE of it.
    """
    explicit = [parse_endpoint(e) for e in options.endpoints]
    openapi_url = _openapi_url(options, base)
    params, bodies = _given(options)
    started = time.monotonic() if started is None else started
    deadline = min(options.timeout_s * 3, DISCOVERY_DEADLINE_S, options.max_seconds)
    with httpx.Client(headers=list(headers), timeout=options.timeout_s, verify=options.verify_tls) as client:
        get_doc = lambda: fetch_json(client, openapi_url)  # noqa: E731 - the call the deadline bounds
        doc: object | None
        if explicit:
            # Names given: the document only helps to fill parameters, and may be missing.
            try:
                doc = within(deadline, f"GET {redact_url(openapi_url)}", get_doc)
            except TargetUnreachableError:
                raise
            except Exception:
                doc = None
            ops, skipped = explicit_operations(explicit, doc, base, params, bodies)
            source: str | None = openapi_url if doc is not None else None
        else:
            doc = within(deadline, f"GET {redact_url(openapi_url)}", get_doc)
            found = discover(doc, base, openapi_url, options.unsafe, params, bodies)
            ops, skipped = list(found.operations), list(found.skipped)
            source = openapi_url
        if isinstance(doc, dict):
            ops = within(
                deadline,
                "list routes for real ids",
                lambda: resolve_ids(doc, ops, base, json_getter(client, options.timeout_s), params),
            )
        kept, excluded = apply_excludes(ops, options.excludes)
        kept = by_weight(kept, options.route_weights)
        failed: list[Skipped] = []
        if options.preflight and kept:
            until = started + PREFLIGHT_SHARE * options.max_seconds
            # Each request is bounded by twice the timeout (headers, then the body's read cap).
            kept, failed = within(
                max(0.0, until - time.monotonic()) + 2 * options.timeout_s + 1,
                "preflight",
                lambda: preflight_all(client, kept, options.timeout_s, until),
            )
    return kept, [*skipped, *excluded, *failed], source


def by_weight(ops: Sequence[Operation], weights: Mapping[str, float] | None) -> list[Operation]:
    """The operations heaviest first (a stable sort: equal weights keep the document's order)."""
    if not weights:
        return list(ops)
    return sorted(ops, key=lambda op: -weights.get(route_name(op.method, op.path), 0.0))


def routes_to_match(options: ProbeOptions) -> list[tuple[str, str]]:
    """The app's (METHOD, path template) pairs, for matching access-log lines: the -e endpoints and
    every operation of the OpenAPI document (which may be missing when -e names the endpoints)."""
    target = resolve_target(options.url, options.allow_remote)
    explicit = [parse_endpoint(e) for e in options.endpoints]
    url = _openapi_url(options, target.base_url)
    headers = [parse_header(h) for h in options.headers]
    deadline = min(options.timeout_s * 3, DISCOVERY_DEADLINE_S)
    with httpx.Client(headers=headers, timeout=options.timeout_s, verify=options.verify_tls) as client:
        try:
            doc = within(deadline, f"GET {redact_url(url)}", lambda: fetch_json(client, url))
        except TargetUnreachableError:
            raise
        except Exception:
            if not explicit:
                raise
            return explicit
    return [*explicit, *document_routes(doc, url)]


def _settings(
    options: ProbeOptions, headers: Sequence[tuple[str, str]], openapi_url: str | None
) -> dict[str, Any]:
    """The options as the report records them (header values redacted)."""
    return {
        "levels": list(options.levels) if options.levels else None,
        "max_concurrency": options.max_concurrency,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "max_seconds": options.max_seconds,
        "max_requests": options.max_requests,
        "timeout_s": options.timeout_s,
        "verify_tls": options.verify_tls,
        "headers": redact_headers(headers),
        "openapi": None if openapi_url is None else redact_url(openapi_url),
        "params": sorted({p.partition("=")[0] for p in options.params}),
        "unsafe": options.unsafe,
        "excludes": list(options.excludes),
    }


def _spec(op: Operation, headers: tuple[tuple[str, str], ...], options: ProbeOptions) -> RequestSpec:
    """The bytes to send for `op`: -H headers, and its body with its Content-Type when it has one."""
    extra = (("Content-Type", op.content_type),) if op.content_type else ()
    return RequestSpec(
        op.method,
        op.url,
        (*headers, *extra),
        op.body,
        timeout_s=options.timeout_s,
        verify_tls=options.verify_tls,
    )


# Stack sampling: the window, its rate (50 Hz nonblocking changed throughput by less than the
# run-to-run noise: benchmarks/stacks_overhead.py) and the warm-up before it opens.
PROFILE_S: Final = 1.5
PROFILE_HZ: Final = 50
_PROFILE_WARMUP_S: Final = 0.3


def _profile_level(levels: Sequence[Level]) -> Level | None:
    """The most loaded level the probe would keep going from: not client-bound, stalled or failing."""
    usable = [
        lv
        for lv in levels
        if not lv.client_saturated
        and not lv.stalled
        and lv.requests
        and lv.errors <= ERROR_STOP_RATIO * lv.requests
    ]
    return max(usable, key=lambda lv: lv.concurrency, default=None)


def _with_profile(session: _Session, spec: RequestSpec, ep: Endpoint) -> Endpoint:
    """Re-drive the route at its most loaded clean level while py-spy samples every worker."""
    if not session.options.profile:
        return ep
    if not session.worker_pids:
        return replace(ep, profile_unavailable="the server is not on this machine: its stacks cannot be read")
    level = _profile_level(ep.levels)
    budget = session.budget
    if level is None or budget.stop.is_set():
        return ep
    if time.monotonic() + PROFILE_S + _PROFILE_WARMUP_S + 1 > budget.deadline:
        return replace(ep, profile_unavailable="no time left in --max-seconds to sample the stacks")
    box: list[StackSample | Unavailable] = []
    sampler = threading.Thread(
        target=lambda: box.append(
            sample_workers(session.worker_pids, PROFILE_S, PROFILE_HZ, session.app_dir)
        ),
        name="stacks",
        daemon=True,
    )
    result_holder: list[BurstResult] = []

    def load() -> None:
        result_holder.append(
            run_burst(spec, level.concurrency, _PROFILE_WARMUP_S, PROFILE_S + 0.5, budget.stop, LiveCount())
        )

    loader = threading.Thread(target=load, name="profile load", daemon=True)
    loader.start()
    time.sleep(_PROFILE_WARMUP_S)
    sampler.start()
    sampler.join(PROFILE_S + 15)  # sample_workers kills py-spy itself past its own grace
    loader.join(PROFILE_S + session.options.timeout_s + 5)
    sample = box[0] if box else Unavailable("py-spy did not finish in time", "probe again")
    if isinstance(sample, Unavailable):
        return replace(ep, profile_unavailable=f"{sample.reason} ({sample.how_to_enable})")
    return replace(ep, profile=attribute(sample, session.app_dir))


# After a stall the server may stay stuck until its own pool timeout (SQLAlchemy: 30 s) frees the
# threads: wait that long at most for one answer, so the next route is not measured on a stuck server.
RECOVERY_S: Final = 35.0


def _await_recovery(session: _Session, spec: RequestSpec) -> None:
    """Send one request at a time until one is answered, within RECOVERY_S and the budget."""
    budget = session.budget
    end = min(time.monotonic() + RECOVERY_S, budget.deadline)
    while time.monotonic() < end and not budget.stop.is_set():
        probe_once = run_burst(
            spec, 1, 0.0, min(1.0, max(end - time.monotonic(), 0.05)), budget.stop, LiveCount()
        )
        if probe_once.latencies_ms:
            return


def _climb_all(
    session: _Session, ops: Sequence[Operation], headers: tuple[tuple[str, str], ...]
) -> tuple[list[Endpoint], TargetUnreachableError | None]:
    """Every endpoint's ladder, in two passes over the time budget; stops at a dead server."""
    options, budget = session.options, session.budget
    results: dict[int, Endpoint] = {}
    error: TargetUnreachableError | None = None
    # Pass 1 shares the time evenly; routes that saturate early leave time over, and pass 2
    # gives it to the ladders that stopped at their share (a 100 ms route needs the time to
    # climb past the threadpool knee).
    for first_pass in (True, False):
        todo = (
            list(range(len(ops)))
            if first_pass
            else [i for i, e in sorted(results.items()) if e.stop_reason == StopReason.TIME_BUDGET]
        )
        for k, i in enumerate(todo):
            if budget.stop.is_set() or error is not None:
                break
            op = ops[i]
            share = (budget.deadline - time.monotonic()) / (len(todo) - k)
            spec = _spec(op, headers, options)
            prior = results[i].levels if i in results else ()
            try:
                ep = Ladder(session, op, spec, time.monotonic() + share, prior).run()
                if first_pass:
                    ep = _with_profile(session, spec, ep)
            except ServerDied as died:
                ep = Endpoint(op.method, op.path, op.url, tuple(died.levels), StopReason.SERVER_DIED)
                error = TargetUnreachableError(
                    f"the server stopped answering during {died} (connection refused)"
                )
            results[i] = _with_body(ep, op)
            if first_pass:
                session.events.endpoint_done(ep)
            if ep.stop_reason is StopReason.STALLED:
                _await_recovery(session, spec)
    return [results.get(i) or _unreached(op, budget, error) for i, op in enumerate(ops)], error


def _with_body(ep: Endpoint, op: Operation) -> Endpoint:
    """Keep a generated body for verify; a body the user gave is only marked (it may hold secrets)."""
    if op.body is None:
        return ep
    if op.body_given:
        return replace(ep, body_given=True, content_type=op.content_type)
    return replace(ep, body=op.body.decode("utf-8", "replace"), content_type=op.content_type)


def _unreached(op: Operation, budget: _Budget, error: TargetUnreachableError | None) -> Endpoint:
    """An endpoint the probe never came to: after a stop, a dead server, or the budget."""
    if error is not None:
        reason = StopReason.SERVER_DIED
    elif budget.stop.is_set():
        reason = StopReason.INTERRUPTED
    else:
        reason = StopReason.TIME_BUDGET
    return Endpoint(op.method, op.path, op.url, (), reason)


def not_measured(endpoints: Sequence[Endpoint]) -> tuple[list[Endpoint], list[Skipped]]:
    """Endpoints with levels, and the others as skipped with the reason no level was measured.

    The endpoint during which the server died stays an endpoint (its stop reason says where);
    the ones after it were never reached.
    """
    died = next((i for i, e in enumerate(endpoints) if e.stop_reason == StopReason.SERVER_DIED), None)
    measured = [e for i, e in enumerate(endpoints) if e.levels or i == died]
    skipped = [
        Skipped(e.method, e.path, f"{e.stop_reason}: no level measured" + _UNREACHED.get(e.stop_reason, ""))
        for i, e in enumerate(endpoints)
        if not e.levels and i != died
    ]
    return measured, skipped


_UNREACHED: Final = {
    StopReason.TIME_BUDGET: " within --max-seconds (raise it, or probe fewer endpoints with -e/--exclude)",
    StopReason.REQUEST_BUDGET: " within --max-requests",
}


def run_probe(options: ProbeOptions, host: HostFacts, events: ProbeEvents | None = None) -> ProbeOutcome:
    """Discover, then measure every endpoint; Ctrl-C and a dying server still give a report.

    The report's endpoints carry no verdicts: judging them is classify.classify_report's job.
    """
    events = events or _Quiet()
    check_options(options)
    started = time.monotonic()  # the budget covers discovery and preflight too
    target = resolve_target(options.url, options.allow_remote)
    headers = tuple(parse_header(h) for h in options.headers)
    ops, skipped, openapi_url = find_operations(options, target.base_url, headers, started)
    if not ops:
        raise UsageError(
            "nothing to probe: no operation could be filled and answered cleanly"
            + (f" ({len(skipped)} skipped, each with its reason above or in --json)" if skipped else "")
            + "; name endpoints with -e 'GET /path', or pass --unsafe for POST/PUT/PATCH/DELETE"
        )
    server = find_server(target.port) if target.loopback else ServerInfo(local=False)
    observed = server.local and server.pid is not None and supported()
    host_load = (
        host_busy_now(HOST_CHECK_S, exclude_pids=(server.pid,) if server.pid else ()) if observed else None
    )
    events.started(ops, skipped, server)
    if host_load is not None:
        events.host_checked(host_load)
    budget = _Budget(deadline=started + options.max_seconds, max_requests=options.max_requests)
    watcher = ServerWatcher(server) if server.local and server.pid else None
    with stop_on_signals(budget.stop), watcher if watcher is not None else nullcontext():
        demand = DemandWatcher(server.worker_pids, (server.pid,)) if observed and server.pid else None
        session = _Session(
            options, server.workers, watcher, budget, events, target.host, target.port, demand,
            server.worker_pids if server.local and server.pid else (),
            options.app_dir or (server_cwd(server.pid) if server.pid else None),
        )  # fmt: skip
        climbed, error = _climb_all(session, ops, headers)
    endpoints, unreached = not_measured(climbed)
    report = ProbeReport(
        target=target.base_url,
        host=host,
        server=server,
        endpoints=tuple(endpoints),
        skipped=(*skipped, *unreached),
        settings=_settings(options, headers, openapi_url),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        interrupted=budget.stop.is_set(),
        elapsed_s=time.monotonic() - started,
        host_load=host_load,
    )
    return ProbeOutcome(report=report, error=error)
