"""Read Locust's and k6's results back as a probe report, so classify and the plan can use them.

The load came from elsewhere (often several machines), so the server was not observed: its CPU
and RSS are None, the report's `source` says which tool ran. Its worker count is the one the
script was exported with (the probe's; `import --workers` overrides it). The generator's own CPU
is known where the exported script measured it (Locust); otherwise 0.0, never marked saturated.

Each result is mapped back to an endpoint by its route tag ("GET /orders/{oid}", see export_load)
and to a level by the ladder step that sent it (Locust: the step in the request's name, see
import_locust; k6: tags.vus). Files from another tool or version fail with one line naming the
file and what was expected (BadInputError, exit 3). This module holds what both share, and k6.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from fastapi_tune import __version__
from fastapi_tune.core.errors import BadInputError
from fastapi_tune.core.rules import P99_MIN_SAMPLES
from fastapi_tune.measure.report import Endpoint, Latency, Level, ProbeReport, ServerInfo, StopReason
from fastapi_tune.measure.stats import percentile

# k6 samples: the first fifth of each step is left out (connections opening, the previous step's
# last requests finishing), like the probe's warm-up.
K6_WARMUP_FRACTION: Final = 0.2
# k6's own tag of a failed request (status >= 400 or no response), and its "no response" status.
K6_EXPECTED_TAG: Final = "expected_response"
# The exported script's test-wide tag: the server's worker processes the probe saw (export_load).
K6_WORKERS_TAG: Final = "fastapi_tune_server_workers"
STOP_REASON: Final = StopReason.IMPORTED


# ---------------------------------------------------------------------------------------
# Shared


def split_name(name: str, method: str) -> tuple[str, str]:
    """("GET", "/x") from a route tag "GET /x"; a bare path takes the tool's own method column."""
    head, _, rest = name.partition(" ")
    if rest.startswith("/") and head.isalpha() and head.isupper():
        return head, rest
    return (method or "GET").upper(), name


def error_kind(status: int) -> str:
    if status == 429:
        return "429"
    if 400 <= status < 500:
        return "4xx"
    if status >= 500:
        return "5xx"
    return "other"


def imported_level(
    users: int,
    requests: int,
    errors: int,
    kinds: Mapping[str, int],
    seconds: float,
    latency: Latency | None,
    client_cores: float | None = None,
    client_saturated: bool = False,
) -> Level:
    """A level as the tool measured it; the generator's CPU when the script measured it."""
    ok_rps = (requests - errors) / seconds
    little = ok_rps * latency.mean / 1000 / users if latency is not None and users > 0 else None
    return Level(
        concurrency=users,
        requests=requests,
        errors=errors,
        errors_by_kind=dict(kinds),
        duration_s=seconds,
        throughput_rps=ok_rps,
        latency_ms=latency,
        server_cpu_cores=None,
        server_rss_bytes=None,
        client_cpu_cores=0.0 if client_cores is None else round(client_cores, 3),  # None: not measured
        client_saturated=client_saturated,
        littles_law_ratio=None if little is None else round(little, 4),
        p99_supported=requests >= P99_MIN_SAMPLES,
    )


def imported_report(
    source: str,
    files: Sequence[Path],
    target: str,
    levels: Mapping[tuple[str, str], list[Level]],
    workers: int | None = None,
) -> ProbeReport:
    """The report of an imported run; `workers`: the server's worker processes, when known."""
    endpoints = tuple(
        Endpoint(
            method=method,
            path=path,
            url=target + path,
            levels=tuple(sorted(lvs, key=lambda lv: lv.concurrency)),
            stop_reason=STOP_REASON,
        )
        for (method, path), lvs in levels.items()
    )
    return ProbeReport(
        target=target,
        host=None,  # the server's host was not observed; recommend takes --cpus/--memory
        server=ServerInfo(local=False, workers=workers),
        endpoints=endpoints,
        settings={"imported_from": [str(f) for f in files]},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        source=source,
    )


# ---------------------------------------------------------------------------------------
# k6


@dataclass(frozen=True)
class _Sample:
    time: float  # seconds since the epoch
    ms: float
    failed: bool
    status: int


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _k6_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:  # k6 writes nanoseconds; datetime keeps microseconds
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text)).timestamp()
    except ValueError:
        return None


