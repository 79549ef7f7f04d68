"""Line charts as inline SVG: pure functions from numbers to markup. No script, no font, no URL.

The HTML report embeds these in the page, so a chart opens offline, prints as vectors and
cannot fetch anything. Every string that reaches the markup goes through html.escape.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# Tick steps are 1, 2, 2.5 or 5 times a power of ten: the steps people read without effort.
_NICE_MANTISSAS: Final = (1.0, 2.0, 2.5, 5.0, 10.0)
# Enough ticks to read a value off the axis, few enough that labels of ~6 characters never
# overlap on a 480-unit-wide chart.
DEFAULT_MAX_TICKS: Final = 6
# Concurrency ladders double (1, 2, 4 ... 128): ticks at powers of two land on the levels.
DEFAULT_LOG_BASE: Final = 2
_MAX_LOG_TICKS: Final = 9
_ROUND_DIGITS: Final = 10  # strips float noise such as 0.30000000000000004 from tick values

# Geometry in SVG user units; the page scales the whole viewBox.
WIDTH: Final = 480
HEIGHT: Final = 300
_MARGIN_LEFT: Final = 58
_MARGIN_RIGHT: Final = 14
_MARGIN_TOP: Final = 30
_MARGIN_BOTTOM: Final = 72  # tick labels, the x label, then one legend row
_INSET: Final = 10  # keeps the first and last points off the axes
_FONT: Final = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_CHAR_WIDTH: Final = 6.2  # average width of an 11-unit sans-serif glyph, to lay the legend out
_STALLED_COLOR: Final = "#d1242f"
_EXCLUDED_COLOR: Final = "#8c959f"
_GRID_COLOR: Final = "#e6e8eb"
_AXIS_COLOR: Final = "#57606a"


class Mark(StrEnum):
    """How a point is drawn: as evidence, left out of the evidence, or stalled."""

    NORMAL = "normal"
    EXCLUDED = "excluded"  # measured but not evidence (client-saturated, errors): hollow, dashed
    STALLED = "stalled"  # the server stopped answering at this level: red


@dataclass(frozen=True)
class Point:
    """One measured value; y None leaves a gap in the line (e.g. p99 from too few samples)."""

    x: float
    y: float | None
    mark: Mark = Mark.NORMAL
    note: str = ""  # the tooltip


@dataclass(frozen=True)
class Series:
    """One line of the chart, named in the legend."""

    name: str
    color: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Chart:
    """A line chart with a log-scale x axis and a linear y axis from zero."""

    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    key: str = ""  # a machine-readable name, written as data-chart for tests and styles


# ---------------------------------------------------------------------------------------
# Ticks and scales


def nice_ticks(lo: float, hi: float, max_ticks: int = DEFAULT_MAX_TICKS) -> tuple[float, ...]:
    """Evenly spaced round ticks covering [lo, hi]: at most max_ticks, at least two."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"ticks need finite bounds, got {lo}..{hi}")
    lo, hi = min(lo, hi), max(lo, hi)
    if hi == lo:
        hi = lo + (abs(lo) if lo else 1.0)
    max_ticks = max(2, max_ticks)
    magnitude = 10.0 ** math.floor(math.log10((hi - lo) / (max_ticks - 1)))
    for scale in (magnitude, magnitude * 10):
        for mantissa in _NICE_MANTISSAS:
            step = mantissa * scale
            first = math.floor(lo / step + 1e-9) * step
            count = math.ceil((hi - first) / step - 1e-9) + 1
            if count <= max_ticks:
                return tuple(round(first + i * step, _ROUND_DIGITS) for i in range(max(count, 2)))
    raise AssertionError("unreachable: a step of 10x the raw step always fits")  # pragma: no cover


def log_domain(lo: float, hi: float, base: float = DEFAULT_LOG_BASE) -> tuple[float, float]:
    """The powers of `base` just around [lo, hi] (both > 0); one value gets a power either side."""
    if lo <= 0 or hi <= 0:
        raise ValueError(f"a log scale needs positive bounds, got {lo}..{hi}")
    lo, hi = min(lo, hi), max(lo, hi)
    first = math.floor(math.log(lo, base) + 1e-9)
    last = math.ceil(math.log(hi, base) - 1e-9)
    if last == first:
        first, last = first - 1, last + 1
    return float(base) ** first, float(base) ** last


