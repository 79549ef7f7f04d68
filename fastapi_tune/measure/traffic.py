"""Production traffic as the access logs saw it: the routes' shares, the peak rate, statuses, latency.

The reader (accesslog.py) feeds a TrafficTally (`consume`, its hot loop); `tally.profile()`
derives the frozen TrafficProfile that the probe, the report and the plan use. Everything here is
pure and bounded: memory does not grow with the log (counters per route, a few minutes of
per-second arrivals, a pruned table of unmatched paths).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, Final

from fastapi_tune.core.jsonread import JsonReader
from fastapi_tune.core.redact import redact_text, strip_query
from fastapi_tune.discover.routes import NOT_SEEN as _NOT_SEEN
from fastapi_tune.discover.routes import RouteMatcher
from fastapi_tune.measure.histogram import LatencyHistogram, bucket_of
from fastapi_tune.measure.logformats import Record

# The peak is the highest mean arrival rate over any window this long (whole seconds).
PEAK_WINDOW_S: Final = 60
# Lines may come out of time order (several workers writing one file, files read side by side):
# a line up to this many seconds older than the newest line seen still counts towards the peak;
# an older one is counted as late and left out of it (it still counts for the shares).
REORDER_S: Final = 120
# Unmatched paths listed, and tracked: past _UNMATCHED_TRACKED distinct paths the rarest are
# dropped (their counts are then lower bounds), so a scanner's million random paths stay small.
UNMATCHED_SHOWN: Final = 10
_UNMATCHED_TRACKED: Final = 4096
_UNMATCHED_KEPT: Final = 1024
_LABEL_MAX: Final = 100  # characters of an unmatched "METHOD /path" kept
_TICK_MASK: Final = (1 << 17) - 1  # progress every 131,072 lines
# Latency percentiles shown per route, from the log's durations.
TRAFFIC_PERCENTILES: Final = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class LogSource:
    """One --access-log input: what it was, the format found, and what became of its lines."""

    name: str  # the path as given, or "-" for stdin
    format: str  # one of logformats.FORMATS
    lines: int  # non-blank lines read
    unreadable: int  # lines the format could not parse (garbage, binary, truncated)
    timed: bool  # its lines carry a time, so they count towards the peak


@dataclass(frozen=True)
class RouteTraffic:
    """One route's part of the traffic."""

    route: str  # "GET /orders/{oid}": the report's method and path template
    requests: int
    share: float  # of the matched requests, 0..1
    statuses: Mapping[int, int]  # HTTP status -> requests
    timed: int = 0  # requests whose line had a duration
    latency_ms: Mapping[str, float] | None = None  # "p50", "p90", "p99" from those durations


@dataclass(frozen=True)
class Peak:
    """The busiest window: its mean arrival rate and when it began."""

    rps: float
    start: str  # ISO 8601, in the log's own UTC offset when it had one
    window_s: int = PEAK_WINDOW_S
    requests: int = 0  # matched requests in the window


