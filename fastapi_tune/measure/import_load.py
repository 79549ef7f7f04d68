"""Read Locust's and k6's results back as a probe report, so classify and the plan can use them.

The load came from elsewhere (often several machines), so nothing is known about the server:
its CPU, RSS and worker count are None, the report's `source` says which tool ran, and the
generator's own CPU is unknown (0.0, never marked saturated: check the tool's own warnings).

Each result row or sample is mapped back to an endpoint by its route tag ("GET /orders/{oid}",
see export_load) and to a level by the concurrency in effect: Locust's user count, or the k6
ladder step's VUs (tags.vus). Files from another tool or version fail with one line naming the
file and what was expected (BadInputError, exit 3).
"""

from __future__ import annotations

import csv
import json
import math
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

LOCUST_HISTORY_SUFFIX: Final = "_stats_history.csv"
# The columns of Locust's stats history (locust.stats.StatsCSVFileWriter, 2.x) this reader uses.
LOCUST_COLUMNS: Final = (
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "50%",
    "90%",
    "99%",
    "100%",
    "Total Request Count",
    "Total Failure Count",
    "Total Average Response Time",
)
LOCUST_TOTAL_ROW: Final = "Aggregated"
# Rows are written every second while users ramp one by one; a step is a run of at least three
# rows (two intervals) at one user count, which leaves ramps out.
MIN_STEP_ROWS: Final = 3
# k6 samples: the first fifth of each step is left out (connections opening, the previous step's
# last requests finishing), like the probe's warm-up.
K6_WARMUP_FRACTION: Final = 0.2
# k6's own tag of a failed request (status >= 400 or no response), and its "no response" status.
K6_EXPECTED_TAG: Final = "expected_response"
STOP_REASON: Final = StopReason.IMPORTED


# ---------------------------------------------------------------------------------------
# Shared


def _split_name(name: str, method: str) -> tuple[str, str]:
    """("GET", "/x") from a route tag "GET /x"; a bare path takes the tool's own method column."""
    head, _, rest = name.partition(" ")
    if rest.startswith("/") and head.isalpha() and head.isupper():
        return head, rest
    return (method or "GET").upper(), name


def _kind(status: int) -> str:
    if status == 429:
        return "429"
    if 400 <= status < 500:
        return "4xx"
    if status >= 500:
        return "5xx"
    return "other"


def _level(
    users: int, requests: int, errors: int, kinds: Mapping[str, int], seconds: float, latency: Latency | None
) -> Level:
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
        client_cpu_cores=0.0,  # the generator ran elsewhere: unknown
        client_saturated=False,
        littles_law_ratio=None if little is None else round(little, 4),
        p99_supported=requests >= P99_MIN_SAMPLES,
    )


def _report(
    source: str, files: Sequence[Path], target: str, levels: Mapping[tuple[str, str], list[Level]]
) -> ProbeReport:
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
        server=ServerInfo(local=False),
        endpoints=endpoints,
        settings={"imported_from": [str(f) for f in files]},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        source=source,
    )


# ---------------------------------------------------------------------------------------
# Locust


@dataclass(frozen=True)
class _Row:
    time: int
    users: int
    method: str
    name: str
    pct: tuple[float | None, float | None, float | None, float | None]  # p50, p90, p99, max
    total: int
    failures: int
    mean_ms: float


def _history_file(prefix: Path) -> Path:
    if prefix.name.endswith(LOCUST_HISTORY_SUFFIX):
        return prefix
    return prefix.with_name(prefix.name + LOCUST_HISTORY_SUFFIX)


