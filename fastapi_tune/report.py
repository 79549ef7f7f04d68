"""The probe report: frozen dataclasses, and the versioned JSON format they save to.

The JSON names here are a public contract (scripts rely on them; the README documents
them). Bump SCHEMA_VERSION when a name changes meaning or goes away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi_tune.errors import BadInputError

SCHEMA_VERSION: Final = 1

# The endpoint classes, exactly as they appear in the report's `class` field.
IO_BOUND: Final = "io-bound"
CPU_BOUND: Final = "cpu-bound"
LOOP_BLOCKING: Final = "loop-blocking"
THREADPOOL_BOUND: Final = "threadpool-bound"
SERIALIZED: Final = "serialized"
INCONCLUSIVE: Final = "inconclusive"
CLASSES: Final = (IO_BOUND, CPU_BOUND, LOOP_BLOCKING, THREADPOOL_BOUND, SERIALIZED, INCONCLUSIVE)

# Who generated the load: fastapi-tune's own probe, or Locust / k6 results imported (import_load.py).
SOURCES: Final = ("probe", "locust", "k6")


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
    server_cpu_per_worker: tuple[float, ...] | None = None  # cores each worker used
    # Some workers idled while others were busy: keep-alive connections stay on the worker that
    # accepted them, so one busy worker can make a 2-worker server look like one.
    worker_imbalance: bool = False


@dataclass(frozen=True)
class Verdict:
    """What limits an endpoint, how sure we are, the numbers behind it and what to do."""

    cls: str  # one of CLASSES
    confidence: float  # 0..1
    summary: str  # one sentence of evidence
    evidence: Mapping[str, float | int | None]
    advice: tuple[str, ...]


@dataclass(frozen=True)
class Endpoint:
    """One probed operation and its ladder."""

    method: str
    path: str  # the OpenAPI path template (e.g. /orders/{oid}) or the path given with -e
    url: str  # the concrete URL that was requested
    levels: tuple[Level, ...]
    stop_reason: str  # why the ladder ended ("max level", "saturated", "errors", "429", ...)
    verdict: Verdict | None = None


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
class Skipped:
    """An operation the probe did not drive, and why."""

    method: str
    path: str
    reason: str


@dataclass(frozen=True)
class ProbeReport:
    """Everything one probe measured, ready to save, classify and recommend from."""

    target: str
    host: Mapping[str, Any]  # exactly what `fastapi-tune host --json` prints
    server: ServerInfo
    endpoints: tuple[Endpoint, ...]
    skipped: tuple[Skipped, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    tool_version: str = ""
    interrupted: bool = False
    elapsed_s: float = 0.0
    source: str = "probe"  # one of SOURCES


# ---------------------------------------------------------------------------------------
# JSON


def _latency_to_json(lat: Latency | None) -> dict[str, float | None] | None:
    if lat is None:
        return None
    return {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "max": lat.max, "mean": lat.mean}


def level_to_json(level: Level) -> dict[str, Any]:
    """A level as the report's JSON object."""
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
        "server_cpu_per_worker": (
            None
            if level.server_cpu_per_worker is None
            else [round(c, 3) for c in level.server_cpu_per_worker]
        ),
        "worker_imbalance": level.worker_imbalance,
    }


def verdict_to_json(v: Verdict) -> dict[str, Any]:
    """A verdict as JSON (the class itself is also lifted to the endpoint's `class`)."""
    return {
        "class": v.cls,
        "confidence": round(v.confidence, 3),
        "summary": v.summary,
        "evidence": dict(v.evidence),
        "advice": list(v.advice),
    }