@dataclass(frozen=True)
class TrafficProfile:
    """What the access logs say about the traffic: derived once, read by probe, report and plan."""

    sources: tuple[LogSource, ...]
    used: int  # lines matched to a route: the shares are of these
    unmatched: int  # readable lines no route matched (/favicon.ico, scanners, other apps)
    routes: tuple[RouteTraffic, ...]  # most requests first
    unmatched_top: tuple[tuple[str, int], ...] = ()  # "GET /path" (no query) -> lines, most first
    unmatched_top_exact: bool = True  # False: rare paths were dropped, so counts are lower bounds
    peak: Peak | None = None
    peak_unknown: str | None = None  # why there is no peak, when there is none
    first: str | None = None  # the earliest and latest times seen (ISO 8601)
    last: str | None = None
    off_peak: int = 0  # matched lines left out of the peak: out of order by more than REORDER_S
    durations: str | None = None  # where the durations came from: "duration_ms (ms)"
    notes: tuple[str, ...] = ()  # what the reader met on the way (a truncated gzip file)

    @property
    def lines(self) -> int:
        """Every non-blank line read."""
        return sum(s.lines for s in self.sources)

    @property
    def unreadable(self) -> int:
        """Lines no parser could read."""
        return sum(s.unreadable for s in self.sources)

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats found, once each, in the order of the sources."""
        return tuple(dict.fromkeys(s.format for s in self.sources))

    def shares(self) -> dict[str, float]:
        """Route name -> share of the matched requests (0..1)."""
        return {r.route: r.share for r in self.routes}


# ---------------------------------------------------------------------------------------
# Counting


_NEVER: Final = -(2**62)  # a second before any log's


class _PeakWindow:
    """The highest count in any PEAK_WINDOW_S window, from per-second counts arriving roughly in order.

    Seconds stay open for REORDER_S after the newest second seen, then close in order into a
    ring of the last PEAK_WINDOW_S closed seconds; memory is bounded by those two spans. A second
    in (closed_up_to, newest] is simply counted in `open` (the tally does that inline).
    """

    def __init__(self) -> None:
        self.open: dict[int, int] = {}
        self.newest = _NEVER
        self.closed_up_to = _NEVER  # the last closed second
        self.ring = [0] * PEAK_WINDOW_S
        self.ring_sum = 0
        self.best = 0
        self.best_end: int | None = None  # the last second of the best window
        self.late = 0
        self.first: int | None = None  # the earliest second counted

    def add(self, second: int) -> None:
        """A request in `second`, whichever of (late, open, newer) it is."""
        if second > self.newest:
            if self.newest != _NEVER:
                self._close_through(second - REORDER_S - 1)
            self.newest = second
        elif second <= self.closed_up_to:
            self.late += 1
            return
        self.open[second] = self.open.get(second, 0) + 1

    def _close_through(self, last: int) -> None:
        """Close every open second up to `last`, in order, sliding the window over them."""
        second = self.closed_up_to
        if second == _NEVER:
            if not self.open or min(self.open) > last:
                return  # nothing old enough to close yet
            self.first = min(self.open)
            second = self.first - 1
        while second < last:
            if self.ring_sum == 0:
                # An empty window: skip the silent seconds up to the next one that had arrivals.
                upcoming = [s for s in self.open if s <= last]
                if not upcoming:
                    second = last
                    break
                second = min(upcoming) - 1
            second += 1
            slot = second % PEAK_WINDOW_S
            count = self.open.pop(second, 0)
            self.ring_sum += count - self.ring[slot]
            self.ring[slot] = count
            if self.ring_sum > self.best:
                self.best, self.best_end = self.ring_sum, second
        self.closed_up_to = second

    def finish(self) -> None:
        if self.newest != _NEVER:
            self._close_through(self.newest)


class TrafficTally:
    """Counters fed one request at a time by the reader; `profile()` turns them into the profile."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}  # (route, status) -> requests
        self._buckets: dict[tuple[str, int], int] = {}  # (route, latency bucket) -> requests
        self._extremes: dict[str, list[float]] = {}  # route -> [fastest, slowest] ms
        self.unmatched = 0
        self._unmatched_paths: dict[str, int] = {}
        self._pruned = False
        self._peak = _PeakWindow()
        self.offset: timezone | None = None  # the log's UTC offset, for showing times

    def consume(
        self,
        records: Iterable[Record | None],
        matcher: RouteMatcher,
        tick: Callable[[int], None] | None = None,
    ) -> tuple[int, int]:
        """Count every record (None: an unreadable line); (lines, unreadable lines) seen.

        The hot loop of --access-log (a million lines go through it): the common cases are
        inline, with the counters in locals; a path seen before costs one dict lookup.
        """
        counts, buckets, extremes = self._counts, self._buckets, self._extremes
        peak, open_seconds = self._peak, self._peak.open
        seen, match = matcher.seen, matcher.match
        lines = unreadable = 0
        for record in records:
            lines += 1
            if tick is not None and not lines & _TICK_MASK:
                tick(lines)
            if record is None:
                unreadable += 1
                continue
            second, method, target, status, duration = record
            route = seen.get((method, target), _NOT_SEEN)
            if route == _NOT_SEEN:
                route = match(method, target)
            if route is None:
                self.unmatched_path(method, target)
                continue
            key = (route, status)
            counts[key] = counts.get(key, 0) + 1
            if duration is not None:
                slot = (route, bucket_of(duration))
                buckets[slot] = buckets.get(slot, 0) + 1
                low_high = extremes.get(route)
                if low_high is None:
                    extremes[route] = [duration, duration]
                elif duration < low_high[0]:
                    low_high[0] = duration
                elif duration > low_high[1]:
                    low_high[1] = duration
            if second is not None:
                if peak.closed_up_to < second <= peak.newest:
                    open_seconds[second] = open_seconds.get(second, 0) + 1
                else:
                    peak.add(second)
        return lines, unreadable

    def request(self, route: str, status: int, duration_ms: float | None, second: int | None = None) -> None:
        """One matched request (what `consume` does per line, for callers with one at a time)."""
        method, _, path = route.partition(" ")
        self.consume([(second, method, path, status, duration_ms)], RouteMatcher([(method, path)]))

    def unmatched_path(self, method: str, target: str) -> None:
        """A readable line no route matched: counted, and its "METHOD /path" (never the query) kept."""
        self.unmatched += 1
        label = f"{method} {strip_query(target)[:_LABEL_MAX]}"
        paths = self._unmatched_paths
        paths[label] = paths.get(label, 0) + 1
        if len(paths) > _UNMATCHED_TRACKED:
            kept = sorted(paths.items(), key=lambda kv: kv[1], reverse=True)[:_UNMATCHED_KEPT]
            self._unmatched_paths = dict(kept)
            self._pruned = True

    def profile(self, sources: tuple[LogSource, ...], durations: str | None) -> TrafficProfile:
        """The profile of everything tallied."""
        used = sum(self._counts.values())
        routes = self._routes(used)
        top = [
            (_shown(label), n)
            for label, n in sorted(self._unmatched_paths.items(), key=lambda kv: (-kv[1], kv[0]))
        ][:UNMATCHED_SHOWN]
        peak, unknown = self._peak_of(sources, used)
        window = self._peak
        return TrafficProfile(
            sources=sources,
            used=used,
            unmatched=self.unmatched,
            routes=routes,
            unmatched_top=tuple(top),
            unmatched_top_exact=not self._pruned,
            peak=peak,
            peak_unknown=unknown,
            first=None if window.first is None else self._iso(window.first),
            last=None if window.newest == _NEVER else self._iso(window.newest),
            off_peak=window.late,
            durations=durations,
        )

    def _peak_of(self, sources: tuple[LogSource, ...], used: int) -> tuple[Peak | None, str | None]:
        untimed = [s.name for s in sources if not s.timed]
        if untimed:
            return None, (
                f"{untimed[0]} has no time on its lines (uvicorn's access format): the arrival rate is"
                " unknown; log with timestamps (nginx, gunicorn's access log, JSON) for a peak"
            )
        window = self._peak
        window.finish()
        if not used or window.first is None or window.best_end is None:
            return None, "no matched line carried a time"
        span = window.newest - window.first + 1
        if span < PEAK_WINDOW_S:
            return None, f"the log covers {span} s, less than the {PEAK_WINDOW_S}-second window of the peak"
        start = window.best_end - PEAK_WINDOW_S + 1
        rps = window.best / PEAK_WINDOW_S
        return Peak(rps=round(rps, 3), start=self._iso(start), requests=window.best), None

    def _routes(self, used: int) -> tuple[RouteTraffic, ...]:
        statuses: dict[str, dict[int, int]] = {}
        for (route, status), n in self._counts.items():
            statuses.setdefault(route, {})[status] = n
        buckets: dict[str, dict[int, int]] = {}
        for (route, bucket), n in self._buckets.items():
            buckets.setdefault(route, {})[bucket] = n
        traffic = [
            _route_traffic(r, s, buckets.get(r, {}), self._extremes.get(r), used) for r, s in statuses.items()
        ]
        return tuple(sorted(traffic, key=lambda t: (-t.requests, t.route)))

    def _iso(self, second: int) -> str:
        moment = datetime.fromtimestamp(second, self.offset or UTC)
        text = moment.isoformat()
        return text if self.offset is not None else text.removesuffix("+00:00")


