"""The probe: discovery, then a ladder of closed-loop bursts per endpoint, measured honestly.

Measurement only. The ladder's stopping rules look at throughput and errors (to spend the time
budget where it tells something), but the reading of a curve is classify.py's job.
"""

from __future__ import annotations

import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Final, Protocol

import httpx

from fastapi_tune import __version__
from fastapi_tune.classify import THREAD_TOKENS_PER_WORKER, classify
from fastapi_tune.discovery import (
    Operation,
    apply_excludes,
    discover,
    explicit_operations,
    fetch_json,
    parse_endpoint,
    parse_header,
    redact_headers,
    resolve_target,
)
from fastapi_tune.errors import TargetUnreachableError, UsageError
from fastapi_tune.host import HostFacts, host_to_json
from fastapi_tune.loadgen import BurstResult, LiveCount, RequestSpec, run_burst
from fastapi_tune.observe import ServerWatcher, find_server
from fastapi_tune.report import Endpoint, Latency, Level, ProbeReport, ServerInfo, Skipped

DEFAULT_MAX_CONCURRENCY: Final = 128
# A level counts at least this many completions when the time allows, so that c=1 on a 100 ms
# route is not judged from five requests (one request more or less would move it by 20%).
_MIN_COMPLETIONS: Final = 15
_MAX_LEVEL_S: Final = 3.0
# p99 from fewer samples is one or two requests' luck, not a percentile.
P99_MIN_SAMPLES: Final = 200
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


class ProbeEvents(Protocol):
    """What a renderer can show while the probe runs (the probe itself never prints)."""

    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None: ...

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None: ...

    def level_done(self, op: Operation, level: Level) -> None: ...

    def endpoint_done(self, endpoint: Endpoint) -> None: ...


class _Quiet:
    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None:
        pass

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None:
        pass

    def level_done(self, op: Operation, level: Level) -> None:
        pass

    def endpoint_done(self, endpoint: Endpoint) -> None:
        pass


def check_options(o: ProbeOptions) -> None:
    """Reject option values that cannot work, before anything is sent."""
    if o.levels is not None and (not o.levels or any(n < 1 for n in o.levels)):
        raise UsageError("--levels: expected positive integers such as 1,8,64")
    if o.max_concurrency is not None and o.max_concurrency < 1:
        raise UsageError("--max-concurrency: expected a positive integer")
    if o.duration_s is not None and not 0.05 <= o.duration_s <= 600:
        raise UsageError("--duration: expected seconds from 0.05 to 600")
    if o.max_seconds <= 0 or o.max_requests <= 0 or o.timeout_s <= 0:
        raise UsageError("--max-seconds, --max-requests and --timeout must be positive")


# ---------------------------------------------------------------------------------------
# Levels from bursts


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def errors_by_kind(result: BurstResult) -> dict[str, int]:
    """Transport errors and error statuses, by kind: 429, 4xx, 5xx, timeout, connect, reset, other."""
    kinds: dict[str, int] = {k: v for k, v in result.errors_by_kind.items() if v}
    for status, count in result.status_counts.items():
        kind = "429" if status == 429 else "5xx" if status >= 500 else "4xx" if status >= 400 else None
        if kind is not None and count:
            kinds[kind] = kinds.get(kind, 0) + count
    return kinds


def imbalanced(concurrency: int, per_worker: tuple[float, ...] | None) -> bool:
    """Some workers idled while another worked, with enough connections to keep all busy."""
    if not per_worker or len(per_worker) < 2 or concurrency < 2 * len(per_worker):
        return False
    busiest = max(per_worker)
    # Below 0.2 cores the server is mostly waiting and the split says nothing.
    return (
        sum(per_worker) >= WORKER_IMBALANCE_MIN_CORES and min(per_worker) < WORKER_IMBALANCE_RATIO * busiest
    )


