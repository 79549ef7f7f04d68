"""The probe report: frozen dataclasses, and the versioned JSON format they save to.

The JSON names here are a public contract (scripts rely on them; the README documents
them). Bump SCHEMA_VERSION when a name changes meaning or goes away.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.core.jsonread import JsonReader
from fastapi_tune.core.redact import redact_text, redact_url
from fastapi_tune.discover.openapi import SkipCause, Skipped, route_name
from fastapi_tune.measure.demand import (
    HostBusy,
    LevelDemand,
    demand_from_json,
    demand_to_json,
    host_busy_from_json,
    host_busy_to_json,
)
from fastapi_tune.measure.host import HostFacts, host_from_json, host_to_json
from fastapi_tune.measure.overload_report import OverloadRun, overload_from_json, overload_to_json
from fastapi_tune.measure.stack_attribution import RouteProfile, profile_from_json, profile_to_json
from fastapi_tune.measure.traffic import TrafficProfile, traffic_from_json, traffic_to_json

# 2: typed evidence (server_cpu_per_busy_worker), levels' server_cpu_by_worker, stop_reason as a
# fixed word with stop_detail beside it.
SCHEMA_VERSION: Final = 2
# Where probe writes its report and recommend and verify look for one.
DEFAULT_REPORT: Final = Path("fastapi-tune-probe.json")
# Who generated the load: fastapi-tune's own probe, or Locust / k6 results imported (import_load.py).
SOURCES: Final = ("probe", "locust", "k6")


class EndpointClass(StrEnum):
    """What limits an endpoint, exactly as the report's `class` field spells it."""

    IO_BOUND = "io-bound"
    CPU_BOUND = "cpu-bound"
    LOOP_BLOCKING = "loop-blocking"
    THREADPOOL_BOUND = "threadpool-bound"
    SERIALIZED = "serialized"
    POOL_BOUND = "pool-bound"
    STALLED = "stalled"
    INCONCLUSIVE = "inconclusive"


class StopReason(StrEnum):
    """Why an endpoint's ladder ended; the details (counts, Retry-After) go to `stop_detail`."""

    MAX_LEVEL = "max level"
    SATURATED = "saturated"
    ERRORS = "errors"
    RATE_LIMITED = "rate limited"
    TIME_BUDGET = "time budget"
    REQUEST_BUDGET = "request budget"
    INTERRUPTED = "interrupted"
    SERVER_DIED = "server died"
    STALLED = "stalled"
    IMPORTED = "imported"  # levels read from Locust or k6 results: their run decided the steps


class EvidenceDepth(StrEnum):
    """How far an endpoint was measured: the triage's few short levels, or a full ladder after them."""

    TRIAGE = "triage"
    LADDER = "ladder"


@dataclass(frozen=True)
class Latency:
    """Latency of the counted requests of one level, in milliseconds.

    p99 is None when the level has too few samples to support it (see p99_supported).
    """

    p50: float
    p90: float
    p99: float | None
    max: float
    mean: float


@dataclass(frozen=True)
class Level:
    """One closed-loop burst at a fixed concurrency, as measured (no judgement yet)."""

    concurrency: int
    requests: int  # requests completed in the counted window (successes and errors)
    errors: int
    errors_by_kind: Mapping[str, int]  # "4xx", "5xx", "429", "timeout", "connect", "reset", "other"
    duration_s: float  # the counted window, warm-up excluded
    throughput_rps: float  # successful responses per second
    latency_ms: Latency | None  # None when nothing completed
    server_cpu_cores: float | None  # CPU of the server's processes, in cores; None when not local
    server_rss_bytes: tuple[int, ...] | None  # RSS per worker process at the end of the level
    client_cpu_cores: float  # the load generator's own CPU use, in cores
    client_saturated: bool  # the generator, not the app, was the limit: never evidence
    littles_law_ratio: float | None  # throughput x mean latency / concurrency; ~1.0 is healthy
    p99_supported: bool
    server_cpu_by_worker: tuple[float, ...] | None = None  # cores each worker used, one per worker
    # Some workers idled while others were busy: keep-alive connections stay on the worker that
    # accepted them, so one busy worker can make a 2-worker server look like one.
    worker_imbalance: bool = False
    # CPU demand (on CPU + waiting for one) of the workers and how busy the host was: tells a worker
    # waiting for a CPU from one sleeping in a blocking call. None when the server is not local.
    demand: LevelDemand | None = None
    errors_by_status: Mapping[int, int] = field(default_factory=dict)  # error responses by HTTP status
    # Requests sent but unanswered when the window closed (younger than the timeout), and the oldest
    # one's age: work the level did not see finish. Stalled: some were in flight, none completed.
    in_flight_at_end: int = 0
    oldest_in_flight_ms: float | None = None
    stalled: bool = False