def _route_traffic(
    name: str, statuses: dict[int, int], buckets: dict[int, int], extremes: list[float] | None, used: int
) -> RouteTraffic:
    requests = sum(statuses.values())
    timed = sum(buckets.values())
    latency = None
    if timed and extremes is not None:
        hist = LatencyHistogram(MappingProxyType(buckets), timed, extremes[0], extremes[1])
        latency = MappingProxyType({f"p{q:g}": round(hist.percentile(q), 3) for q in TRAFFIC_PERCENTILES})
    return RouteTraffic(
        route=name,
        requests=requests,
        share=requests / used if used else 0.0,
        statuses=MappingProxyType(dict(sorted(statuses.items()))),
        timed=timed,
        latency_ms=latency,
    )


def _shown(label: str) -> str:
    """An unmatched "METHOD /path" fit to print: secrets in the path hidden, control characters escaped."""
    text = redact_text(label)
    return text if text.isprintable() else ascii(text)[1:-1]


def utc_offset(minutes: int) -> timezone:
    """A fixed UTC offset, for showing the log's times as it wrote them."""
    return timezone(timedelta(minutes=minutes))


# ---------------------------------------------------------------------------------------
# JSON (the `traffic` command's --json, and the probe report's `traffic`)


def _source_json(s: LogSource) -> dict[str, Any]:
    return {
        "name": s.name,
        "format": s.format,
        "lines": s.lines,
        "unreadable": s.unreadable,
        "timed": s.timed,
    }