def log_ticks(
    lo: float, hi: float, base: float = DEFAULT_LOG_BASE, max_ticks: int = _MAX_LOG_TICKS
) -> tuple[float, ...]:
    """Powers of `base` across log_domain(lo, hi), every k-th one when there would be too many."""
    d0, d1 = log_domain(lo, hi, base)
    first, last = round(math.log(d0, base)), round(math.log(d1, base))
    exponents = list(range(first, last + 1))
    every = math.ceil(len(exponents) / max(2, max_ticks))
    return tuple(float(base) ** e for e in exponents[::every])


@dataclass(frozen=True)
class LinearScale:
    """Maps a value in [d0, d1] to a coordinate in [r0, r1]."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        span = self.d1 - self.d0
        return self.r0 + (v - self.d0) / span * (self.r1 - self.r0) if span else self.r0


@dataclass(frozen=True)
class LogScale:
    """Maps a positive value in [d0, d1] to [r0, r1] so that equal ratios get equal distances."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        span = math.log(self.d1) - math.log(self.d0)
        return self.r0 + (math.log(v) - math.log(self.d0)) / span * (self.r1 - self.r0)


def format_tick(value: float, step: float) -> str:
    """A tick label with just the decimals the step needs, thousands grouped: 1,250 or 0.25."""
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)
    return f"{value:,.{decimals}f}"


# ---------------------------------------------------------------------------------------
# Markup


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _n(v: float) -> str:
    return f"{v:.1f}"


@dataclass(frozen=True)
class _Frame:
    """The plot area and both scales, shared by every drawing step."""

    x: LogScale
    y: LinearScale
    x_ticks: tuple[float, ...]
    y_ticks: tuple[float, ...]
    left: float
    right: float
    top: float
    bottom: float


def _frame(points: Sequence[Point]) -> _Frame:
    xs = [p.x for p in points] or [1.0]
    ys = [p.y for p in points if p.y is not None]
    left, right = _MARGIN_LEFT, WIDTH - _MARGIN_RIGHT
    top, bottom = _MARGIN_TOP, HEIGHT - _MARGIN_BOTTOM
    d0, d1 = log_domain(min(xs), max(xs))
    y_ticks = nice_ticks(min([0.0, *ys]), max(ys, default=0.0) or 1.0)  # from zero, unless below it
    return _Frame(
        x=LogScale(d0, d1, left + _INSET, right - _INSET),
        y=LinearScale(y_ticks[0], y_ticks[-1], bottom, top),
        x_ticks=log_ticks(min(xs), max(xs)),
        y_ticks=y_ticks,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
    )


def _axes(f: _Frame, chart: Chart) -> Iterable[str]:
    step = f.y_ticks[1] - f.y_ticks[0]
    for t in f.y_ticks:
        y = _n(f.y(t))
        yield f'<line x1="{f.left}" y1="{y}" x2="{f.right}" y2="{y}" stroke="{_GRID_COLOR}"/>'
        label = _e(format_tick(t, step))
        yield f'<text x="{f.left - 6}" y="{y}" text-anchor="end" dy="0.32em">{label}</text>'
    for t in f.x_ticks:
        x = _n(f.x(t))
        yield f'<line x1="{x}" y1="{f.top}" x2="{x}" y2="{f.bottom}" stroke="{_GRID_COLOR}"/>'
        yield f'<line x1="{x}" y1="{f.bottom}" x2="{x}" y2="{f.bottom + 4}" stroke="{_AXIS_COLOR}"/>'
        yield f'<text x="{x}" y="{f.bottom + 16}" text-anchor="middle">{_e(f"{t:g}")}</text>'
    yield (
        f'<path d="M{f.left} {f.top}V{f.bottom}H{f.right}" fill="none" stroke="{_AXIS_COLOR}" class="axis"/>'
    )
    mid_x, mid_y = (f.left + f.right) / 2, (f.top + f.bottom) / 2
    yield (
        f'<text x="{_n(mid_x)}" y="{f.bottom + 32}" text-anchor="middle" class="label">'
        f"{_e(chart.x_label)}</text>"
    )
    yield (
        f'<text transform="translate(14 {_n(mid_y)}) rotate(-90)" text-anchor="middle" class="label">'
        f"{_e(chart.y_label)}</text>"
    )
    yield f'<text x="{f.left}" y="18" class="title">{_e(chart.title)}</text>'