def report_routes(report: ProbeReport) -> list[tuple[str, str]]:
    """Every (METHOD, path template) the report knows: measured endpoints and skipped operations."""
    skipped = [(s.method, s.path) for s in report.skipped if s.method != "*"]
    return [*((e.method, e.path) for e in report.endpoints), *skipped]


def _ev(label: str) -> Any:
    return field(default=None, metadata={"label": label})


@dataclass(frozen=True)
class Evidence:
    """The numbers behind a verdict; each field's label is what the terminal shows beside it."""

    clean_levels: int = field(default=0, metadata={"label": "levels used as evidence"})
    workers: int | None = _ev("worker processes serving the app, found on this machine")
    threadpool_knee_expected: int | None = _ev(
        "where AnyIO's thread limiter would bend the curve (40 x workers)"
    )
    excluded_client_saturated: int = field(
        default=0, metadata={"label": "levels left out: the load generator was the limit"}
    )
    excluded_errors: int = field(default=0, metadata={"label": "levels left out: errors or no responses"})
    efficiency_at_max: float | None = _ev("throughput per client at the top level vs. at the lowest")
    latency_inflation: float | None = _ev("p50 latency at the top level / at the lowest")
    knee_concurrency: int | None = _ev("requests in flight where throughput stops growing")
    plateau_rps: float | None = _ev("throughput past the knee (req/s)")
    service_time_ms: float | None = _ev("p50 latency at the lowest level (ms)")
    server_cpu_per_busy_worker: float | None = _ev("server CPU per busy worker (cores)")
    max_clean_concurrency: int | None = _ev("highest concurrency used as evidence")
    fit_rms: float | None = _ev("noise: RMS of log throughput around the fitted curve")
    usl_sigma: float | None = _ev("USL contention (sigma)")
    usl_kappa: float | None = _ev("USL coherency (kappa)")
    usl_peak_concurrency: float | None = _ev("USL peak concurrency")
    server_cpu_demand_per_busy_worker: float | None = _ev(
        "server CPU demand per busy worker: on CPU + runnable but waiting (cores)"
    )
    starved_levels: int | None = _ev("levels measured while the host had no idle CPU")
    host_others_cores: float | None = _ev("CPU used by other processes on the host (cores)")
    suggested_thread_tokens: int | None = _ev("thread tokens per worker to set")
    pool_size_per_worker: float | None = _ev("requests in service per worker at the plateau (a pool's size)")
    stalled_at_concurrency: int | None = _ev("lowest concurrency at which nothing completed")


def evidence_labels() -> dict[str, str]:
    """Each evidence name with what it means: for renderers that read a saved report's JSON."""
    return {f.name: str(f.metadata["label"]) for f in dataclasses.fields(Evidence)}


def evidence_rows(ev: Evidence) -> list[tuple[str, str, float | int]]:
    """(name, label, value) for every measured number, in declaration order: what renderers show."""
    return [
        (f.name, str(f.metadata["label"]), v)
        for f in dataclasses.fields(ev)
        if (v := getattr(ev, f.name)) is not None
    ]


@dataclass(frozen=True)
class Verdict:
    """What limits an endpoint, how sure we are, the numbers behind it and what to do."""

    cls: EndpointClass
    confidence: float  # 0..1
    summary: str  # one sentence of evidence
    evidence: Evidence
    advice: tuple[str, ...]