def _route_json(r: RouteTraffic) -> dict[str, Any]:
    return {
        "route": r.route,
        "requests": r.requests,
        "share": round(r.share, 6),
        "statuses": {str(k): v for k, v in r.statuses.items()},
        "timed": r.timed,
        "latency_ms": None if r.latency_ms is None else dict(r.latency_ms),
    }


def traffic_to_json(p: TrafficProfile) -> dict[str, Any]:
    """The profile as the README's `traffic` object."""
    peak = p.peak
    return {
        "sources": [_source_json(s) for s in p.sources],
        "lines": p.lines,
        "used": p.used,
        "unreadable": p.unreadable,
        "unmatched": p.unmatched,
        "routes": [_route_json(r) for r in p.routes],
        "unmatched_top": [{"request": label, "lines": n} for label, n in p.unmatched_top],
        "unmatched_top_exact": p.unmatched_top_exact,
        "peak": None
        if peak is None
        else {"rps": peak.rps, "start": peak.start, "window_s": peak.window_s, "requests": peak.requests},
        "peak_unknown": p.peak_unknown,
        "first": p.first,
        "last": p.last,
        "off_peak": p.off_peak,
        "durations": p.durations,
        "notes": list(p.notes),
    }


_MAX_COUNT: Final = 10**15


class _Reader(JsonReader):
    def count(self, value: object, where: str) -> int:
        return self.int_(value, where, 0, _MAX_COUNT)

    def items(self, value: object, where: str) -> list[Any]:
        return [self.obj(x, f"{where}[{i}]") for i, x in enumerate(self.list_(value, where))]


