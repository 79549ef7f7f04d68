"""Locust's results as a probe report: the exported ladder's own results file first, else its history.

A locustfile exported by fastapi-tune names every request by the step that sent it ("GET /x @8";
"GET /x @8 warm-up" in the step's first seconds, while users start; "GET /x stopping" between
steps), so a request counts in the step that sent it however late it ends, and the next route's
first step is not mixed with the last one's slowest requests. Each load-generating process also
measures, per step, how long it counted and how much CPU it wanted (on a CPU or waiting for one);
the master writes that to PREFIX_fastapi_tune.json with the server's worker count the script was
exported with. A level is Locust's own totals for that name in PREFIX_stats.csv over the counted
seconds, marked client-saturated when a generator wanted a whole core: the generator was the
limit, not the server. Files from before (no results file) are read from the stats history.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.core.rules import P99_MIN_SAMPLES
from fastapi_tune.measure.import_load import error_kind, imported_level, imported_report, split_name
from fastapi_tune.measure.levels import CLIENT_SATURATED_CORES
from fastapi_tune.measure.report import Latency, Level, ProbeReport

# The exported ladder's conventions (render/locustfile.py writes them into the script).
RESULTS_SUFFIX: Final = "_fastapi_tune.json"
RESULTS_FORMAT: Final = 1
STEP_MARK: Final = " @"  # "GET /x @8": sent while the step with 8 users was counted
WARMUP_MARK: Final = " warm-up"  # "GET /x @8 warm-up": sent while that step's users were starting
STOPPING_MARK: Final = " stopping"  # sent by users being stopped between two steps
STATS_SUFFIX: Final = "_stats.csv"
FAILURES_SUFFIX: Final = "_failures.csv"
# The columns of Locust's final stats (locust.stats.StatsCSV.requests_csv, 2.x) this reader uses.
STATS_COLUMNS: Final = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Average Response Time",
    "50%",
    "90%",
    "99%",
    "100%",
)
LOCUST_HISTORY_SUFFIX: Final = "_stats_history.csv"
# The columns of Locust's stats history (locust.stats.StatsCSVFileWriter, 2.x) the fallback uses.
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
# History rows are written every second while users ramp; a step is a run of at least three rows
# (two intervals) at one user count, which leaves ramps out.
MIN_STEP_ROWS: Final = 3
_STATUS: Final = re.compile(r"\b([1-5]\d\d)\b")


def prefix_of(given: Path) -> Path:
    """The --csv PREFIX, from the prefix itself or any of the files Locust wrote with it."""
    for suffix in (RESULTS_SUFFIX, LOCUST_HISTORY_SUFFIX, STATS_SUFFIX, FAILURES_SUFFIX):
        if given.name.endswith(suffix):
            return given.with_name(given.name.removesuffix(suffix))
    return given


def import_locust(prefix: Path, target: str = "") -> ProbeReport:
    """A report from `locust --csv PREFIX` (PREFIX, or one of its files) of an exported ladder."""
    base = prefix_of(prefix)
    results = base.with_name(base.name + RESULTS_SUFFIX)
    if results.exists():
        return _import_ladder(base, results, target)
    return _import_history(base, target)


# ---------------------------------------------------------------------------------------
# The exported ladder's results file and Locust's final stats


@dataclass(frozen=True)
class _Step:
    users: int
    routes: tuple[str, ...]
    counted_s: float  # the window over which the step's counted requests were sent (see _span)
    cores: tuple[float, ...]  # CPU each generator wanted while counting (on a CPU + waiting)


def _results(path: Path) -> tuple[list[_Step], int | None]:
    """The steps and the server's worker count from PREFIX_fastapi_tune.json, checked."""
    expected = "the results file an exported locustfile writes (PREFIX_fastapi_tune.json)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadInputError(f"{path}: expected {expected} ({e})") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise BadInputError(f"{path}: expected {expected}, format {RESULTS_FORMAT}")
    workers = data.get("server_workers")
    steps = data.get("steps")
    if not isinstance(steps, list) or not (workers is None or (isinstance(workers, int) and workers > 0)):
        raise BadInputError(f"{path}: expected {expected}: 'steps' a list, 'server_workers' a count or null")
    return [s for i, raw in enumerate(steps) if (s := _step(raw, f"{path}: steps[{i}]")) is not None], workers


def _step(raw: object, where: str) -> _Step | None:
    """One step; None when no generator counted it (a step the run never reached)."""
    if not isinstance(raw, dict):
        raise BadInputError(f"{where}: expected an object")
    users, routes, windows = raw.get("users"), raw.get("routes"), raw.get("windows")
    if not isinstance(users, int) or isinstance(users, bool) or users < 1:
        raise BadInputError(f"{where}.users: expected a whole number >= 1")
    if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
        raise BadInputError(f"{where}.routes: expected a list of route names")
    if not isinstance(windows, list):
        raise BadInputError(f"{where}.windows: expected a list")
    spans: list[tuple[float, float, float]] = []
    for k, w in enumerate(windows):
        counted = _seconds(w.get("counted_s") if isinstance(w, dict) else None)
        cpu = _seconds(w.get("cpu_s") if isinstance(w, dict) else None)
        sent = _seconds(w.get("requests", 0) if isinstance(w, dict) else None)
        if counted is None or cpu is None or sent is None or counted <= 0:
            raise BadInputError(
                f"{where}.windows[{k}]: expected counted_s > 0, cpu_s >= 0 (seconds) and requests >= 0"
            )
        spans.append((counted, cpu, sent))
    if not spans:
        return None
    return _Step(users, tuple(routes), _span(spans), tuple(cpu / counted for counted, cpu, _ in spans))


