"""verify's "fell behind" rule (judge.fell_behind): what the server served against the rate asked for,
and whether latency grew through the window; the objective it overrides (judge.rate_verdict); and the
one line that says so in the table, the verdict, the JSON and the HTML."""

from __future__ import annotations

import pytest
from rich.console import Console

from fastapi_tune.measure.histogram import LatencyHistogram
from fastapi_tune.plan.slo import parse_slo
from fastapi_tune.render.html import render_html
from fastapi_tune.render.verify import print_verify, verify_to_json
from fastapi_tune.verify.judge import (
    GROWTH_MIN_SAMPLES,
    SERVED_SHARE_MIN,
    RateCheck,
    Run,
    fell_behind,
    judge,
    merge_checks,
    rate_verdict,
)
from fastapi_tune.verify.run import VerifyResult


def check(
    rate: float = 100.0,
    served_rps: float = 100.0,
    first_ms: float = 12.0,
    last_ms: float = 12.0,
    per_second: int = 50,
    backlog: int = 1,
    drain_s: float | None = 0.01,
    duration_s: float = 6.0,
) -> RateCheck:
    """A window of `duration_s` at `rate` whose first and last seconds' latencies are flat."""
    intended = round(rate * duration_s)
    latencies = [first_ms] * (intended // 2) + [last_ms] * (intended - intended // 2)
    return RateCheck(
        rate_rps=rate,
        duration_s=duration_s,
        intended=intended,
        completed=intended,
        failed=0,
        late=0,
        dropped=0,
        histogram=LatencyHistogram.of(latencies),
        client_cpu_cores=0.05,
        sent=intended,
        served=round(served_rps * duration_s),
        backlog_at_end=backlog,
        drain_s=drain_s,
        first_second=LatencyHistogram.of([first_ms] * per_second),
        last_second=LatencyHistogram.of([last_ms] * per_second),
    )


@pytest.mark.parametrize(
    ("kwargs", "behind"),
    [
        pytest.param({}, False, id="kept-up"),
        pytest.param({"served_rps": 96.0}, False, id="served-within-5pct"),
        pytest.param({"served_rps": 94.0}, True, id="served-short"),
        pytest.param({"last_ms": 20.0}, False, id="latency-noise"),
        pytest.param({"last_ms": 60.0}, False, id="grew-under-50ms"),
        pytest.param({"first_ms": 100.0, "last_ms": 190.0}, False, id="grew-under-2x"),
        pytest.param({"last_ms": 80.0}, True, id="grew-2x-and-50ms"),
        pytest.param({"last_ms": 3400.0, "per_second": GROWTH_MIN_SAMPLES - 1}, False, id="too-few-samples"),
    ],
)
def test_fell_behind(kwargs: dict[str, float], behind: bool) -> None:
    assert (fell_behind(check(**kwargs)) is not None) is behind  # type: ignore[arg-type]


def test_the_line_names_both_rates_the_growth_and_the_backlog() -> None:
    line = fell_behind(check(rate=143.0, served_rps=98.0, last_ms=3400.0, backlog=290, drain_s=3.3))
    assert line == (
        "beyond capacity: served 98 of 143 req/s; p50 grew from 12 ms to 3.4 s;"
        " 290 requests in flight at the window's end, drained in 3.3 s"
    )


def test_a_low_rate_is_not_behind_for_the_request_cut_by_the_window() -> None:
    # 2 req/s over 3 s: 6 starts; the last one is still on the wire when the window closes.
    assert fell_behind(check(rate=2.0, served_rps=5 / 3, duration_s=3.0, per_second=2)) is None
    assert fell_behind(check(rate=2.0, served_rps=3 / 3, duration_s=3.0, per_second=2)) is not None


def test_served_share_is_of_the_rate_asked_for() -> None:
    # Starts dropped at the in-flight bound lower the arrival rate held, not the bar.
    assert fell_behind(check(rate=100.0, served_rps=100.0 * SERVED_SHARE_MIN - 1)) is not None


def test_falling_behind_misses_an_objective_the_completed_requests_meet() -> None:
    objective = parse_slo("p99<5s")
    ok, text = rate_verdict(objective, check())
    assert ok
    assert text.startswith("met:")
    ok, text = rate_verdict(objective, check(rate=143.0, served_rps=98.0, last_ms=3400.0))
    assert not ok
    assert text.startswith("missed: beyond capacity: served 98 of 143 req/s")
    assert "the requests it completed alone read p99" in text


def test_merged_rounds_keep_the_worst_backlog_and_both_seconds() -> None:
    a = check(backlog=3, drain_s=0.1)
    b = check(served_rps=60.0, last_ms=900.0, backlog=200, drain_s=2.0)
    merged = merge_checks(a, b)
    assert merged.served_rps == pytest.approx(80.0)
    assert (merged.backlog_at_end, merged.drain_s) == (200, 2.0)
    assert merged.last_second.total == a.last_second.total + b.last_second.total
    assert fell_behind(merged) is not None


def _result(at_rate: RateCheck) -> VerifyResult:
    run = Run("recommended", 1, 600, 0, 95.0, 600.0, 700.0, 45.0, 1.0, 0.05, at_rate=at_rate)
    return VerifyResult(
        runs=(run,),
        verdict=judge([run]),
        endpoints=("GET /cpu",),
        concurrency=64,
        duration_s=6.0,
        repeat=1,
        interrupted=False,
        rate_rps=at_rate.rate_rps,
    )


LINE = "beyond capacity: served 98 of 143 req/s; p50 grew from 12 ms to 3.4 s"


def test_the_line_is_in_the_table_the_verdict_the_json_and_the_html() -> None:
    result = _result(check(rate=143.0, served_rps=98.0, last_ms=3400.0, backlog=290, drain_s=3.3))
    console = Console(record=True, width=250)
    print_verify(console, result)
    text = console.export_text()
    assert text.count(LINE) == 2  # under the open-loop table, and in the verdict
    data = verify_to_json(result)
    at = data["runs"][0]["at_rate"]
    assert at["beyond_capacity"].startswith(LINE)
    assert (at["arrival_rps"], at["served_rps"], at["backlog_at_end"], at["drain_s"]) == (
        143.0,
        98.0,
        290,
        3.3,
    )
    assert at["latency_last_second_ms"]["p50"] == pytest.approx(3400, rel=0.01)
    assert "achieved_rps" not in at
    assert LINE in data["verdict"]
    assert LINE in render_html({}, None, data)


def test_a_run_that_kept_up_shows_no_line() -> None:
    result = _result(check(rate=49.0, served_rps=49.0))
    console = Console(record=True, width=250)
    print_verify(console, result)
    assert "beyond capacity" not in console.export_text()
    data = verify_to_json(result)
    assert data["runs"][0]["at_rate"]["beyond_capacity"] is None
    assert data["runs"][0]["at_rate"]["fell_behind"] is False
    assert "beyond capacity" not in render_html({}, None, data)
