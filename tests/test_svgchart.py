"""The SVG chart helpers: round ticks, log scales, and markup that is well-formed and escaped."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET

import pytest

from fastapi_tune.render.svgchart import (
    HEIGHT,
    WIDTH,
    Chart,
    LinearScale,
    LogScale,
    Mark,
    Point,
    Series,
    format_tick,
    log_domain,
    log_ticks,
    nice_ticks,
    render_chart,
)

SVG = "{http://www.w3.org/2000/svg}"


def _is_nice(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-12)
    return any(math.isclose(mantissa, m) for m in (1.0, 2.0, 2.5, 5.0, 10.0))


@pytest.mark.parametrize(
    ("lo", "hi", "max_ticks"),
    [
        pytest.param(0, 1258.5, 6, id="throughput"),
        pytest.param(0, 96, 6, id="plateau"),
        pytest.param(0, 0.3, 6, id="below-one"),
        pytest.param(3, 7, 6, id="offset"),
        pytest.param(0, 1e6, 5, id="large"),
        pytest.param(-40, 40, 6, id="negative"),
        pytest.param(0, 1, 2, id="two-ticks"),
        pytest.param(101.2, 101.5, 6, id="narrow"),
    ],
)
def test_nice_ticks_cover_the_range_with_round_even_steps(lo: float, hi: float, max_ticks: int) -> None:
    ticks = nice_ticks(lo, hi, max_ticks)
    assert 2 <= len(ticks) <= max_ticks
    assert ticks[0] <= lo
    assert ticks[-1] >= hi
    steps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(math.isclose(s, steps[0], rel_tol=1e-9) for s in steps)
    assert _is_nice(steps[0])


def test_nice_ticks_pick_the_finest_step_that_fits() -> None:
    assert nice_ticks(0, 96) == (0, 20, 40, 60, 80, 100)
    assert nice_ticks(0, 405.6) == (0, 100, 200, 300, 400, 500)
    assert nice_ticks(0, 0.3) == (0, 0.1, 0.2, 0.3)  # no 0.30000000000000004


@pytest.mark.parametrize(("lo", "hi"), [pytest.param(0, 0, id="zero"), pytest.param(5, 5, id="one-value")])
def test_nice_ticks_widen_an_empty_range(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert len(ticks) >= 2
    assert ticks[0] <= lo < ticks[-1]


def test_nice_ticks_refuse_non_finite_bounds() -> None:
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0, math.inf)


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        pytest.param(1, 128, (1, 2, 4, 8, 16, 32, 64, 128), id="ladder"),
        pytest.param(3, 50, (2, 4, 8, 16, 32, 64), id="between-powers"),
        pytest.param(16, 16, (8, 16, 32), id="one-level"),
        pytest.param(1, 4, (1, 2, 4), id="short"),
    ],
)
def test_log_ticks_are_powers_of_two_around_the_levels(
    lo: float, hi: float, expected: tuple[float, ...]
) -> None:
    assert log_ticks(lo, hi) == expected
    assert log_domain(lo, hi) == (expected[0], expected[-1])


def test_log_ticks_thin_out_a_long_range() -> None:
    ticks = log_ticks(1, 5000, max_ticks=9)
    assert len(ticks) <= 9
    ratios = {b / a for a, b in itertools.pairwise(ticks)}
    assert ratios == {4.0}  # every other power of two, evenly


def test_log_domain_refuses_non_positive_values() -> None:
    with pytest.raises(ValueError, match="positive"):
        log_domain(0, 10)


def test_log_scale_gives_equal_ratios_equal_distances() -> None:
    s = LogScale(1, 128, 0, 700)
    assert s(1) == pytest.approx(0)
    assert s(128) == pytest.approx(700)
    assert s(2) - s(1) == pytest.approx(s(128) - s(64))
    y = LinearScale(0, 100, 250, 50)  # SVG's y grows downwards
    assert y(0) == 250
    assert y(100) == 50
    assert y(50) == 150


@pytest.mark.parametrize(
    ("value", "step", "text"),
    [
        pytest.param(1250, 250, "1,250", id="thousands"),
        pytest.param(0.25, 0.05, "0.25", id="fraction"),
        pytest.param(5, 2.5, "5.0", id="two-and-a-half"),
        pytest.param(40, 20, "40", id="integer"),
    ],
)
def test_format_tick_shows_the_decimals_the_step_needs(value: float, step: float, text: str) -> None:
    assert format_tick(value, step) == text


def _chart(points: tuple[Point, ...], title: str = "Throughput") -> Chart:
    return Chart(title, "concurrent requests", "req/s", (Series("req/s", "#0969da", points),), key="t")


def _parse(svg: str) -> ET.Element:
    # The page omits xmlns (HTML adds it); XML needs it to parse.
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def test_chart_is_well_formed_with_one_marker_per_value_inside_the_view() -> None:
    points = tuple(Point(c, c * 10.0, note=f"c={c}") for c in (1, 2, 4, 8, 16))
    root = _parse(render_chart(_chart(points)))
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"
    data = root.findall(f".//{SVG}g[@class='pt normal']/{SVG}circle")
    assert len(data) == 5
    xs = [float(c.get("cx", "nan")) for c in data]
    ys = [float(c.get("cy", "nan")) for c in data]
    assert xs == sorted(xs)
    assert ys == sorted(ys, reverse=True)
    assert all(0 < x < WIDTH for x in xs)
    assert all(0 < y < HEIGHT for y in ys)
    gaps = [b - a for a, b in itertools.pairwise(xs)]
    assert max(gaps) == pytest.approx(min(gaps), abs=0.2)  # log scale: doublings equally spaced
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert {"1", "2", "4", "8", "16", "req/s", "concurrent requests", "Throughput"} <= set(labels)


def test_excluded_and_stalled_points_are_drawn_apart_and_named_in_the_legend() -> None:
    points = (Point(1, 10), Point(2, 20), Point(4, 25, Mark.EXCLUDED), Point(8, 5, Mark.STALLED))
    root = _parse(render_chart(_chart(points)))
    assert len(root.findall(f".//{SVG}g[@class='pt excluded']")) == 1
    stalled = root.findall(f".//{SVG}g[@class='pt stalled']/{SVG}circle")
    assert [c.get("fill") for c in stalled] == ["#d1242f"]
    dashed = [p for p in root.iter(f"{SVG}path") if p.get("stroke-dasharray")]
    assert len(dashed) == 1
    assert dashed[0].get("d", "").count("M") == 2
    legend = [t.text for g in root.iter(f"{SVG}g") if g.get("class") == "legend-item" for t in g]
    assert "not evidence" in legend
    assert "stalled" in legend


def test_missing_values_leave_a_gap_and_an_empty_chart_says_so() -> None:
    root = _parse(render_chart(_chart((Point(1, 5), Point(2, None), Point(4, 7), Point(8, 9)))))
    lines = [p.get("d", "") for p in root.iter(f"{SVG}path") if p.get("stroke") == "#0969da"]
    assert len(lines) == 1
    assert lines[0].count("M") == 1
    assert len(root.findall(f".//{SVG}g[@class='pt normal']")) == 3
    odd = (Point(0, 3), Point(1, None), Point(2, math.nan), Point(math.inf, 1), Point(4, -math.inf))
    empty = render_chart(_chart(odd))  # x=0 cannot sit on a log axis; NaN and infinity are no values
    assert "no measured values" in empty
    assert "legend-item" in empty  # the series is still named


def test_chart_text_is_escaped() -> None:
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
    svg = render_chart(_chart((Point(1, 1, note=hostile),), title=hostile))
    assert "<script" not in svg
    assert "<img" not in svg
    root = _parse(svg)
    assert hostile in [t.text for t in root.iter(f"{SVG}text")]
    assert hostile in [t.text for t in root.iter(f"{SVG}title")]


def test_a_negative_value_widens_the_axis_below_zero() -> None:
    root = _parse(render_chart(_chart((Point(1, -5), Point(2, 10)))))
    ys = [float(c.get("cy", "nan")) for c in root.findall(f".//{SVG}g[@class='pt normal']/{SVG}circle")]
    labels = {t.text for t in root.iter(f"{SVG}text")}
    assert "-5" in labels  # nice_ticks(-5, 10) = (-5, 0, 5, 10)
    assert all(0 < y < HEIGHT - 60 for y in ys)  # above the tick labels: inside the plot