@dataclass(frozen=True)
class Endpoint:
    """One probed operation and its ladder."""

    method: str
    path: str  # the OpenAPI path template (e.g. /orders/{oid}) or the path given with -e
    url: str  # the concrete URL that was requested
    levels: tuple[Level, ...]
    stop_reason: StopReason
    stop_detail: str = ""  # e.g. "7/100 failed, mostly 5xx, at c=8" or "Retry-After 2 s"
    verdict: Verdict | None = None
    profile: RouteProfile | None = None  # the server's stacks at the most loaded clean level
    profile_unavailable: str | None = None  # why there is no profile (remote, no py-spy, ptrace...)
    # The body sent, when generated from the document's schema (made-up values, safe to keep) so that
    # verify can send it again; a body the user gave with --body is not kept (it may hold secrets).
    body: str | None = None
    content_type: str | None = None
    body_given: bool = False
    # None: a report from before the triage (every endpoint then had its own ladder).
    evidence_depth: EvidenceDepth | None = None

    @property
    def route(self) -> str:
        """The route's one name (the report's key, --mix, access logs): "GET /orders/{oid}"."""
        return route_name(self.method, self.path)


@dataclass(frozen=True)
class ServerInfo:
    """The process serving the target, when it is on this machine."""

    local: bool
    pid: int | None = None
    kind: str | None = None  # "gunicorn", "uvicorn", "other"
    cmdline: str | None = None
    workers: int | None = None  # worker processes that serve requests
    worker_pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProbeReport:
    """Everything one probe measured, ready to save, classify and recommend from."""

    target: str
    host: HostFacts | None  # what `fastapi-tune host --json` prints; None: imported, host not seen
    server: ServerInfo
    endpoints: tuple[Endpoint, ...]
    skipped: tuple[Skipped, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    tool_version: str = ""
    interrupted: bool = False
    elapsed_s: float = 0.0
    host_load: HostBusy | None = None  # other work on the host when the probe started
    source: str = "probe"  # one of SOURCES
    traffic: TrafficProfile | None = None  # what --access-log said about production traffic
    overload: OverloadRun | None = None  # the overload step past every ladder; None: not run


# ---------------------------------------------------------------------------------------
# JSON


def _latency_to_json(lat: Latency | None) -> dict[str, float | None] | None:
    if lat is None:
        return None
    return {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "max": lat.max, "mean": lat.mean}


def level_to_json(level: Level) -> dict[str, Any]:
    """A level as the report's JSON object."""
    by_worker = level.server_cpu_by_worker
    return {
        "concurrency": level.concurrency,
        "requests": level.requests,
        "errors": level.errors,
        "errors_by_kind": dict(level.errors_by_kind),
        "duration_s": round(level.duration_s, 4),
        "throughput_rps": round(level.throughput_rps, 3),
        "latency_ms": _latency_to_json(level.latency_ms),
        "server_cpu_cores": level.server_cpu_cores,
        "server_rss_bytes": list(level.server_rss_bytes) if level.server_rss_bytes is not None else None,
        "client_cpu_cores": round(level.client_cpu_cores, 4),
        "client_saturated": level.client_saturated,
        "littles_law_ratio": level.littles_law_ratio,
        "p99_supported": level.p99_supported,
        "server_cpu_by_worker": None if by_worker is None else [round(c, 3) for c in by_worker],
        "worker_imbalance": level.worker_imbalance,
        "errors_by_status": {str(k): v for k, v in sorted(level.errors_by_status.items())},
        "demand": None if level.demand is None else demand_to_json(level.demand),
        "in_flight_at_end": level.in_flight_at_end,
        "oldest_in_flight_ms": level.oldest_in_flight_ms,
        "stalled": level.stalled,
    }


def verdict_to_json(v: Verdict) -> dict[str, Any]:
    """A verdict as JSON (the class itself is also lifted to the endpoint's `class`)."""
    return {
        "class": str(v.cls),
        "confidence": round(v.confidence, 3),
        "summary": v.summary,
        "evidence": dataclasses.asdict(v.evidence),
        "advice": list(v.advice),
    }


def endpoint_to_json(e: Endpoint) -> dict[str, Any]:
    """An endpoint with its verdict and levels."""
    out: dict[str, Any] = {
        "method": e.method,
        "path": e.path,
        "url": redact_url(e.url),  # a query such as ?api_key=... from --param or an example
        "class": str(e.verdict.cls) if e.verdict else None,
        "verdict": verdict_to_json(e.verdict) if e.verdict else None,
        "stop_reason": str(e.stop_reason),
        "stop_detail": redact_text(e.stop_detail),
        "levels": [level_to_json(lv) for lv in e.levels],
        "profile": None if e.profile is None else profile_to_json(e.profile),
        "profile_unavailable": e.profile_unavailable,
        "body": e.body,
        "content_type": e.content_type,
        "body_given": e.body_given,
    }
    if e.evidence_depth is not None:  # absent from reports written before the triage
        out["evidence_depth"] = str(e.evidence_depth)
    return out


def skipped_to_json(s: Skipped) -> dict[str, Any]:
    """An operation not driven: why, as text and as a kind, and its preflight's status and time."""
    return {
        "method": s.method,
        "path": s.path,
        "reason": redact_text(s.reason),
        "cause": None if s.cause is None else str(s.cause),
        "status": s.status,
        "elapsed_ms": s.elapsed_ms,
    }


def report_to_json(report: ProbeReport) -> dict[str, Any]:
    """The whole report as the versioned JSON document the README describes."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": report.source,
        "tool_version": report.tool_version,
        "created_at": report.created_at,
        "target": redact_url(report.target),
        "interrupted": report.interrupted,
        "elapsed_s": round(report.elapsed_s, 3),
        "settings": dict(report.settings),
        "host": None if report.host is None else host_to_json(report.host),
        "server": {
            "local": report.server.local,
            "pid": report.server.pid,
            "kind": report.server.kind,
            "cmdline": None if report.server.cmdline is None else redact_text(report.server.cmdline),
            "workers": report.server.workers,
            "worker_pids": list(report.server.worker_pids),
        },
        "endpoints": [endpoint_to_json(e) for e in report.endpoints],
        "skipped": [skipped_to_json(s) for s in report.skipped],
        "host_load": None if report.host_load is None else host_busy_to_json(report.host_load),
        "traffic": None if report.traffic is None else traffic_to_json(report.traffic),
        # Only when the step ran: reports without it stay as they were, byte for byte.
        **({} if report.overload is None else {"overload": overload_to_json(report.overload)}),
    }


# ---------------------------------------------------------------------------------------
# Reading a saved report back: checked once, here, with messages naming what is wrong.

# Concurrency and counts beyond these are not something a probe measured.
_MAX_CONCURRENCY: Final = 1_000_000
_MAX_COUNT: Final = 10**12


def _latency_from_json(r: JsonReader, raw: object, where: str) -> Latency | None:
    if raw is None:
        return None
    d = r.obj(raw, where)
    return Latency(
        p50=r.num(d.get("p50"), f"{where}.p50", 0),
        p90=r.num(d.get("p90"), f"{where}.p90", 0),
        p99=r.opt_num(d.get("p99"), f"{where}.p99", 0),
        max=r.num(d.get("max"), f"{where}.max", 0),
        mean=r.num(d.get("mean"), f"{where}.mean", 0),
    )


def _opt_tuple(r: JsonReader, raw: object, where: str, item: Any) -> tuple[Any, ...] | None:
    return None if raw is None else tuple(item(x, where) for x in r.list_(raw, where))


def _level_from_json(r: JsonReader, raw: object, where: str) -> Level:
    d = r.obj(raw, where)
    kinds = r.obj(d.get("errors_by_kind", {}), f"{where}.errors_by_kind")
    return Level(
        concurrency=r.int_(d.get("concurrency"), f"{where}.concurrency", 1, _MAX_CONCURRENCY),
        requests=r.int_(d.get("requests"), f"{where}.requests", 0, _MAX_COUNT),
        errors=r.int_(d.get("errors"), f"{where}.errors", 0, _MAX_COUNT),
        errors_by_kind={
            str(k): r.int_(v, f"{where}.errors_by_kind.{k}", 0, _MAX_COUNT) for k, v in kinds.items()
        },
        duration_s=r.num(d.get("duration_s"), f"{where}.duration_s", 0),
        throughput_rps=r.num(d.get("throughput_rps"), f"{where}.throughput_rps", 0),
        latency_ms=_latency_from_json(r, d.get("latency_ms"), f"{where}.latency_ms"),
        server_cpu_cores=r.opt_num(d.get("server_cpu_cores"), f"{where}.server_cpu_cores", 0),
        server_rss_bytes=_opt_tuple(
            r, d.get("server_rss_bytes"), f"{where}.server_rss_bytes", lambda x, w: r.int_(x, w, 0)
        ),
        client_cpu_cores=r.num(d.get("client_cpu_cores"), f"{where}.client_cpu_cores", 0),
        client_saturated=r.bool_(d.get("client_saturated", False), f"{where}.client_saturated"),
        littles_law_ratio=r.opt_num(d.get("littles_law_ratio"), f"{where}.littles_law_ratio", 0),
        p99_supported=r.bool_(d.get("p99_supported", False), f"{where}.p99_supported"),
        server_cpu_by_worker=_opt_tuple(
            r, d.get("server_cpu_by_worker"), f"{where}.server_cpu_by_worker", lambda x, w: r.num(x, w, 0)
        ),
        worker_imbalance=r.bool_(d.get("worker_imbalance", False), f"{where}.worker_imbalance"),
        errors_by_status=_statuses(r, d.get("errors_by_status", {}), f"{where}.errors_by_status"),
        in_flight_at_end=r.int_(d.get("in_flight_at_end", 0), f"{where}.in_flight_at_end", 0, _MAX_COUNT),
        oldest_in_flight_ms=r.opt_num(d.get("oldest_in_flight_ms"), f"{where}.oldest_in_flight_ms", 0),
        stalled=r.bool_(d.get("stalled", False), f"{where}.stalled"),
        demand=None
        if d.get("demand") is None
        else demand_from_json(d["demand"], f"{r.source}: {where}.demand"),
    )


def _statuses(r: JsonReader, raw: object, where: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for k, v in r.obj(raw, where).items():
        if not str(k).isdigit() or not 100 <= int(k) <= 599:
            raise r.fail(f"{where}.{k}", "an HTTP status code as the key")
        out[int(k)] = r.int_(v, f"{where}.{k}", 0, _MAX_COUNT)
    return out


def _evidence_from_json(r: JsonReader, raw: object, where: str) -> Evidence:
    d = r.obj(raw, where)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Evidence):
        v = d.get(f.name)
        if v is None:
            continue
        key = f"{where}.{f.name}"
        values[f.name] = r.int_(v, key, 0) if "int" in str(f.type) else r.num(v, key)
    return Evidence(**values)


def _enum(r: JsonReader, kind: type[StrEnum], raw: object, where: str) -> Any:
    text = r.str_(raw, where)
    try:
        return kind(text)
    except ValueError:
        raise r.fail(where, "one of " + ", ".join(str(m) for m in kind)) from None


def _verdict_from_json(r: JsonReader, raw: object, where: str) -> Verdict | None:
    if raw is None:
        return None
    d = r.obj(raw, where)
    return Verdict(
        cls=_enum(r, EndpointClass, d.get("class"), f"{where}.class"),
        confidence=r.num(d.get("confidence"), f"{where}.confidence", 0, 1),
        summary=r.str_(d.get("summary", ""), f"{where}.summary"),
        evidence=_evidence_from_json(r, d.get("evidence", {}), f"{where}.evidence"),
        advice=tuple(r.str_(a, f"{where}.advice") for a in r.list_(d.get("advice", []), f"{where}.advice")),
    )


def _endpoint_from_json(r: JsonReader, raw: object, where: str) -> Endpoint:
    e = r.obj(raw, where)
    return Endpoint(
        method=r.str_(e.get("method"), f"{where}.method"),
        path=r.str_(e.get("path"), f"{where}.path"),
        url=r.str_(e.get("url", ""), f"{where}.url"),
        levels=tuple(
            _level_from_json(r, lv, f"{where}.levels[{j}]")
            for j, lv in enumerate(r.list_(e.get("levels"), f"{where}.levels"))
        ),
        stop_reason=_enum(r, StopReason, e.get("stop_reason"), f"{where}.stop_reason"),
        stop_detail=r.str_(e.get("stop_detail", ""), f"{where}.stop_detail"),
        verdict=_verdict_from_json(r, e.get("verdict"), f"{where}.verdict"),
        profile=_profile_from_json(r, e.get("profile"), f"{where}.profile"),
        profile_unavailable=r.opt_str(e.get("profile_unavailable"), f"{where}.profile_unavailable"),
        body=r.opt_str(e.get("body"), f"{where}.body"),
        content_type=r.opt_str(e.get("content_type"), f"{where}.content_type"),
        body_given=r.bool_(e.get("body_given", False), f"{where}.body_given"),
        evidence_depth=None
        if e.get("evidence_depth") is None
        else _enum(r, EvidenceDepth, e.get("evidence_depth"), f"{where}.evidence_depth"),
    )


def _profile_from_json(r: JsonReader, raw: object, where: str) -> RouteProfile | None:
    if raw is None:
        return None
    try:
        return profile_from_json(raw)
    except BadInputError as e:
        raise r.fail(where, f"a stack profile ({e})") from None


def _server_from_json(r: JsonReader, raw: object) -> ServerInfo:
    s = r.obj(raw, "server")
    return ServerInfo(
        local=r.bool_(s.get("local", False), "server.local"),
        pid=r.opt_int(s.get("pid"), "server.pid", 1),
        kind=r.opt_str(s.get("kind"), "server.kind"),
        cmdline=r.opt_str(s.get("cmdline"), "server.cmdline"),
        workers=r.opt_int(s.get("workers"), "server.workers", 1, _MAX_CONCURRENCY),
        worker_pids=tuple(
            r.int_(p, "server.worker_pids", 1)
            for p in r.list_(s.get("worker_pids", []), "server.worker_pids")
        ),
    )


def _skipped_from_json(r: JsonReader, raw: object, where: str) -> Skipped:
    x = r.obj(raw, where)
    cause = r.opt_str(x.get("cause"), f"{where}.cause")
    causes = [c.value for c in SkipCause]
    if cause is not None and cause not in causes:
        raise r.fail(f"{where}.cause", f"one of {', '.join(causes)}")
    return Skipped(
        method=r.str_(x.get("method"), f"{where}.method"),
        path=r.str_(x.get("path"), f"{where}.path"),
        reason=r.str_(x.get("reason"), f"{where}.reason"),
        cause=None if cause is None else SkipCause(cause),
        status=r.opt_int(x.get("status"), f"{where}.status", 100, 999),
        elapsed_ms=r.opt_num(x.get("elapsed_ms"), f"{where}.elapsed_ms", 0),
    )


def _source(r: JsonReader, raw: object) -> str:
    text = r.str_(raw, "source")
    if text not in SOURCES:
        raise r.fail("source", "one of " + ", ".join(SOURCES))
    return text


def report_from_json(raw: object, source: str) -> ProbeReport:
    """Check and convert a saved report; errors name the file and the key."""
    r = JsonReader(source)
    d = r.obj(raw, "top level")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"{SCHEMA_VERSION} (this file says {version!r}; probe again)")
    return ProbeReport(
        target=r.str_(d.get("target"), "target"),
        host=None if d.get("host") is None else host_from_json(d.get("host"), source),
        server=_server_from_json(r, d.get("server")),
        endpoints=tuple(
            _endpoint_from_json(r, e, f"endpoints[{i}]")
            for i, e in enumerate(r.list_(d.get("endpoints"), "endpoints"))
        ),
        skipped=tuple(
            _skipped_from_json(r, x, f"skipped[{i}]")
            for i, x in enumerate(r.list_(d.get("skipped", []), "skipped"))
        ),
        settings=r.obj(d.get("settings", {}), "settings"),
        created_at=r.str_(d.get("created_at", ""), "created_at"),
        tool_version=r.str_(d.get("tool_version", ""), "tool_version"),
        interrupted=r.bool_(d.get("interrupted", False), "interrupted"),
        elapsed_s=r.num(d.get("elapsed_s", 0.0), "elapsed_s", 0),
        source=_source(r, d.get("source", "probe")),
        host_load=None
        if d.get("host_load") is None
        else host_busy_from_json(d["host_load"], f"{source}: host_load"),
        # Added within schema 2 (absent from older reports, which still load).
        traffic=None if d.get("traffic") is None else traffic_from_json(d["traffic"], source),
        overload=overload_from_json(r, d.get("overload")),
    )


def load_report(path: Path | None) -> ProbeReport | None:
    """The probe report: an explicit path must exist; the default one may be missing (None)."""
    chosen = path or DEFAULT_REPORT
    if not chosen.exists():
        if path is not None:
            raise BadInputError(f"{path}: no such probe report (run `fastapi-tune probe URL --out {path}`)")
        return None
    try:
        raw = json.loads(chosen.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{chosen}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{chosen}: not JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise BadInputError(f"{chosen}: nested too deeply to be a probe report") from None
    return report_from_json(raw, str(chosen))