def _num(text: str | None, line: int, column: str, path: Path) -> float | None:
    """A number from a CSV cell; N/A (no sample yet) is None."""
    if text == "N/A":
        return None
    try:
        value = float(text or "")
    except ValueError:
        raise BadInputError(
            f"{path}: line {line}, column {column!r}: expected a number, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise BadInputError(f"{path}: line {line}, column {column!r}: expected a finite number, got {text!r}")
    return value


def _req(text: str | None, line: int, column: str, path: Path) -> float:
    value = _num(text, line, column, path)
    if value is None:
        raise BadInputError(f"{path}: line {line}, column {column!r}: expected a number, got 'N/A'")
    return value


def _locust_rows(path: Path) -> list[_Row]:
    expected = f"Locust's stats history (`--csv PREFIX --csv-full-history`: PREFIX{LOCUST_HISTORY_SUFFIX})"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in LOCUST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BadInputError(f"{path}: expected {expected}; missing columns: {', '.join(missing)}")
            return [_locust_row(raw, reader.line_num, path) for raw in reader]
    except FileNotFoundError:
        raise BadInputError(f"{path}: not found; expected {expected}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{path}: expected {expected}; not a readable CSV ({e})") from None


def _locust_row(raw: Mapping[str, str | None], line: int, path: Path) -> _Row:
    if any(raw.get(c) is None for c in LOCUST_COLUMNS):
        raise BadInputError(f"{path}: line {line}: expected {len(LOCUST_COLUMNS)}+ columns, the row is short")
    pct = tuple(_num(raw[c], line, c, path) for c in ("50%", "90%", "99%", "100%"))
    return _Row(
        time=int(_req(raw["Timestamp"], line, "Timestamp", path)),
        users=int(_req(raw["User Count"], line, "User Count", path)),
        method=raw["Type"] or "",
        name=raw["Name"] or "",
        pct=(pct[0], pct[1], pct[2], pct[3]),
        total=int(_req(raw["Total Request Count"], line, "Total Request Count", path)),
        failures=int(_req(raw["Total Failure Count"], line, "Total Failure Count", path)),
        mean_ms=_req(raw["Total Average Response Time"], line, "Total Average Response Time", path),
    )


def _runs(rows: Sequence[_Row]) -> Iterator[list[_Row]]:
    """Consecutive rows at one user count (one route's rows, in time order)."""
    run: list[_Row] = []
    for row in rows:
        if run and row.users != run[-1].users:
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def _locust_level(run: Sequence[_Row]) -> Level | None:
    """A steady step from its rows, or None (a ramp, an idle route, too short).

    The counts are cumulative: the step's requests are last - first, counted from the first row
    at the new user count (the interval before it still carried the previous step's reports).
    """
    first, last = run[0], run[-1]
    requests, errors = last.total - first.total, last.failures - first.failures
    seconds = last.time - first.time
    if first.users <= 0 or len(run) < MIN_STEP_ROWS or requests <= 0 or seconds <= 0:
        return None
    mean = (last.mean_ms * last.total - first.mean_ms * first.total) / requests
    p50, p90, p99, top = last.pct  # over Locust's sliding window, which the exported file keeps in the step
    latency = None
    if p50 is not None and p90 is not None and top is not None:
        latency = Latency(
            p50=p50, p90=p90, p99=p99 if requests >= P99_MIN_SAMPLES else None, max=top, mean=mean
        )
    return _level(first.users, requests, errors, {"other": errors} if errors else {}, seconds, latency)


def import_locust(prefix: Path, target: str = "") -> ProbeReport:
    """A report from `locust --csv PREFIX --csv-full-history` (PREFIX or the history file itself)."""
    path = _history_file(prefix)
    rows = _locust_rows(path)
    by_name: dict[tuple[str, str], list[_Row]] = {}
    for row in sorted(rows, key=lambda r: r.time):  # sorted() is stable: per-second order is kept
        if row.name != LOCUST_TOTAL_ROW:
            by_name.setdefault(_split_name(row.name, row.method), []).append(row)
    if not by_name:
        raise BadInputError(f"{path}: only {LOCUST_TOTAL_ROW!r} rows; run locust with --csv-full-history")
    levels: dict[tuple[str, str], list[Level]] = {}
    for key, named in by_name.items():
        best: dict[int, Level] = {}
        for run in _runs(named):
            lv = _locust_level(run)
            # A user count seen twice (a ladder run again): keep the longer step.
            if lv is not None and (lv.concurrency not in best or lv.requests > best[lv.concurrency].requests):
                best[lv.concurrency] = lv
        if best:
            levels[key] = list(best.values())
    if not levels:
        raise BadInputError(
            f"{path}: no steady step of {MIN_STEP_ROWS}+ rows at one user count with requests"
        )
    return _report("locust", [path], target, levels)


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


def _k6_samples(paths: Sequence[Path]) -> dict[tuple[str, str, int], list[_Sample]]:
    """http_req_duration samples by (method, path, vus), from points tagged by the exported script."""
    groups: dict[tuple[str, str, int], list[_Sample]] = {}
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
        key = (*_split_name(name, str(tags.get("method", ""))), int(vus))
        groups.setdefault(key, []).append(_Sample(when, float(value), failed, status))
    return groups


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
        kinds[_kind(s.status)] = kinds.get(_kind(s.status), 0) + 1
    ms = sorted(s.ms for s in counted)
    latency = Latency(
        p50=percentile(ms, 50),
        p90=percentile(ms, 90),
        p99=percentile(ms, 99) if len(ms) >= P99_MIN_SAMPLES else None,
        max=ms[-1],
        mean=sum(ms) / len(ms),
    )
    return _level(vus, len(counted), len(failed), kinds, seconds, latency)


def import_k6(path: Path, *more: Path, target: str = "") -> ProbeReport:
    """A report from `k6 run --out json=FILE` of an exported ladder (several files: one per instance)."""
    paths = [path, *more]
    groups = _k6_samples(paths)
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
    return _report("k6", paths, target, levels)
