"""The judgement of a run against a baseline, on real reports of tests/apps/check_app.py (see
tests/data/check/README.md), and the CI outputs `compare` writes from it."""

from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.cli.ci import locator
from fastapi_tune.core.errors import BadInputError, ExitCode
from fastapi_tune.core.rules import CLASS_HARM
from fastapi_tune.discover.openapi import Skipped
from fastapi_tune.judge.compare import (
    BaselineComparison,
    Change,
    CompareOutcome,
    Metric,
    RouteStatus,
    all_new,
    check_same_app,
    compare_reports,
    median_noise,
)
from fastapi_tune.judge.thresholds import CPU_FLOOR
from fastapi_tune.measure.report import Endpoint, EndpointClass, Level, ProbeReport, load_report
from fastapi_tune.measure.stack_attribution import (
    Hotspot,
    LoopShares,
    RouteProfile,
    ThreadKind,
    ThreadpoolLoad,
)
from fastapi_tune.render.compare import github_annotations, junit_xml, markdown_summary
from tests.servers import REPO

DATA = REPO / "tests" / "data" / "check"
ORDERS, SCORE, REPORT, HEALTH = "GET /orders/{order_id}", "GET /score", "GET /report", "GET /health"


def report(name: str) -> ProbeReport:
    loaded = load_report(DATA / f"{name}.json")
    assert loaded is not None
    return loaded


def by_key(c: BaselineComparison) -> dict[str, RouteStatus]:
    return {r.key: r.status for r in c.routes}


@pytest.mark.parametrize("name", ["again", "busy"])
def test_the_unchanged_app_passes(name: str) -> None:
    """Measured again, and measured with a busy loop per core beside it: no false alarm."""
    c = compare_reports(report("base"), report(name))
    assert c.outcome is CompareOutcome.PASSED, [r.reasons for r in c.routes]
    assert set(by_key(c).values()) == {RouteStatus.UNCHANGED}, by_key(c)


def test_a_busy_runner_says_so_and_does_not_believe_the_class_flips_it_causes() -> None:
    c = compare_reports(report("base"), report("busy"))
    assert c.busy is not None
    assert "no idle CPU" in c.busy
    flipped = [r for r in c.routes if r.klass is not None and r.klass.base != r.klass.new]
    assert flipped, "the busy report's classes moved (that is what makes it a test)"
    for r in flipped:
        assert r.klass is not None
        assert r.klass.outcome is Change.NOT_JUDGED
        assert "no idle CPU" in r.klass.note or "unsure" in r.klass.note
    # Latency is left out where the host was starved; CPU per request still holds there.
    score = next(r for r in c.routes if r.key == SCORE)
    metrics = {m.metric: m for m in score.metrics}
    assert metrics[Metric.LATENCY].outcome is Change.NOT_JUDGED
    assert metrics[Metric.CPU].outcome is Change.SAME


def test_the_variant_regresses_where_it_changed() -> None:
    c = compare_reports(report("base"), report("variant"))
    assert by_key(c) == {
        ORDERS: RouteStatus.REGRESSED,
        SCORE: RouteStatus.REGRESSED,
        REPORT: RouteStatus.GONE,
        HEALTH: RouteStatus.NEW,
    }
    assert c.outcome is CompareOutcome.REGRESSED
    orders = next(r for r in c.routes if r.key == ORDERS)
    assert orders.klass is not None
    assert (orders.klass.base, orders.klass.new, orders.klass.outcome) == (
        EndpointClass.IO_BOUND,
        EndpointClass.LOOP_BLOCKING,
        Change.WORSE,
    )
    assert "the stacks show it" in orders.klass.note
    assert "time.sleep" in orders.klass.note
    assert orders.culprit is not None
    assert (orders.culprit.file, orders.culprit.line, orders.culprit.call) == (
        "tests/apps/check_app.py",
        37,
        "time.sleep",
    )
    assert orders.culprit_is_new
    score = next(r for r in c.routes if r.key == SCORE)
    cpu = next(m for m in score.metrics if m.metric is Metric.CPU)
    assert cpu.outcome is Change.WORSE
    assert cpu.change is not None
    assert cpu.band is not None
    assert cpu.change > cpu.band >= CPU_FLOOR
    assert cpu.levels
    assert cpu.noise is not None


