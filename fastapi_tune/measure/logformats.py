"""Access-log line formats: recognising one from a file's first lines, then reading each line fast.

A parser turns one line into a Record (the second it arrived, method, request target, status,
duration in ms) or None when the line is not a request line of its format. Regexes are compiled
once, and times are parsed with caches: consecutive lines share their minute, so the costly part
of a timestamp is computed once per minute, not once per line.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import methodcaller
from typing import Any, Final

# (Unix second or None, METHOD, request target as logged, status, duration in ms or None)
Record = tuple[int | None, str, str, int, float | None]
Parser = Callable[[str], Record | None]

COMBINED: Final = "combined"
UVICORN: Final = "uvicorn"
JSON: Final = "json"
FORMATS: Final = (JSON, COMBINED, UVICORN)  # also the order that breaks a tie at detection
DESCRIPTIONS: Final = {
    COMBINED: "nginx 'combined' / gunicorn's default access log",
    UVICORN: "uvicorn access lines",
    JSON: "JSON lines",
}

_MONTHS: Final = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_CACHE_MAX: Final = 4096
_NO_TIME: Final = -1  # not cached yet (no log line is from before 1970)
_METHODS_KEPT: Final = 32

# nginx "combined" and gunicorn's default access_log_format write the same line:
#   1.2.3.4 - user [10/Oct/2000:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326 "referer" "agent"
# (the Common Log Format is its first half). Anything after the bytes is kept as `rest`, where a
# duration may follow: rt=0.123 / request_time=0.123, or a decimal number of seconds at the end
# (nginx $request_time, gunicorn %(L)s).
_COMBINED: Final = re.compile(
    r"[^\[\s]+ [^\[]*\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    r'"([A-Z]{3,10}) ([^ "]+)[^"]*" (\d{3}) (?:\d+|-)(.*)'
)
_SECONDS_FIELD: Final = re.compile(r"\b(?:rt|request_time)=(\d+(?:\.\d+)?)")
# uvicorn:  INFO:     127.0.0.1:51234 - "GET /items/7?x=1 HTTP/1.1" 200 OK
# (gunicorn's uvicorn worker writes the same without "INFO:"); no time unless a logging config
# puts one first: an ISO 8601 time at the start of the line is read when present.
_UVICORN: Final = re.compile(r'(\S+) - "([A-Z]{3,10}) ([^ "]+) HTTP/[\d.]+" (\d{3})\b')
_ISO_AT_START: Final = re.compile(r"\[?(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)")
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------------------
# Times


class _ClfTime:
    """'10/Oct/2000:13:55:36 -0700' -> Unix seconds, one calendar computation per minute."""

    def __init__(self) -> None:
        self.seconds: dict[str, int | None] = {}  # whole texts: a busy log repeats each second
        self.minutes: dict[str, int | None] = {}

    def __call__(self, text: str) -> int | None:
        second = self.seconds.get(text, _NO_TIME)
        if second != _NO_TIME:
            return second
        key = text[:17] + text[20:]
        base = self.minutes.get(key, _NO_TIME)
        if base == _NO_TIME:
            base = self.minutes[key] = self._minute(text)
        second = None if base is None else base + int(text[18:20])
        if len(self.seconds) >= _CACHE_MAX:
            self.seconds.clear()
            self.minutes.clear()
        self.seconds[text] = second
        return second

    @staticmethod
    def _minute(text: str) -> int | None:
        month = _MONTHS.get(text[3:6])
        if month is None:
            return None
        offset = (int(text[22:24]) * 60 + int(text[24:26])) * 60 * (-1 if text[21] == "-" else 1)
        midnight = calendar.timegm((int(text[7:11]), month, int(text[0:2]), 0, 0, 0, 0, 0, 0))
        return midnight + int(text[12:14]) * 3600 + int(text[15:17]) * 60 - offset


def clf_offset_minutes(text: str) -> int:
    """The UTC offset of a '10/Oct/2000:13:55:36 -0700' time, in minutes."""
    return (int(text[22:24]) * 60 + int(text[24:26])) * (-1 if text[21] == "-" else 1)


def iso_time(text: str) -> tuple[int, int | None] | None:
    """An ISO 8601 time -> (Unix second, UTC offset in minutes or None when naive: read as UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    offset = moment.utcoffset()
    seconds = calendar.timegm(moment.utctimetuple())
    return seconds, None if offset is None else int(offset.total_seconds() // 60)


class _IsoTime:
    """ISO 8601 text -> Unix second, one datetime parse per distinct second (fractions ignored)."""

    def __init__(self) -> None:
        self.seconds: dict[str, int | None] = {}

    def __call__(self, text: str) -> int | None:
        # The key drops the fraction: "2026-03-14T09:00:00.123+00:00" -> "2026-03-14T09:00:00+00:00".
        key = text[:19] + text[19:].lstrip(".,0123456789")
        if key in self.seconds:
            return self.seconds[key]
        if len(self.seconds) >= _CACHE_MAX:
            self.seconds.clear()
        parsed = iso_time(key)
        second = self.seconds[key] = None if parsed is None else parsed[0]
        return second


def number_time(value: float) -> int:
    """A Unix time in seconds, ms, µs or ns (told apart by size: all are after 1973) -> seconds."""
    for scale in (1e9, 1e6, 1e3):
        if value > 1e8 * scale:
            return int(value / scale)
    return int(value)


# ---------------------------------------------------------------------------------------
# Line formats


@dataclass(frozen=True)
class LogFormat:
    """A format found in a file: how to read its lines and what they carry."""

    name: str  # one of FORMATS
    parse: Parser
    timed: bool  # its lines carry a time (the detection lines did)
    durations: str | None  # where durations come from, when the detection lines had them
    offset_minutes: int | None  # the UTC offset of its times, when they have one


def combined_parser() -> Parser:
    """A parser for nginx combined / gunicorn default lines (with its own time cache)."""
    clf = _ClfTime()
    match, known = _COMBINED.match, clf.seconds

    def parse(line: str) -> Record | None:
        m = match(line)
        if m is None:
            return None
        when, method, target, status, rest = m.groups()
        second = known.get(when)  # the line's second seen before: no call
        if second is None:
            second = clf(when)
        if second is None:
            return None
        duration = _duration_at_end(rest) if rest[-1:].isdigit() or "rt=" in rest else None
        return second, method, target, int(status), duration

    return parse


def _duration_at_end(rest: str) -> float | None:
    """ms from what follows a combined line's fields: a decimal number of seconds last, or rt=.

    Done here, not in the line's regex: a lazy match for an optional field at the end doubled
    the regex's cost on every line.
    """
    last = rest.rpartition(" ")[2]
    if last.startswith(("rt=", "request_time=")):
        last = last.partition("=")[2]
    elif "." not in last:
        found = _SECONDS_FIELD.search(rest)  # rt=... before other fields
        last = found[1] if found else ""
    try:
        seconds = float(last) if "." in last else -1.0
        return seconds * 1000.0 if seconds >= 0 else None
    except ValueError:
        return None


def uvicorn_parser(timed: bool) -> Parser:
    """A parser for uvicorn access lines; `timed`: every line starts with an ISO 8601 time."""
    search = _UVICORN.search
    iso_start = _ISO_AT_START.match
    iso = _IsoTime()

    def parse(line: str) -> Record | None:
        if "\x1b" in line:  # colours, when uvicorn logged to a terminal that was captured
            line = _ANSI.sub("", line)
        m = search(line)
        if m is None:
            return None
        second = None
        if timed:
            t = iso_start(line)
            second = iso(t[1]) if t else None
            if second is None:
                return None
        return second, m[2], m[3], int(m[4]), None

    return parse


# JSON field names, first found wins. Dotted names are nested objects (ECS, GCP) or flat keys.
METHOD_KEYS: Final = (
    "method", "request_method", "http_method", "verb", "http.request.method", "req.method",
    "request.method", "httpRequest.requestMethod",
)  # fmt: skip
PATH_KEYS: Final = (
    "path", "request_path", "url", "uri", "request_uri", "target", "url.path", "url.original",
    "req.url", "request.path", "request.url", "httpRequest.requestUrl",
)  # fmt: skip
REQUEST_LINE_KEYS: Final = ("request", "request_line")  # "GET /a HTTP/1.1"
STATUS_KEYS: Final = (
    "status", "status_code", "response_status", "statusCode", "http.response.status_code",
    "res.statusCode", "response.status_code", "httpRequest.status",
)  # fmt: skip
TIME_KEYS: Final = (
    "time", "timestamp", "@timestamp", "ts", "time_iso8601", "time_local", "datetime", "date",
    "asctime", "timeMillis",
)  # fmt: skip
# Duration fields and the factor to milliseconds their name implies. A bare name (duration,
# latency, elapsed, response_time, process_time) is read as seconds, or by the unit of a string
# such as "12ms" or "0.5s" (GCP's latency); pino's responseTime is milliseconds.
DURATION_KEYS: Final = (
    ("duration_ms", 1.0), ("elapsed_ms", 1.0), ("latency_ms", 1.0), ("response_time_ms", 1.0),
    ("request_time_ms", 1.0), ("process_time_ms", 1.0), ("took_ms", 1.0), ("responseTime", 1.0),
    ("duration_us", 1e-3), ("duration_ns", 1e-6), ("event.duration", 1e-6),
    ("request_time", 1000.0), ("duration_s", 1000.0), ("duration_seconds", 1000.0),
    ("elapsed_s", 1000.0), ("httpRequest.latency", 1000.0), ("duration", 1000.0),
    ("latency", 1000.0), ("elapsed", 1000.0), ("response_time", 1000.0), ("process_time", 1000.0),
)  # fmt: skip
_UNITS: Final = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
_UNIT_TEXT: Final = {1.0: "ms", 1e-3: "µs", 1e-6: "ns", 1000.0: "seconds"}
_DURATION_TEXT: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?\s*")


def _pick(d: Mapping[str, Any], key: str) -> Any:
    value = d.get(key)
    if value is None and "." in key:
        node: Any = d
        for part in key.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        value = node
    return value


def _scalar(value: object) -> bool:
    return value is not None and not isinstance(value, (dict, list))


def _first_key(objects: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str | None:
    """The first of `keys` holding a plain value in any of `objects` ("url" may be ECS's object)."""
    for key in keys:
        if any(_scalar(_pick(d, key)) for d in objects):
            return key
    return None


def _duration_ms(value: object, factor: float) -> float | None:
    if type(value) is float and value >= 0:  # the common case first
        return value * factor
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) * factor if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION_TEXT.fullmatch(value)
        if m is not None:
            return float(m[1]) * (_UNITS[m[2]] if m[2] else factor)
    return None


class _JsonTime:
    """A JSON log's time value (ISO 8601, nginx's time_local, or a Unix number) -> Unix second."""

    def __init__(self) -> None:
        self.iso = _IsoTime()
        self.clf = _ClfTime()

    def __call__(self, value: object) -> int | None:
        kind = type(value)
        if kind is str:
            text: str = value  # type: ignore[assignment]  # type() checks are what mypy cannot follow
            return self.clf(text) if text[2:3] == "/" and text[6:7] == "/" else self.iso(text)
        if kind is int or kind is float:
            return number_time(float(value))  # type: ignore[arg-type]
        return None


def json_offset(value: object) -> int | None:
    """The UTC offset (minutes) a JSON time value states, if any."""
    if not isinstance(value, str):
        return None
    if len(value) >= 26 and value[2] == "/" and value[6] == "/":
        return clf_offset_minutes(value)
    parsed = iso_time(value.replace(",", "."))
    return None if parsed is None else parsed[1]


@dataclass(frozen=True)
class JsonFields:
    """The keys a JSON log uses, found in its first lines."""

    method: str | None
    path: str | None
    request_line: str | None
    status: str | None
    time: str | None
    duration: tuple[str, float] | None

    @classmethod
    def of(cls, objects: Sequence[Mapping[str, Any]]) -> JsonFields:
        """The first key of each kind that any of `objects` has."""
        duration = next(
            ((k, f) for k, f in DURATION_KEYS if any(_scalar(_pick(d, k)) for d in objects)), None
        )
        return cls(
            method=_first_key(objects, METHOD_KEYS),
            path=_first_key(objects, PATH_KEYS),
            request_line=_first_key(objects, REQUEST_LINE_KEYS),
            status=_first_key(objects, STATUS_KEYS),
            time=_first_key(objects, TIME_KEYS),
            duration=duration,
        )

    def describe_duration(self) -> str | None:
        """'duration_ms (ms)': where the durations come from."""
        if self.duration is None:
            return None
        key, factor = self.duration
        return f"{key} ({_UNIT_TEXT.get(factor, 'ms')}, or the unit its text gives)"


def _getter(key: str | None) -> Callable[[Mapping[str, Any]], Any]:
    """A fast reader of one field: a C-level dict.get unless the name is dotted (maybe nested)."""
    if key is None:
        return lambda d: None
    if "." in key:
        return lambda d: _pick(d, key)
    return methodcaller("get", key)


def _status_of(raw: object) -> int | None:
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if type(raw) is not int or not 100 <= raw <= 599:
        return None
    return raw


def _split_request_line(line: object) -> tuple[object, object]:
    """'GET /a HTTP/1.1' -> ('GET', '/a')."""
    if isinstance(line, str):
        parts = line.split(" ", 2)
        if len(parts) >= 2:
            return parts[0], parts[1]
    return None, None


def _checked_method(method: str, checked: set[str]) -> str | None:
    """`method` upper-cased when it looks like an HTTP method (remembered in `checked`), else None."""
    upper = method.upper()
    if not (3 <= len(upper) <= 10 and upper.isalpha() and upper.isascii()):
        return None
    if upper == method and len(checked) < _METHODS_KEPT:
        checked.add(method)
    return upper


def json_parser(f: JsonFields, timed: bool) -> Parser:
    """A parser for JSON lines with the keys `f`; `timed`: a line without a readable time is unreadable."""
    loads = json.loads
    method_of, path_of, line_of = _getter(f.method), _getter(f.path), _getter(f.request_line)
    status_of, time_of = _getter(f.status), _getter(f.time)
    duration_of = _getter(f.duration[0] if f.duration else None)
    factor = f.duration[1] if f.duration else 1.0
    when = _JsonTime()
    methods: set[str] = set()  # methods already checked, as written

    def parse(line: str) -> Record | None:  # noqa: PLR0911 - one early return per missing field
        if line[:1] != "{" and not line.lstrip().startswith("{"):
            return None
        try:
            d = loads(line)
        except (ValueError, RecursionError):
            return None
        if type(d) is not dict:
            return None
        method, target = method_of(d), path_of(d)
        if method is None or target is None:
            method, target = _split_request_line(line_of(d))
        if type(target) is not str or not target or type(method) is not str:
            return None
        if method not in methods:
            method = _checked_method(method, methods)
            if method is None:
                return None
        status = _status_of(status_of(d))
        if status is None:
            return None
        second = None
        if timed:
            second = when(time_of(d))
            if second is None:
                return None
        duration = _duration_ms(duration_of(d), factor) if f.duration else None
        return second, method, target, status, duration

    return parse


# ---------------------------------------------------------------------------------------
# Detection


def _json_format(lines: Sequence[str]) -> tuple[LogFormat, int]:
    objects: list[Mapping[str, Any]] = []
    for line in lines:
        if line.lstrip().startswith("{"):
            try:
                d = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(d, dict):
                objects.append(d)
    f = JsonFields.of(objects)
    read_time = _JsonTime()
    times = [_pick(d, f.time) for d in objects] if f.time else []
    timed = any(read_time(t) is not None for t in times)
    offset = next((o for o in map(json_offset, times) if o is not None), None)
    parse = json_parser(f, timed)
    read = sum(1 for line in lines if parse(line) is not None)
    return LogFormat(JSON, parse, timed, f.describe_duration(), offset), read


def _combined_format(lines: Sequence[str]) -> tuple[LogFormat, int]:
    parse = combined_parser()
    records = [r for r in map(parse, lines) if r is not None]
    first = next((m for m in map(_COMBINED.match, lines) if m is not None), None)
    offset = clf_offset_minutes(first[1]) if first else None
    durations = (
        "the seconds at the end of the line (nginx $request_time, gunicorn %(L)s, rt=)"
        if any(r[4] is not None for r in records)
        else None
    )
    return LogFormat(COMBINED, parse, True, durations, offset), len(records)


def _uvicorn_format(lines: Sequence[str]) -> tuple[LogFormat, int]:
    untimed = uvicorn_parser(False)
    readable = [line for line in lines if untimed(line) is not None]
    starts = [_ISO_AT_START.match(_ANSI.sub("", line)) for line in readable]
    timed = bool(readable) and all(s is not None for s in starts)
    offset = None
    if timed and starts[0] is not None:
        first = iso_time(starts[0][1])
        offset = first[1] if first else None
    parse = uvicorn_parser(timed)
    return LogFormat(UVICORN, parse, timed, None, offset), sum(1 for x in lines if parse(x) is not None)


def detect(lines: Sequence[str]) -> tuple[LogFormat | None, int]:
    """The format that reads the most of `lines` (a file's first lines), and how many it read."""
    candidates = [_json_format(lines), _combined_format(lines), _uvicorn_format(lines)]
    best, read = max(candidates, key=lambda c: (c[1], -FORMATS.index(c[0].name)))
    return (best, read) if read else (None, 0)