def traffic_from_json(raw: object, source: str) -> TrafficProfile:
    """A saved profile, checked; errors name the file and the key."""
    r = _Reader(source)
    d = r.obj(raw, "traffic")
    sources = tuple(
        LogSource(
            name=r.str_(s.get("name"), "traffic.sources[].name"),
            format=r.str_(s.get("format"), "traffic.sources[].format"),
            lines=r.count(s.get("lines"), "traffic.sources[].lines"),
            unreadable=r.count(s.get("unreadable", 0), "traffic.sources[].unreadable"),
            timed=r.bool_(s.get("timed", False), "traffic.sources[].timed"),
        )
        for s in r.items(d.get("sources"), "traffic.sources")
    )
    top = tuple(
        (
            r.str_(u.get("request"), "traffic.unmatched_top[].request"),
            r.count(u.get("lines"), "traffic.unmatched_top[].lines"),
        )
        for u in r.items(d.get("unmatched_top", []), "traffic.unmatched_top")
    )
    return TrafficProfile(
        sources=sources,
        used=r.count(d.get("used"), "traffic.used"),
        unmatched=r.count(d.get("unmatched", 0), "traffic.unmatched"),
        routes=tuple(_route_from_json(r, x) for x in r.items(d.get("routes"), "traffic.routes")),
        unmatched_top=top,
        unmatched_top_exact=r.bool_(d.get("unmatched_top_exact", True), "traffic.unmatched_top_exact"),
        peak=_peak_from_json(r, d.get("peak")),
        peak_unknown=r.opt_str(d.get("peak_unknown"), "traffic.peak_unknown"),
        first=r.opt_str(d.get("first"), "traffic.first"),
        last=r.opt_str(d.get("last"), "traffic.last"),
        off_peak=r.count(d.get("off_peak", 0), "traffic.off_peak"),
        durations=r.opt_str(d.get("durations"), "traffic.durations"),
        notes=tuple(r.str_(n, "traffic.notes") for n in r.list_(d.get("notes", []), "traffic.notes")),
    )


def _peak_from_json(r: _Reader, raw: object) -> Peak | None:
    if raw is None:
        return None
    pk = r.obj(raw, "traffic.peak")
    return Peak(
        rps=r.num(pk.get("rps"), "traffic.peak.rps", 0),
        start=r.str_(pk.get("start"), "traffic.peak.start"),
        window_s=r.int_(pk.get("window_s", PEAK_WINDOW_S), "traffic.peak.window_s", 1, 86400),
        requests=r.count(pk.get("requests", 0), "traffic.peak.requests"),
    )


def _route_from_json(r: _Reader, x: Any) -> RouteTraffic:
    where = "traffic.routes[]"
    statuses = r.obj(x.get("statuses", {}), f"{where}.statuses")
    latency = x.get("latency_ms")
    return RouteTraffic(
        route=r.str_(x.get("route"), f"{where}.route"),
        requests=r.count(x.get("requests"), f"{where}.requests"),
        share=r.num(x.get("share"), f"{where}.share", 0, 1),
        statuses=MappingProxyType(
            {_status(r, k): r.count(v, f"{where}.statuses") for k, v in statuses.items()}
        ),
        timed=r.count(x.get("timed", 0), f"{where}.timed"),
        latency_ms=None
        if latency is None
        else MappingProxyType(
            {
                str(k): r.num(v, f"{where}.latency_ms", 0)
                for k, v in r.obj(latency, f"{where}.latency_ms").items()
            }
        ),
    )


def _status(r: JsonReader, key: object) -> int:
    if not str(key).isdigit() or not 100 <= int(str(key)) <= 599:
        raise r.fail("traffic.routes[].statuses", "HTTP status codes as keys")
    return int(str(key))


__all__ = [
    "PEAK_WINDOW_S",
    "REORDER_S",
    "LogSource",
    "Peak",
    "RouteTraffic",
    "TrafficProfile",
    "TrafficTally",
    "traffic_from_json",
    "traffic_to_json",
    "utc_offset",
]