def _scaled_cpu(e: Endpoint, factor: float) -> Endpoint:
    def scale(lv: Level) -> Level:
        assert lv.demand is not None
        assert lv.server_cpu_cores is not None
        workers = tuple(replace(w, on_cpu_cores=w.on_cpu_cores * factor) for w in lv.demand.workers)
        return replace(
            lv, demand=replace(lv.demand, workers=workers), server_cpu_cores=lv.server_cpu_cores * factor
        )

    return replace(e, levels=tuple(scale(lv) for lv in e.levels))


@pytest.mark.parametrize(
    ("factor", "status"),
    [
        pytest.param(1.2, RouteStatus.UNCHANGED, id="20%-within-the-floor"),
        pytest.param(2.5, RouteStatus.REGRESSED, id="2.5x-regressed"),
        pytest.param(0.4, RouteStatus.IMPROVED, id="0.4x-improved"),
    ],
)
def test_cpu_per_request_is_judged_against_the_floor(factor: float, status: RouteStatus) -> None:
    base = report("base")
    new = replace(
        base, endpoints=tuple(_scaled_cpu(e, factor) if e.path == "/score" else e for e in base.endpoints)
    )
    c = compare_reports(base, new)
    assert by_key(c)[SCORE] is status
    cpu = next(m for m in next(r for r in c.routes if r.key == SCORE).metrics if m.metric is Metric.CPU)
    assert cpu.change == pytest.approx(factor - 1, rel=1e-6)


def test_levels_that_disagree_are_too_noisy_to_call_same() -> None:
    base = report("base")
    score = next(e for e in base.endpoints if e.path == "/score")
    factors = [1.0, 3.0, 0.35, 1.0]
    levels = tuple(
        _scaled_cpu(replace(score, levels=(lv,)), f).levels[0]
        for lv, f in zip(score.levels, factors, strict=False)
    )
    new = replace(
        base, endpoints=tuple(replace(e, levels=levels) if e is score else e for e in base.endpoints)
    )
    r = next(r for r in compare_reports(base, new).routes if r.key == SCORE)
    cpu = next(m for m in r.metrics if m.metric is Metric.CPU)
    assert cpu.outcome is Change.NOT_JUDGED
    assert "too noisy" in cpu.note


def test_noise_is_taken_around_the_trend_of_a_serialised_route() -> None:
    """A ratio that grows with the queue is the regression's shape; scatter is noise."""
    levels = [1, 2, 4, 8, 16]
    trend = [0.5 + 0.2 * i for i in range(5)]
    scatter = [0.5, 0.9, 0.4, 0.8, 0.45]
    trend_noise, scatter_noise = median_noise(levels, trend), median_noise(levels, scatter)
    assert trend_noise is not None
    assert scatter_noise is not None
    assert trend_noise < 0.01 < scatter_noise
    assert median_noise([4], [0.3]) is None


def _profile(blocked: float, file: str = "app/orders.py", line: int = 42) -> RouteProfile:
    spot = Hotspot(ThreadKind.EVENT_LOOP, file, line, "get_order", blocked, "time.sleep")
    return RouteProfile(
        1, 1.5, LoopShares(50, 0.05, blocked + 0.05, blocked, 0.0), ThreadpoolLoad(0, 0, 0), (spot,)
    )


def _with_class(e: Endpoint, cls: EndpointClass, confidence: float, profile: RouteProfile | None) -> Endpoint:
    assert e.verdict is not None
    return replace(e, verdict=replace(e.verdict, cls=cls, confidence=confidence), profile=profile)


@pytest.mark.parametrize(
    ("confidence", "profile", "change"),
    [
        pytest.param(0.9, _profile(0.85), Change.WORSE, id="stacks-show-a-blocked-loop"),
        pytest.param(0.3, _profile(0.85), Change.WORSE, id="stacks-win-over-low-confidence"),
        pytest.param(0.3, None, Change.NOT_JUDGED, id="unsure-and-no-stacks"),
        pytest.param(0.3, _profile(0.05), Change.NOT_JUDGED, id="unsure-and-the-loop-was-not-blocked"),
    ],
)
def test_a_class_change_counts_when_believable(
    confidence: float, profile: RouteProfile | None, change: Change
) -> None:
    base = report("base")
    new = replace(
        base,
        endpoints=tuple(
            _with_class(e, EndpointClass.LOOP_BLOCKING, confidence, profile)
            if e.path == "/orders/{order_id}"
            else e
            for e in base.endpoints
        ),
    )
    r = next(r for r in compare_reports(base, new).routes if r.key == ORDERS)
    assert r.klass is not None
    assert r.klass.outcome is change, r.klass.note
    assert (r.status is RouteStatus.REGRESSED) == (change is Change.WORSE)