def make_level(
    result: BurstResult,
    server_cpu: float | None,
    rss: tuple[int, ...] | None,
    per_worker: tuple[float, ...] | None = None,
) -> Level:
    """Turn one burst's raw counts into a level with its honesty checks."""
    kinds = errors_by_kind(result)
    errors = sum(kinds.values())
    ok = sum(c for s, c in result.status_counts.items() if s < 400)
    requests = sum(result.status_counts.values()) + sum(result.errors_by_kind.values())
    lat = sorted(result.latencies_ms)
    duration = max(result.duration_s, 1e-9)
    client_cores = result.client_cpu_s / duration
    latency = None
    littles: float | None = None
    if lat:
        mean = sum(lat) / len(lat)
        supported = len(lat) >= P99_MIN_SAMPLES
        latency = Latency(
            p50=round(percentile(lat, 50), 3),
            p90=round(percentile(lat, 90), 3),
            p99=round(percentile(lat, 99), 3) if supported else None,
            max=round(lat[-1], 3),
            mean=round(mean, 3),
        )
        # Closed loop, no think time: completions/s x mean latency ~ concurrency. Far below 1
        # means requests were in flight but not completing (stalls, timeouts) or the window
        # was too short for the latency.
        littles = round(len(lat) / duration * mean / 1000 / result.concurrency, 3)
    return Level(
        concurrency=result.concurrency,
        requests=requests,
        errors=errors,
        errors_by_kind=kinds,
        duration_s=result.duration_s,
        throughput_rps=ok / duration,
        latency_ms=latency,
        server_cpu_cores=None if server_cpu is None else round(server_cpu, 3),
        server_rss_bytes=rss,
        client_cpu_cores=client_cores,
        client_saturated=client_cores >= CLIENT_SATURATED_CORES,
        littles_law_ratio=littles,
        p99_supported=bool(lat) and len(lat) >= P99_MIN_SAMPLES,
        server_cpu_per_worker=None if per_worker is None else tuple(round(c, 3) for c in per_worker),
        worker_imbalance=imbalanced(result.concurrency, per_worker),
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


def still_flat(levels: Sequence[Level]) -> bool:
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


def run_ladder(
    op: Operation,
    spec: RequestSpec,
    options: ProbeOptions,
    workers: int | None,
    watcher: ServerWatcher | None,
    budget: _Budget,
    endpoint_deadline: float,
    events: ProbeEvents,
    target_host: str,
    target_port: int,
    prior: Sequence[Level] = (),
) -> Endpoint:
    """Climb the concurrency ladder for one endpoint until it saturates, errs or runs out of budget.

    `prior` resumes a ladder that an earlier pass left at its time budget.
    """
    fixed = options.levels is not None
    top = options.max_concurrency or DEFAULT_MAX_CONCURRENCY
    plan = list(options.levels) if options.levels is not None else default_levels(top)
    levels: list[Level] = list(prior)
    stop_reason = "max level"
    done = {lv.concurrency for lv in levels}
    i = 0
    while i < len(plan) and plan[i] in done:
        i += 1
    if levels and i == len(plan) and not fixed and still_flat(levels):
        plan.append(levels[-1].concurrency * 2)  # the extension rule below decides again
    while i < len(plan):
        n = plan[i]
        i += 1
        if budget.stop.is_set():
            stop_reason = "interrupted"
            break
        now = time.monotonic()
        duration = level_duration(options, n, levels[-1] if levels else None)
        if levels and now + duration + options.warmup_s > min(endpoint_deadline, budget.deadline):
            stop_reason = "time budget"
            break
        if budget.requests >= budget.max_requests:
            stop_reason = "request budget"
            break
        live = LiveCount()
        events.level_started(op, n, live.read)
        result = run_burst(spec, n, options.warmup_s, duration, budget.stop, live)
        if result.duration_s <= 0:  # stopped during the warm-up: nothing was counted
            stop_reason = "interrupted"
            break
        server_cpu = per_worker = rss = None
        if watcher is not None:
            cut = watcher.cpu_cores_between(result.window_start, result.window_end)
            if cut is not None:
                server_cpu, per_worker = cut
            rss = watcher.worker_rss()
        level = make_level(result, server_cpu, rss, per_worker)
        levels.append(level)
        budget.requests += level.requests
        events.level_done(op, level)
        if budget.stop.is_set():
            stop_reason = "interrupted"
            break
        if (
            level.requests
            and level.requests == level.errors
            and (
                level.errors_by_kind.get("connect", 0) + level.errors_by_kind.get("reset", 0) == level.errors
            )
            and _server_gone(target_host, target_port)
        ):
            raise ServerDied(op, n, levels)
        if level.errors_by_kind.get("429"):
            wait = f", Retry-After {result.retry_after_s:g} s" if result.retry_after_s else ""
            stop_reason = f"rate limited (429{wait})"
            break
        if level.errors > ERROR_STOP_RATIO * max(level.requests, 1):
            top_kind = max(level.errors_by_kind.items(), key=lambda kv: kv[1])[0]
            stop_reason = f"errors ({level.errors}/{level.requests}, mostly {top_kind}, at c={n})"
            break
        if not fixed and saturated(levels):
            stop_reason = "saturated"
            break
        if (
            not fixed
            and options.max_concurrency is None
            and i == len(plan)
            and workers is not None
            and n < _KNEE_MARGIN * THREAD_TOKENS_PER_WORKER * workers
            and n * 2 <= _EXTENSION_CAP
            and still_flat(levels)
        ):
            # Still scaling at the top: a `def` route's threadpool knee (40 x workers) may lie
            # beyond, so keep doubling until past it.
            plan.append(n * 2)
    return Endpoint(method=op.method, path=op.path, url=op.url, levels=tuple(levels), stop_reason=stop_reason)


class ServerDied(Exception):
    """Every request of a level failed to connect and the port no longer answers."""

    def __init__(self, op: Operation, concurrency: int, levels: list[Level]) -> None:
        super().__init__(f"{op.method} {op.path} at c={concurrency}")
        self.op = op
        self.concurrency = concurrency
        self.levels = levels


# ---------------------------------------------------------------------------------------
# The whole probe


@contextmanager
def ctrl_c_sets(event: threading.Event) -> Iterator[None]:
    """First Ctrl-C asks the probe to stop and keep what it has; a second one aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass(frozen=True)
class ProbeOutcome:
    report: ProbeReport
    error: TargetUnreachableError | None = None  # the server died mid-probe: report is partial


def find_operations(
    options: ProbeOptions, base: str, headers: Sequence[tuple[str, str]]
) -> tuple[list[Operation], list[Skipped], str | None]:
    """Operations to probe from -e and/or the OpenAPI document, less --exclude."""
    explicit = [parse_endpoint(e) for e in options.endpoints]
    openapi_url = options.openapi or (base + "/openapi.json")
    if options.openapi and not options.openapi.startswith(("http://", "https://")):
        openapi_url = base + "/" + options.openapi.lstrip("/")
    with httpx.Client(headers=list(headers), timeout=options.timeout_s, verify=options.verify_tls) as client:
        if explicit:
            # Names given: the document only helps to fill parameters, and may be missing.
            doc: object | None
            try:
                doc = fetch_json(client, openapi_url)
            except TargetUnreachableError:
                raise
            except Exception:
                doc = None
            ops, skipped = explicit_operations(explicit, doc, base)
            source: str | None = openapi_url if doc is not None else None
        else:
            doc = fetch_json(client, openapi_url)
            found = discover(doc, base, openapi_url)
            ops, skipped = list(found.operations), list(found.skipped)
            source = openapi_url
    kept, excluded = apply_excludes(ops, options.excludes)
    return kept, [*skipped, *excluded], source


def run_probe(options: ProbeOptions, host: HostFacts, events: ProbeEvents | None = None) -> ProbeOutcome:
    """Discover, then measure every endpoint; Ctrl-C and a dying server still give a report."""
    events = events or _Quiet()
    check_options(options)
    target = resolve_target(options.url, options.allow_remote)
    headers = tuple(parse_header(h) for h in options.headers)
    ops, skipped, openapi_url = find_operations(options, target.base_url, headers)
    if not ops:
        raise UsageError(
            "nothing to probe: the OpenAPI document has no safe operations fastapi-tune can fill"
            + (f" ({len(skipped)} skipped; see the list with --json)" if skipped else "")
            + "; name endpoints with -e 'GET /path'"
        )
    server = find_server(target.port) if target.loopback else ServerInfo(local=False)
    events.started(ops, skipped, server)
    started = time.monotonic()
    budget = _Budget(deadline=started + options.max_seconds, max_requests=options.max_requests)
    error: TargetUnreachableError | None = None
    watcher = ServerWatcher(server) if server.local and server.pid else None
    with ctrl_c_sets(budget.stop), watcher if watcher is not None else nullcontext():
        results: dict[int, Endpoint] = {}
        # Pass 1 shares the time evenly; routes that saturate early leave time over, and pass 2
        # gives it to the ladders that stopped at their share (a 100 ms route needs the time to
        # climb past the threadpool knee).
        for first_pass in (True, False):
            todo = (
                list(range(len(ops)))
                if first_pass
                else [i for i, e in sorted(results.items()) if e.stop_reason == "time budget"]
            )
            for k, i in enumerate(todo):
                if budget.stop.is_set() or error is not None:
                    break
                op = ops[i]
                remaining = budget.deadline - time.monotonic()
                spec = RequestSpec(
                    method=op.method,
                    url=op.url,
                    headers=headers,
                    timeout_s=options.timeout_s,
                    verify_tls=options.verify_tls,
                )
                prior = results[i].levels if i in results else ()
                try:
                    ep = run_ladder(
                        op, spec, options, server.workers, watcher, budget,
                        time.monotonic() + remaining / (len(todo) - k), events, target.host, target.port,
                        prior,
                    )  # fmt: skip
                except ServerDied as died:
                    ep = Endpoint(op.method, op.path, op.url, tuple(died.levels), "server died")
                    error = TargetUnreachableError(
                        f"the server stopped answering during {died} (connection refused)"
                    )
                results[i] = ep
                if first_pass:
                    events.endpoint_done(ep)
        observed = server.local and server.pid is not None
        endpoints = [
            replace(
                e, verdict=classify(e.levels, server.workers, observed and e.stop_reason != "server died")
            )
            for _, e in sorted(results.items())
        ]
    settings: dict[str, Any] = {
        "levels": list(options.levels) if options.levels else None,
        "max_concurrency": options.max_concurrency,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "max_seconds": options.max_seconds,
        "max_requests": options.max_requests,
        "timeout_s": options.timeout_s,
        "verify_tls": options.verify_tls,
        "headers": redact_headers(headers),
        "openapi": openapi_url,
        "excludes": list(options.excludes),
    }
    report = ProbeReport(
        target=target.base_url,
        host=host_to_json(host),
        server=server,
        endpoints=tuple(endpoints),
        skipped=tuple(skipped),
        settings=settings,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        interrupted=budget.stop.is_set(),
        elapsed_s=time.monotonic() - started,
    )
    return ProbeOutcome(report=report, error=error)