def _span(spans: Sequence[tuple[float, float, float]]) -> float:
    """The seconds that turn the step's request count into its throughput.

    Each generator counted over its own window, and a late timer on a busy one can shorten it by
    a second; a step's few users may all sit on one generator. So the rate is the sum of each
    generator's own (its requests over its window), and the span is the count over that rate.
    """
    sent = sum(n for _, _, n in spans)
    if sent <= 0:
        return sum(t for t, _, _ in spans) / len(spans)
    return sent / sum(n / t for t, _, n in spans)


def _seconds(value: object) -> float | None:
    """A finite, non-negative number of seconds, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if value >= 0 else None


def _stats_rows(path: Path) -> dict[str, Mapping[str, str]]:
    """Locust's final per-name totals (PREFIX_stats.csv), by name."""
    expected = "Locust's final stats (`--csv PREFIX`: PREFIX_stats.csv)"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in STATS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BadInputError(f"{path}: expected {expected}; missing columns: {', '.join(missing)}")
            return {row["Name"] or "": row for row in reader}
    except FileNotFoundError:
        raise BadInputError(f"{path}: not found; expected {expected}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{path}: expected {expected}; not a readable CSV ({e})") from None


def _failure_kinds(path: Path) -> dict[str, dict[str, int]]:
    """Failures by name and kind (5xx, 4xx, 429, other) from PREFIX_failures.csv; {} without it."""
    kinds: dict[str, dict[str, int]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                status = _STATUS.search(row.get("Error") or "")
                kind = error_kind(int(status[1])) if status else "other"
                count = int(row.get("Occurrences") or 0) if (row.get("Occurrences") or "").isdigit() else 0
                per = kinds.setdefault(row.get("Name") or "", {})
                per[kind] = per.get(kind, 0) + count
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return kinds


def _ladder_level(step: _Step, row: Mapping[str, str], kinds: Mapping[str, int], path: Path) -> Level | None:
    line = f"{path}: {row.get('Name')!r}"
    requests = int(_cell_req(row["Request Count"], line, "Request Count"))
    errors = int(_cell_req(row["Failure Count"], line, "Failure Count"))
    if requests <= 0:
        return None
    p50, p90, p99, top = (_cell(row[c], line, c) for c in ("50%", "90%", "99%", "100%"))
    mean = _cell(row["Average Response Time"], line, "Average Response Time")
    latency = None
    if p50 is not None and p90 is not None and top is not None and mean is not None:
        latency = Latency(
            p50=p50, p90=p90, p99=p99 if requests >= P99_MIN_SAMPLES else None, max=top, mean=mean
        )
    known = sum(kinds.values())
    counted_kinds = dict(kinds) if known == errors else ({"other": errors} if errors else {})
    cores = max(step.cores)
    return imported_level(
        step.users, requests, errors, counted_kinds, step.counted_s, latency,
        client_cores=sum(step.cores), client_saturated=cores >= CLIENT_SATURATED_CORES,
    )  # fmt: skip


def _import_ladder(base: Path, results: Path, target: str) -> ProbeReport:
    steps, workers = _results(results)
    stats_path = base.with_name(base.name + STATS_SUFFIX)
    rows = _stats_rows(stats_path)
    failures = _failure_kinds(base.with_name(base.name + FAILURES_SUFFIX))
    levels: dict[tuple[str, str], list[Level]] = {}
    for step in steps:
        for route in step.routes:
            name = f"{route}{STEP_MARK}{step.users}"
            row = rows.get(name)
            lv = _ladder_level(step, row, failures.get(name, {}), stats_path) if row else None
            if lv is not None:
                levels.setdefault(split_name(route, ""), []).append(lv)
    if not levels:
        raise BadInputError(
            f"{stats_path}: no requests named by a counted step ('GET /x{STEP_MARK}8'); expected the"
            " stats of a locustfile from `fastapi-tune export locust`"
        )
    return imported_report("locust", [results, stats_path], target, levels, workers)


def _cell_req(text: str | None, where: str, column: str) -> float:
    value = _cell(text, where, column)
    if value is None:
        raise BadInputError(f"{where}, column {column!r}: expected a number, got 'N/A'")
    return value


def _cell(text: str | None, where: str, column: str) -> float | None:
    """A number from a CSV cell; N/A (no sample) is None."""
    if text == "N/A":
        return None
    try:
        value = float(text or "")
    except ValueError:
        raise BadInputError(f"{where}, column {column!r}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise BadInputError(f"{where}, column {column!r}: expected a finite number, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------
# The stats history of a locustfile exported before the results file existed


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
    return imported_level(
        first.users, requests, errors, {"other": errors} if errors else {}, seconds, latency
    )


def _import_history(prefix: Path, target: str) -> ProbeReport:
    """Levels from the user count in effect at each history row (no step names, no generator CPU)."""
    path = _history_file(prefix)
    rows = _locust_rows(path)
    by_name: dict[tuple[str, str], list[_Row]] = {}
    for row in sorted(rows, key=lambda r: r.time):  # sorted() is stable: per-second order is kept
        if row.name != LOCUST_TOTAL_ROW:
            by_name.setdefault(split_name(row.name, row.method), []).append(row)
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
    return imported_report("locust", [path], target, levels)
