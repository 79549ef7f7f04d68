"""The report's core on the terminal: one line per route, problems first (render.overview orders them).

Each row: method and path, class, confidence, peak req/s, and the line the stacks named as the
limit (or how the ladder ended, when that is news). On a wide screen the note has its own column;
on a narrow one it goes on a second line under its route. Plain lines rather than a rich Table: a
table would fold a long route at its space and cut the note to the route column's width.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Final

from rich.text import Text

from fastapi_tune.measure.report import Endpoint, EndpointClass
from fastapi_tune.render.overview import Standing, limiting_spot, peak_rps, standing, unusual_stop
from fastapi_tune.render.styles import CLASS_STYLE

_CLASS_WIDTH: Final = len(EndpointClass.THREADPOOL_BOUND)
_CONF_WIDTH: Final = 4  # "100%"
_PEAK_WIDTH: Final = 10  # "peak req/s"
_GAP: Final = 3  # what the table puts between two columns
# Narrowest route column, and the note column a wide screen must leave room for.
_ROUTE_MIN: Final = 20
_NOTE_MIN: Final = 30
_STANDING_WORDS: Final = {
    Standing.PROBLEM: "to fix first",
    Standing.SIZES_PLAN: "sizing the workers",
    Standing.OTHER: "other",
}


def route_note(ep: Endpoint) -> str:
    """The line the stacks name as the limit, and how the ladder ended when that is news."""
    spot = limiting_spot(ep)
    where = ""
    if spot is not None:
        call = f" → {spot.call}" if spot.call else ""
        where = f"{spot.file}:{spot.line} {spot.function}{call}"
    stop = unusual_stop(ep)
    return "; ".join(part for part in (where, f"stopped: {stop}" if stop else "") if part)


def _folded(text: str, width: int) -> list[str]:
    """`text` cut into lines of `width` characters (a route has one space: after its method)."""
    return [text[i : i + width] for i in range(0, len(text), width)] or [""]


def _title(ranked: Sequence[Endpoint]) -> Text:
    by = Counter(standing(ep) for ep in ranked)
    parts = [f"{by[s]} {words}" for s, words in _STANDING_WORDS.items() if by[s]]
    return Text(f"Verdicts for {len(ranked)} route(s): {', '.join(parts) or 'none measured'}", style="bold")


def _row(ep: Endpoint, route: str, route_width: int) -> Text:
    cls = ep.verdict.cls if ep.verdict else None
    conf = f"{ep.verdict.confidence:.0%}" if ep.verdict else "-"
    return Text.assemble(
        route.ljust(route_width + _GAP),
        ((cls or "-").ljust(_CLASS_WIDTH), CLASS_STYLE[cls] if cls else ""),
        " " * _GAP,
        conf.rjust(_CONF_WIDTH),
        " " * _GAP,
        f"{peak_rps(ep):.1f}".rjust(_PEAK_WIDTH),
    )


def verdict_lines(ranked: Sequence[Endpoint], width: int) -> list[Text]:
    """The routes in the given order, one line each, or two: a note that does not fit beside its
    route goes under it, and a route longer than its column continues on the next line."""
    routes = [ep.route for ep in ranked]
    longest = max(map(len, routes), default=_ROUTE_MIN)
    fixed = _CLASS_WIDTH + _CONF_WIDTH + _PEAK_WIDTH + 3 * _GAP
    inline = width - fixed - _GAP - longest >= _NOTE_MIN
    route_width = max(_ROUTE_MIN, min(longest, width - fixed))
    head = Text.assemble(
        "route".ljust(route_width + _GAP),
        "class".ljust(_CLASS_WIDTH + _GAP),
        "conf".rjust(_CONF_WIDTH) + " " * _GAP,
        "peak req/s".rjust(_PEAK_WIDTH),
        (" " * _GAP + "limiting line / note") if inline else "",
        style="bold",
    )
    lines = [_title(ranked), head, Text("─" * min(width, head.cell_len), style="dim")]
    for i, ep in enumerate(ranked):
        if i and standing(ep) != standing(ranked[i - 1]):
            lines.append(Text(""))
        first, *rest = _folded(routes[i], route_width)
        row = _row(ep, first, route_width)
        note = route_note(ep)
        if inline and note:
            row.append(" " * _GAP + note)
        lines.append(row)
        lines += [Text(more) for more in rest]
        if note and not inline:
            lines.append(Text(f"  ↳ {note}", style="dim"))
    for line in lines[1:]:  # the title may wrap; a row is cut short rather than take a third line
        line.no_wrap, line.overflow = True, "ellipsis"
    return lines