def test_a_signature_the_baseline_already_had_confirms_nothing() -> None:
    """A baseline misread on a starved host (the same blocked loop, read io-bound): not a change."""
    base = report("base")
    orders = next(e for e in base.endpoints if e.path == "/orders/{order_id}")
    base = replace(
        base,
        endpoints=tuple(replace(e, profile=_profile(0.85)) if e is orders else e for e in base.endpoints),
    )
    new = replace(
        base,
        endpoints=tuple(
            _with_class(e, EndpointClass.LOOP_BLOCKING, 0.3, _profile(0.85))
            if e.path == "/orders/{order_id}"
            else e
            for e in base.endpoints
        ),
    )
    r = next(r for r in compare_reports(base, new).routes if r.key == ORDERS)
    assert r.klass is not None
    assert r.klass.outcome is Change.NOT_JUDGED
    assert "the stacks show nothing new" in r.klass.note
    assert r.status is not RouteStatus.REGRESSED


def test_the_harm_order_ranks_every_comparable_class() -> None:
    assert set(CLASS_HARM) == {str(c) for c in EndpointClass} - {"inconclusive"}
    order = ["io-bound", "threadpool-bound", "cpu-bound", "loop-blocking", "stalled"]
    assert [CLASS_HARM[c] for c in order] == sorted(CLASS_HARM[c] for c in order)


def test_a_route_that_now_fails_its_first_request_regressed() -> None:
    base, new = report("base"), report("again")
    gone = next(e for e in new.endpoints if e.path == "/report")
    new = replace(
        new,
        endpoints=tuple(e for e in new.endpoints if e is not gone),
        skipped=(Skipped("GET", "/report", "preflight answered 500: the route fails on its own"),),
    )
    c = compare_reports(base, new)
    assert by_key(c)[REPORT] is RouteStatus.REGRESSED
    assert "500" in next(r for r in c.routes if r.key == REPORT).reasons[0]
    timed_out = replace(new, skipped=(Skipped("GET", "/report", "time budget: no level measured"),))
    assert by_key(compare_reports(base, timed_out))[REPORT] is RouteStatus.INCONCLUSIVE


def test_nothing_judged_is_its_own_outcome() -> None:
    base = report("base")
    blind = replace(
        base,
        endpoints=tuple(
            replace(
                e,
                levels=(),
                verdict=replace(e.verdict, cls=EndpointClass.INCONCLUSIVE) if e.verdict else None,
            )
            for e in base.endpoints
        ),
    )
    c = compare_reports(base, blind)
    assert set(by_key(c).values()) == {RouteStatus.INCONCLUSIVE}
    assert c.outcome is CompareOutcome.NOT_JUDGED


def test_reports_of_another_app_are_refused() -> None:
    base = report("base")
    other = replace(base, endpoints=tuple(replace(e, path="/other" + e.path) for e in base.endpoints))
    with pytest.raises(BadInputError, match="none of the routes"):
        check_same_app(base, other, "base.json", "new.json")
    named = replace(base, settings={**base.settings, "app": "shop:app"})
    with pytest.raises(BadInputError, match=r"a report of main:app, new\.json of shop:app"):
        check_same_app(
            replace(base, settings={**base.settings, "app": "main:app"}), named, "base.json", "new.json"
        )
    mounted = replace(base, target=base.target + "/api")
    with pytest.raises(BadInputError, match="probed /api"):
        check_same_app(base, mounted, "base.json", "new.json")


def test_a_first_run_is_all_new() -> None:
    c = all_new(report("base"))
    assert set(by_key(c).values()) == {RouteStatus.NEW}
    assert c.outcome is CompareOutcome.PASSED


# ---------------------------------------------------------------------------------------
# CI outputs


def test_junit_has_one_testcase_per_route_and_a_failure_per_regression() -> None:
    c = compare_reports(report("base"), report("variant"))
    root = ET.fromstring(junit_xml(c, "fastapi-tune check"))
    suite = root.find("testsuite")
    assert suite is not None
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {ORDERS, SCORE, REPORT, HEALTH}
    assert suite.get("failures") == "2"
    assert suite.get("skipped") == "1"
    failure = cases[ORDERS].find("failure")
    assert failure is not None
    assert "loop-blocking" in (failure.get("message") or "")
    assert cases[ORDERS].get("file") == "tests/apps/check_app.py"
    assert cases[ORDERS].get("line") == "37"
    assert cases[REPORT].find("skipped") is not None
    assert cases[HEALTH].find("failure") is None
    assert cases[HEALTH].find("skipped") is None