def _segments(f: _Frame, s: Series) -> Iterable[str]:
    """The line: solid between evidence points, dashed and faint where either end is excluded."""
    solid: list[str] = []
    dashed: list[str] = []
    pts = sorted(s.points, key=lambda p: p.x)
    for a, b in itertools.pairwise(pts):
        if a.y is None or b.y is None:
            continue  # a gap: no value was supported there
        d = f"M{_n(f.x(a.x))} {_n(f.y(a.y))}L{_n(f.x(b.x))} {_n(f.y(b.y))}"
        (dashed if Mark.EXCLUDED in (a.mark, b.mark) else solid).append(d)
    color = _e(s.color)
    if solid:
        yield f'<path d="{"".join(solid)}" fill="none" stroke="{color}" stroke-width="2"/>'
    if dashed:
        yield (
            f'<path d="{"".join(dashed)}" fill="none" stroke="{color}" stroke-width="1.5"'
            ' stroke-dasharray="4 3" opacity="0.6"/>'
        )


def _marker(x: float, y: float, mark: Mark, color: str) -> str:
    if mark is Mark.STALLED:
        return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="5" fill="{_STALLED_COLOR}" stroke="#82071e"/>'
    if mark is Mark.EXCLUDED:
        return (
            f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3.5" fill="#fff" stroke="{_EXCLUDED_COLOR}"'
            ' stroke-width="1.5"/>'
        )
    return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3.5" fill="{_e(color)}" stroke="#fff"/>'


def _markers(f: _Frame, s: Series) -> Iterable[str]:
    for p in s.points:
        if p.y is None:
            continue
        tip = f"<title>{_e(p.note)}</title>" if p.note else ""
        yield f'<g class="pt {p.mark.value}">{_marker(f.x(p.x), f.y(p.y), p.mark, s.color)}{tip}</g>'


def _legend(chart: Chart, marks: set[Mark]) -> Iterable[str]:
    """One row under the x label: each series, then the point styles that occur in this chart."""
    x, y = float(_MARGIN_LEFT), float(HEIGHT - 14)
    items = [(s.name, s.color, Mark.NORMAL, True) for s in chart.series] + [
        (label, _EXCLUDED_COLOR, mark, False)
        for mark, label in ((Mark.EXCLUDED, "not evidence"), (Mark.STALLED, "stalled"))
        if mark in marks
    ]
    for label, color, mark, with_line in items:
        line = (
            f'<line x1="{_n(x)}" y1="{_n(y)}" x2="{_n(x + 18)}" y2="{_n(y)}" stroke="{_e(color)}"'
            ' stroke-width="2"/>'
            if with_line
            else ""
        )
        yield (
            f'<g class="legend-item">{line}{_marker(x + 9, y, mark, color)}'
            f'<text x="{_n(x + 24)}" y="{_n(y)}" dy="0.32em">{_e(label)}</text></g>'
        )
        x += 24 + len(label) * _CHAR_WIDTH + 14


def _plottable(s: Series) -> Series:
    """Only points a log x axis can place (x > 0 and finite); a non-finite y becomes a gap."""
    return Series(
        s.name,
        s.color,
        tuple(
            p if p.y is None or math.isfinite(p.y) else Point(p.x, None, p.mark, p.note)
            for p in s.points
            if p.x > 0 and math.isfinite(p.x)
        ),
    )


def render_chart(chart: Chart) -> str:
    """The chart as one <svg> element that scales to its container's width."""
    series = tuple(_plottable(s) for s in chart.series)
    chart = Chart(chart.title, chart.x_label, chart.y_label, series, chart.key)
    points = [p for s in series for p in s.points]
    f = _frame(points)
    body: list[str] = list(_axes(f, chart))
    if not any(p.y is not None for p in points):
        body.append(
            f'<text x="{_n((f.left + f.right) / 2)}" y="{_n((f.top + f.bottom) / 2)}"'
            ' text-anchor="middle" class="empty">no measured values</text>'
        )
    for s in series:
        body.extend(_segments(f, s))
    for s in series:  # markers after every line, so no line crosses a marker
        body.extend(_markers(f, s))
    body.extend(_legend(chart, {p.mark for p in points if p.y is not None}))
    label = f"{chart.title}: {chart.y_label} against {chart.x_label}"
    # No xmlns: the HTML parser puts inline <svg> in the SVG namespace, and the page then
    # holds no URL at all besides the measured target's.
    return (
        f'<svg class="chart" data-chart="{_e(chart.key)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{_e(label)}" font-family="{_e(_FONT)}" font-size="11" fill="#24292f">'
        + "".join(body)
        + "</svg>"
    )