def report_to_json(report: ProbeReport) -> dict[str, Any]:
    """The whole report as the versioned JSON document the README describes."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": report.tool_version,
        "created_at": report.created_at,
        "target": report.target,
        "source": report.source,
        "interrupted": report.interrupted,
        "elapsed_s": round(report.elapsed_s, 3),
        "settings": dict(report.settings),
        "host": dict(report.host),
        "server": {
            "local": report.server.local,
            "pid": report.server.pid,
            "kind": report.server.kind,
            "cmdline": report.server.cmdline,
            "workers": report.server.workers,
            "worker_pids": list(report.server.worker_pids),
        },
        "endpoints": [
            {
                "method": e.method,
                "path": e.path,
                "url": e.url,
                "class": e.verdict.cls if e.verdict else None,
                "verdict": verdict_to_json(e.verdict) if e.verdict else None,
                "stop_reason": e.stop_reason,
                "levels": [level_to_json(lv) for lv in e.levels],
            }
            for e in report.endpoints
        ],
        "skipped": [{"method": s.method, "path": s.path, "reason": s.reason} for s in report.skipped],
    }


# ---------------------------------------------------------------------------------------
# Reading a saved report back: checked once, here, with messages naming what is wrong.


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, expected: str) -> BadInputError:
        return BadInputError(f"{self.source}: {where}: expected {expected}")

    def obj(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "an object")
        return value

    def num(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, "a number")
        return float(value)

    def opt_num(self, value: object, where: str) -> float | None:
        return None if value is None else self.num(value, where)

    def int_(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "an integer")
        return value

    def str_(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "a string")
        return value

    def list_(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "a list")
        return value


def _latency_from_json(r: _Reader, raw: object, where: str) -> Latency | None:
    if raw is None:
        return None
    d = r.obj(raw, where)
    return Latency(
        p50=r.num(d.get("p50"), f"{where}.p50"),
        p90=r.num(d.get("p90"), f"{where}.p90"),
        p99=r.opt_num(d.get("p99"), f"{where}.p99"),
        max=r.num(d.get("max"), f"{where}.max"),
        mean=r.num(d.get("mean"), f"{where}.mean"),
    )


def _level_from_json(r: _Reader, raw: object, where: str) -> Level:
    d = r.obj(raw, where)
    rss = d.get("server_rss_bytes")
    per_worker = d.get("server_cpu_per_worker")
    kinds = r.obj(d.get("errors_by_kind", {}), f"{where}.errors_by_kind")
    return Level(
        concurrency=r.int_(d.get("concurrency"), f"{where}.concurrency"),
        requests=r.int_(d.get("requests"), f"{where}.requests"),
        errors=r.int_(d.get("errors"), f"{where}.errors"),
        errors_by_kind={str(k): r.int_(v, f"{where}.errors_by_kind.{k}") for k, v in kinds.items()},
        duration_s=r.num(d.get("duration_s"), f"{where}.duration_s"),
        throughput_rps=r.num(d.get("throughput_rps"), f"{where}.throughput_rps"),
        latency_ms=_latency_from_json(r, d.get("latency_ms"), f"{where}.latency_ms"),
        server_cpu_cores=r.opt_num(d.get("server_cpu_cores"), f"{where}.server_cpu_cores"),
        server_rss_bytes=(
            None
            if rss is None
            else tuple(
                r.int_(x, f"{where}.server_rss_bytes") for x in r.list_(rss, f"{where}.server_rss_bytes")
            )
        ),
        client_cpu_cores=r.num(d.get("client_cpu_cores"), f"{where}.client_cpu_cores"),
        client_saturated=bool(d.get("client_saturated", False)),
        littles_law_ratio=r.opt_num(d.get("littles_law_ratio"), f"{where}.littles_law_ratio"),
        p99_supported=bool(d.get("p99_supported", False)),
        server_cpu_per_worker=(
            None
            if per_worker is None
            else tuple(
                r.num(x, f"{where}.server_cpu_per_worker")
                for x in r.list_(per_worker, f"{where}.server_cpu_per_worker")
            )
        ),
        worker_imbalance=bool(d.get("worker_imbalance", False)),
    )


def _verdict_from_json(r: _Reader, raw: object, where: str) -> Verdict | None:
    if raw is None:
        return None
    d = r.obj(raw, where)
    cls = r.str_(d.get("class"), f"{where}.class")
    if cls not in CLASSES:
        raise r.fail(f"{where}.class", "one of " + ", ".join(CLASSES))
    evidence = r.obj(d.get("evidence", {}), f"{where}.evidence")
    return Verdict(
        cls=cls,
        confidence=r.num(d.get("confidence"), f"{where}.confidence"),
        summary=r.str_(d.get("summary", ""), f"{where}.summary"),
        evidence={str(k): v for k, v in evidence.items() if v is None or isinstance(v, (int, float))},
        advice=tuple(r.str_(a, f"{where}.advice") for a in r.list_(d.get("advice", []), f"{where}.advice")),
    )


def report_from_json(raw: object, source: str) -> ProbeReport:
    """Check and convert a saved report; errors name the file and the key."""
    r = _Reader(source)
    d = r.obj(raw, "top level")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"{SCHEMA_VERSION} (this file says {version!r}; probe again)")
    s = r.obj(d.get("server"), "server")
    endpoints = []
    for i, raw_e in enumerate(r.list_(d.get("endpoints"), "endpoints")):
        where = f"endpoints[{i}]"
        e = r.obj(raw_e, where)
        endpoints.append(
            Endpoint(
                method=r.str_(e.get("method"), f"{where}.method"),
                path=r.str_(e.get("path"), f"{where}.path"),
                url=r.str_(e.get("url", ""), f"{where}.url"),
                levels=tuple(
                    _level_from_json(r, lv, f"{where}.levels[{j}]")
                    for j, lv in enumerate(r.list_(e.get("levels"), f"{where}.levels"))
                ),
                stop_reason=r.str_(e.get("stop_reason", ""), f"{where}.stop_reason"),
                verdict=_verdict_from_json(r, e.get("verdict"), f"{where}.verdict"),
            )
        )
    skipped = tuple(
        Skipped(
            method=r.str_(r.obj(x, "skipped[]").get("method"), "skipped[].method"),
            path=r.str_(x.get("path"), "skipped[].path"),
            reason=r.str_(x.get("reason"), "skipped[].reason"),
        )
        for x in r.list_(d.get("skipped", []), "skipped")
    )
    workers = s.get("workers")
    pid = s.get("pid")
    source = r.str_(d.get("source", "probe"), "source")  # absent in reports written before it existed
    if source not in SOURCES:
        raise r.fail("source", "one of " + ", ".join(SOURCES))
    return ProbeReport(
        target=r.str_(d.get("target"), "target"),
        host=r.obj(d.get("host"), "host"),
        server=ServerInfo(
            local=bool(s.get("local", False)),
            pid=None if pid is None else r.int_(pid, "server.pid"),
            kind=s.get("kind") if isinstance(s.get("kind"), str) else None,
            cmdline=s.get("cmdline") if isinstance(s.get("cmdline"), str) else None,
            workers=None if workers is None else r.int_(workers, "server.workers"),
            worker_pids=tuple(
                r.int_(p, "server.worker_pids")
                for p in r.list_(s.get("worker_pids", []), "server.worker_pids")
            ),
        ),
        endpoints=tuple(endpoints),
        skipped=skipped,
        settings=r.obj(d.get("settings", {}), "settings"),
        created_at=str(d.get("created_at", "")),
        tool_version=str(d.get("tool_version", "")),
        interrupted=bool(d.get("interrupted", False)),
        elapsed_s=float(d.get("elapsed_s", 0.0) or 0.0),
        source=source,
    )