def test_github_annotations_point_at_the_line_in_the_repository(tmp_path: Path) -> None:
    c = compare_reports(report("base"), report("variant"))
    lines = github_annotations(c, locator(REPO, {"GITHUB_WORKSPACE": str(REPO)}))
    errors = [line for line in lines if line.startswith("::error")]
    assert len(errors) == 2
    orders = next(line for line in errors if "orders" in line)
    assert orders.startswith(
        "::error file=tests/apps/check_app.py,line=37,title=GET /orders/{order_id} regressed::"
    )
    assert "io-bound -> loop-blocking" in orders
    assert "\n" not in orders
    # From a workspace that does not hold the file: a route-level annotation, no file.
    outside = github_annotations(c, locator(REPO, {"GITHUB_WORKSPACE": str(tmp_path)}))
    assert all("file=" not in line for line in outside)
    assert any(line.startswith("::error title=GET /orders/{order_id} regressed::") for line in outside)


def test_annotation_text_is_escaped() -> None:
    c = compare_reports(report("base"), report("variant"))
    r = next(r for r in c.routes if r.key == ORDERS)
    odd = dataclasses.replace(c, routes=(dataclasses.replace(r, reasons=("100% worse,\nreally: yes",)),))
    (line,) = github_annotations(odd, lambda f: f)
    assert "100%25 worse,%0Areally: yes" in line.split("::", 2)[2]
    assert "title=GET /orders/{order_id} regressed" in line


def test_markdown_summary_has_a_table_and_the_reasons() -> None:
    text = markdown_summary(compare_reports(report("base"), report("variant")), "fastapi-tune check")
    assert text.startswith("### fastapi-tune check: 2 route(s) regressed")
    assert "| `GET /orders/{order_id}` | **regressed** | io-bound -> loop-blocking |" in text
    assert "- at `tests/apps/check_app.py:37 get_order -> time.sleep (new in the stacks)`" in text


# ---------------------------------------------------------------------------------------
# The command


def compare_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["compare", *args], env={"GITHUB_ACTIONS": "", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def test_compare_exits_9_with_junit_annotations_and_summary(tmp_path: Path) -> None:
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    code, stdout, stderr = compare_cli(
        str(DATA / "base.json"), str(DATA / "variant.json"), "--junit", str(junit), "--app-dir", str(REPO),
        env={"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(REPO), "GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert code == ExitCode.REGRESSED, stderr
    assert "2 route(s) regressed against the baseline: GET /orders/{order_id}, GET /score" in stderr
    assert "::error file=tests/apps/check_app.py,line=37," in stdout
    assert ET.parse(junit).getroot().get("failures") == "2"
    assert summary.read_text().startswith("earlier step\n### fastapi-tune compare variant.json")


def test_compare_json_is_the_comparison_and_nothing_else() -> None:
    code, stdout, _ = compare_cli(str(DATA / "base.json"), str(DATA / "busy.json"), "--json")
    assert code == ExitCode.OK
    data = json.loads(stdout)
    assert data["outcome"] == "passed"
    assert data["busy"]
    orders = next(r for r in data["routes"] if r["path"] == "/orders/{order_id}")
    cpu = orders["metrics"]["cpu_per_request_ms"]
    assert cpu["outcome"] == "same"
    assert cpu["levels"]
    assert math.isfinite(cpu["band"])
    assert orders["class"]["outcome"] == "not judged"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param("[1, 2]", "expected an object", id="not-an-object"),
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param('{"schema_version": 1}', "schema_version", id="old-schema"),
    ],
)
def test_compare_refuses_what_is_not_a_report_in_one_line(tmp_path: Path, content: str, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, _, stderr = compare_cli(str(DATA / "base.json"), str(bad))
    assert code == ExitCode.BAD_INPUT
    assert needle in stderr
    assert str(bad) in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_compare_refuses_another_apps_report(tmp_path: Path) -> None:
    other = json.loads((DATA / "base.json").read_text())
    for e in other["endpoints"]:
        e["path"] = "/v2" + e["path"]
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    code, _, stderr = compare_cli(str(DATA / "base.json"), str(path))
    assert code == ExitCode.BAD_INPUT
    assert "a report of another app?" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_check_refuses_a_bad_baseline_before_starting_the_app(tmp_path: Path) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text("{}")
    result = CliRunner().invoke(app, ["check", "nosuch:app", "--baseline", str(bad)])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "schema_version" in result.stderr
    assert "nosuch" not in result.stderr