def _k6_lines(paths: Iterable[Path]) -> Iterator[tuple[Path, int, object]]:
    expected = "k6's JSON output (k6 run --out json=FILE), one JSON object per line"
    for path in paths:
        try:
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield path, n, json.loads(line)
                        except json.JSONDecodeError:
                            raise BadInputError(f"{path}: line {n}: expected {expected}") from None
        except FileNotFoundError:
            raise BadInputError(f"{path}: not found; expected {expected}") from None
        except UnicodeDecodeError:
            raise BadInputError(f"{path}: expected {expected}; not UTF-8 text") from None


def _k6_samples(paths: Sequence[Path]) -> tuple[dict[tuple[str, str, int], list[_Sample]], int | None]:
    """http_req_duration samples by (method, path, vus), from points tagged by the exported script,
    and the server's worker count the script was exported with (None: not said)."""
    groups: dict[tuple[str, str, int], list[_Sample]] = {}
    workers: int | None = None
    for path, n, obj in _k6_lines(paths):
        if not isinstance(obj, dict) or obj.get("type") not in ("Metric", "Point"):
            raise BadInputError(
                f"{path}: line {n}: expected a k6 Metric or Point object (k6 run --out json=FILE)"
            )
        if obj["type"] != "Point" or obj.get("metric") != "http_req_duration":
            continue
        data = obj.get("data")
        tags = data.get("tags") if isinstance(data, dict) else None
        value = data.get("value") if isinstance(data, dict) else None
        when = _k6_time(data.get("time")) if isinstance(data, dict) else None
        if not isinstance(tags, dict) or not isinstance(value, (int, float)) or when is None:
            raise BadInputError(
                f"{path}: line {n}: expected a Point with data.time, data.value and data.tags"
            )
        name, vus = tags.get("name"), tags.get("vus")
        if not isinstance(name, str) or not isinstance(vus, str) or not vus.isdigit():
            continue  # a request the exported ladder did not send (setup, another script's)
        status = int(tags["status"]) if str(tags.get("status", "")).isdigit() else 0
        failed = tags[K6_EXPECTED_TAG] == "false" if K6_EXPECTED_TAG in tags else not 200 <= status < 400
        key = (*split_name(name, str(tags.get("method", ""))), int(vus))
        groups.setdefault(key, []).append(_Sample(when, float(value), failed, status))
        said = str(tags.get(K6_WORKERS_TAG, ""))
        workers = int(said) if said.isdigit() and int(said) > 0 else workers
    return groups, workers


def _k6_level(vus: int, samples: list[_Sample]) -> Level | None:
    samples.sort(key=lambda s: s.time)
    start, end = samples[0].time, samples[-1].time
    cut = start + K6_WARMUP_FRACTION * (end - start)
    counted = [s for s in samples if s.time >= cut]
    seconds = end - cut
    if vus <= 0 or len(counted) < 2 or seconds <= 0:
        return None
    failed = [s for s in counted if s.failed]
    kinds: dict[str, int] = {}
    for s in failed:
        kinds[error_kind(s.status)] = kinds.get(error_kind(s.status), 0) + 1
    ms = sorted(s.ms for s in counted)
    latency = Latency(
        p50=percentile(ms, 50),
        p90=percentile(ms, 90),
        p99=percentile(ms, 99) if len(ms) >= P99_MIN_SAMPLES else None,
        max=ms[-1],
        mean=sum(ms) / len(ms),
    )
    return imported_level(vus, len(counted), len(failed), kinds, seconds, latency)


def import_k6(path: Path, *more: Path, target: str = "") -> ProbeReport:
    """A report from `k6 run --out json=FILE` of an exported ladder (several files: one per instance)."""
    paths = [path, *more]
    groups, workers = _k6_samples(paths)
    if not groups:
        raise BadInputError(
            f"{path}: no http_req_duration points tagged with name and vus; expected the output of a ladder "
            "script from `fastapi-tune export k6` (arrival-rate runs are judged by their thresholds)"
        )
    levels: dict[tuple[str, str], list[Level]] = {}
    for (method, route, vus), samples in groups.items():
        lv = _k6_level(vus, samples)
        if lv is not None:
            levels.setdefault((method, route), []).append(lv)
    return imported_report("k6", paths, target, levels, workers)
