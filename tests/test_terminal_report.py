"""The terminal report scales with the app: one line per route, problems first, skipped routes
grouped, full panels for a few (all with --verbose), and no normal fact dressed up as news.

The wide report is synthetic but drawn by the real renderer from measured levels (the sample
app's four routes in tests/data/, each repeated 15 times under new paths, judged by the real
classifier); the live tests probe real apps under uvicorn.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Final

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.rules import stuck_in_flight
from fastapi_tune.discover.openapi import UNSAFE_REASON, Skipped
from fastapi_tune.judge.classify import classify_report
from fastapi_tune.measure.report import (
    Endpoint,
    EndpointClass,
    Evidence,
    Latency,
    Level,
    ProbeReport,
    StopReason,
    Verdict,
    report_from_json,
    report_to_json,
)
from fastapi_tune.measure.stack_attribution import (
    Hotspot,
    LoopShares,
    RouteProfile,
    ThreadKind,
    ThreadpoolLoad,
)
from fastapi_tune.render.overview import (
    PANEL_LINES,
    PANELS_MAX,
    SKIP_GROUPS_SHOWN,
    Standing,
    choose_panels,
    limiting_spot,
    ordered,
    panel_candidates,
    skip_groups,
    standing,
)
from fastapi_tune.render.probe import endpoint_panel, level_notes, print_report
from fastapi_tune.render.verify import note_lines, print_verify
from fastapi_tune.verify.run import Run, VerifyResult
from tests.servers import serve

DATA: Final = Path(__file__).parent / "data"
ROUTES: Final = 60
# Issue 30's bound for the default screen: two lines per measured route, plus 60.
PER_ROUTE: Final = 2
FIXED: Final = 60


def budget(routes: int) -> int:
    return PER_ROUTE * routes + FIXED


def sample() -> ProbeReport:
    raw = json.loads((DATA / "sample_probe.json").read_text())
    raw["schema_version"] = 2  # as test_golden_outputs: the file predates schema 2's optional additions
    return report_from_json(raw, "sample")


BLOCKING_LINE: Final = RouteProfile(
    workers=1,
    seconds=1.5,
    loop=LoopShares(samples=70, idle=0.02, app=0.95, app_blocked=0.93, framework=0.03),
    threadpool=ThreadpoolLoad(busy_threads=0.0, pool_wait_threads=0.0, threads_seen=1),
    hotspots=(Hotspot(ThreadKind.EVENT_LOOP, "shop/stock.py", 43, "get_stock", 0.93, "time.sleep"),),
)


def wide_report(routes: int = ROUTES) -> ProbeReport:
    """`routes` measured routes of the sample's four kinds, plus what a big app's document skips."""
    base = sample()
    kinds = {e.path: e for e in base.endpoints}
    names = ("/orders/{order_id}", "/report", "/inventory", "/score")
    endpoints: list[Endpoint] = []
    for i in range(routes):
        name = names[i % len(names)]
        ep = replace(kinds[name], path=f"/api/v1/r{i}{name}", url=f"http://127.0.0.1:8000/api/v1/r{i}{name}")
        if name == "/inventory":
            ep = replace(ep, profile=BLOCKING_LINE)
        endpoints.append(ep)
    # Real apps also have routes the budget cut short and routes that failed under load.
    endpoints[1] = replace(endpoints[1], levels=endpoints[1].levels[:1], stop_reason=StopReason.TIME_BUDGET)
    endpoints[5] = replace(
        endpoints[5], stop_reason=StopReason.ERRORS, stop_detail="7/100 failed, mostly 5xx, at c=8"
    )
    skipped = [Skipped("POST", f"/api/v1/things{i}", UNSAFE_REASON) for i in range(136)]
    skipped += [
        Skipped("GET", f"/api/v1/items{i}/{{item_id}}", "preflight answered 404: item_id=1 was made up; pass"
                " a real value with --param item_id=VALUE")
        for i in range(12)
    ]  # fmt: skip
    skipped += [
        Skipped("GET", f"/api/v1/private{i}", "preflight answered 401: pass credentials with -H"
                " 'Authorization: ...'")
        for i in range(5)
    ]  # fmt: skip
    return classify_report(replace(base, endpoints=tuple(endpoints), skipped=tuple(skipped)))


def screen(report: ProbeReport, width: int, verbose: bool = False) -> list[str]:
    """What print_report shows in a terminal `width` columns wide, line by line."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    print_report(console, report, verbose)
    return buffer.getvalue().splitlines()


def route_of(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


# ---------------------------------------------------------------------------------------
# Sixty routes on one screen


@pytest.mark.parametrize("width", [80, 120, 200])
def test_sixty_routes_fit_two_lines_each_plus_sixty(width: int) -> None:
    report = wide_report()
    lines = screen(report, width)
    assert len(lines) <= budget(ROUTES), f"{len(lines)} lines at {width} columns:\n" + "\n".join(lines)
    text = " ".join(ln.strip() for ln in lines)  # a long skip line may wrap on a narrow screen
    for ep in report.endpoints:  # every measured route's verdict is on screen, on its own line
        assert ep.verdict is not None
        row = next((ln for ln in lines if route_of(ep) in ln), None)
        assert row is not None, route_of(ep)
        assert ep.verdict.cls in row
    assert "136: not a safe method, e.g. POST /api/v1/things0 (name it with -e or pass --unsafe)" in text
    assert "12: preflight answered 404, e.g. GET /api/v1/items0/{item_id}" in text
    assert sum(ln.startswith("skipped") for ln in lines) <= SKIP_GROUPS_SHOWN + 1


def test_the_table_lists_problems_first_then_the_routes_that_size_the_plan() -> None:
    report = wide_report()
    lines = screen(report, 200)
    lines = lines[next(i for i, ln in enumerate(lines) if ln.startswith("Verdicts for")) :]  # the table
    rows = [
        next(i for i, ln in enumerate(lines) if route_of(ep) in ln and "%" in ln) for ep in report.endpoints
    ]
    on_screen = [ep for _, ep in sorted(zip(rows, report.endpoints, strict=True), key=lambda p: p[0])]
    standings = [standing(ep) for ep in on_screen]
    assert standings == sorted(standings)
    assert on_screen[0].verdict is not None
    assert on_screen[0].verdict.cls is EndpointClass.LOOP_BLOCKING
    # The blocking line the stacks named is in the route's row; the failed ladder says how it ended.
    blocking = next(ln for ln in lines if "GET /api/v1/r2/inventory" in ln and "%" in ln)
    assert "shop/stock.py:43 get_stock → time.sleep" in blocking
    failed = next(ln for ln in lines if "GET /api/v1/r5/report" in ln and "%" in ln)
    assert "stopped: errors" in failed


def test_only_a_handful_of_panels_by_default_and_every_one_with_verbose() -> None:
    report = wide_report()
    default = "\n".join(screen(report, 120))
    verbose = "\n".join(screen(report, 120, verbose=True))
    titles = re.compile(r"^╭─ (GET /\S+)", re.MULTILINE)
    shown = titles.findall(default)
    assert 1 <= len(shown) <= PANELS_MAX
    ranked = ordered(report.endpoints)
    firsts = [route_of(ranked[i]) for i in panel_candidates(ranked)]
    assert shown == firsts[: len(shown)]  # the first route of each class that matters, in order
    classes = [ep.verdict.cls for ep in ranked if ep.verdict is not None and route_of(ep) in shown]
    assert (
        classes
        == [EndpointClass.LOOP_BLOCKING, EndpointClass.THREADPOOL_BOUND, EndpointClass.CPU_BOUND][
            : len(shown)
        ]
    )
    assert sorted(titles.findall(verbose)) == sorted(route_of(ep) for ep in report.endpoints)
    assert verbose.count("levels used as evidence") == ROUTES  # full panels: every number
    assert "levels used as evidence" not in default
    assert "--verbose shows every one in full" in default
    # Every skipped route by name in verbose, grouped by default.
    assert "skipped POST /api/v1/things135" in verbose
    assert "skipped POST /api/v1/things135" not in default


def test_a_small_app_keeps_its_panels_within_the_screen() -> None:
    report = sample()  # the demo's four routes, one of each kind
    lines = screen(report, 120)
    assert len(lines) <= budget(len(report.endpoints))
    panels = [ln for ln in lines if ln.startswith("╭─")]
    assert len(panels) >= 3  # io-bound too, room allowing: a small app may keep its panels


def test_json_is_the_same_whatever_the_screen_shows() -> None:
    report = wide_report()
    before = json.dumps(report_to_json(report), sort_keys=True)
    screen(report, 80)
    screen(report, 80, verbose=True)
    assert json.dumps(report_to_json(report), sort_keys=True) == before
    assert len(report_to_json(report)["endpoints"]) == ROUTES  # every route, every level in the file


# ---------------------------------------------------------------------------------------
# The rules, one place (render.overview)


def _ep(
    path: str, cls: EndpointClass | None, confidence: float = 0.5, stop: StopReason = StopReason.SATURATED
) -> Endpoint:
    verdict = None if cls is None else Verdict(cls, confidence, "s", Evidence(), ())
    return Endpoint("GET", path, f"http://x{path}", (), stop, verdict=verdict)


def test_order_problems_then_plan_sizing_then_the_rest() -> None:
    eps = [
        _ep("/io", EndpointClass.IO_BOUND),
        _ep("/none", None),
        _ep("/cpu", EndpointClass.CPU_BOUND),
        _ep("/inc", EndpointClass.INCONCLUSIVE),
        _ep("/tp", EndpointClass.THREADPOOL_BOUND),
        _ep("/failed", EndpointClass.IO_BOUND, stop=StopReason.ERRORS),
        _ep("/ser", EndpointClass.SERIALIZED),
        _ep("/pool", EndpointClass.POOL_BOUND),
        _ep("/stall", EndpointClass.STALLED),
        _ep("/loop-sure", EndpointClass.LOOP_BLOCKING, 0.9),
        _ep("/loop-unsure", EndpointClass.LOOP_BLOCKING, 0.3),
    ]
    got = [e.path for e in ordered(eps)]
    assert got == [
        "/loop-sure", "/loop-unsure", "/stall", "/pool", "/tp", "/failed",
        "/cpu", "/ser",
        "/io", "/inc", "/none",
    ]  # fmt: skip
    assert [standing(e) for e in ordered(eps)][5:7] == [Standing.PROBLEM, Standing.SIZES_PLAN]


@pytest.mark.parametrize(
    ("heights", "chosen"),
    [
        pytest.param([10, 10, 10, 10, 10], [0, 1, 2, 3], id="at-most-a-handful"),
        pytest.param([PANEL_LINES + 20, 5], [0], id="the-first-always-shows"),
        pytest.param([30, 30, 5], [0], id="order-kept-no-small-one-jumps-the-queue"),
        pytest.param([], [], id="nothing-to-show"),
    ],
)
def test_choose_panels(heights: list[int], chosen: list[int]) -> None:
    assert choose_panels(list(range(len(heights))), heights) == chosen


def test_panel_candidates_are_problems_and_plan_sizers_on_a_big_app() -> None:
    big = [_ep(f"/io{i}", EndpointClass.IO_BOUND) for i in range(8)] + [_ep("/cpu", EndpointClass.CPU_BOUND)]
    assert panel_candidates(ordered(big)) == [0]
    unsure = [*big, _ep("/pool", EndpointClass.POOL_BOUND, confidence=0.2)]
    assert [ordered(unsure)[i].path for i in panel_candidates(ordered(unsure))] == ["/cpu"]  # too unsure
    failed = [*big, _ep("/boom", EndpointClass.INCONCLUSIVE, confidence=0.0, stop=StopReason.ERRORS)]
    assert [ordered(failed)[i].path for i in panel_candidates(ordered(failed))] == ["/boom", "/cpu"]
    twice = [*big, _ep("/cpu2", EndpointClass.CPU_BOUND, confidence=0.4)]
    assert [ordered(twice)[i].path for i in panel_candidates(ordered(twice))] == ["/cpu"]  # one per class
    small = [_ep("/io", EndpointClass.IO_BOUND), _ep("/cpu", EndpointClass.CPU_BOUND)]
    assert panel_candidates(ordered(small)) == [0, 1]  # a small app offers every route


def test_skip_groups_count_and_give_one_example_each() -> None:
    skipped = [
        Skipped("POST", "/a", UNSAFE_REASON),
        Skipped("GET", "/p", "preflight answered 401: pass credentials with -H 'Authorization: ...'"),
        Skipped("PUT", "/b", UNSAFE_REASON),
        Skipped("GET", "/x", "excluded by --exclude '/x'"),
    ]
    groups = skip_groups(skipped)
    assert [(g.reason, g.count, g.example.path) for g in groups] == [
        ("not a safe method", 2, "/a"),
        ("preflight answered 401", 1, "/p"),
        ("excluded by --exclude '/x'", 1, "/x"),
    ]
    assert groups[0].detail == "name it with -e or pass --unsafe"


def test_the_limiting_line_is_the_one_the_class_points_at() -> None:
    ep = replace(_ep("/inventory", EndpointClass.LOOP_BLOCKING), profile=BLOCKING_LINE)
    spot = limiting_spot(ep)
    assert spot is not None
    assert (spot.file, spot.line) == ("shop/stock.py", 43)
    # A threadpool-bound route is limited in the pool threads: an event-loop line is not its limit.
    assert limiting_spot(replace(ep, verdict=replace(ep.verdict, cls=EndpointClass.THREADPOOL_BOUND))) is None  # type: ignore[type-var]


# ---------------------------------------------------------------------------------------
# Issue 23, item 6: what is normal is not news


def _level(
    c: int, in_flight: int, oldest: float | None, p50: float = 100.0, p99: float | None = None
) -> Level:
    return Level(
        concurrency=c, requests=200, errors=0, errors_by_kind={}, duration_s=1.0, throughput_rps=c * 10.0,
        latency_ms=Latency(p50, p50 * 1.1, p99, p50 * 1.3, p50), server_cpu_cores=0.1, server_rss_bytes=None,
        client_cpu_cores=0.01, client_saturated=False, littles_law_ratio=1.0, p99_supported=p99 is not None,
        in_flight_at_end=in_flight, oldest_in_flight_ms=oldest,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("level", "news"),
    [
        pytest.param(_level(8, 8, 95.0), False, id="closed-loop-normal"),
        pytest.param(_level(128, 128, 423.6, p50=311.0), False, id="as-old-as-the-slowest-answer"),
        pytest.param(_level(64, 64, 120.0, p99=110.0), False, id="within-a-few-p99"),
        pytest.param(_level(8, 8, 5000.0), True, id="stuck-for-seconds"),
        pytest.param(_level(64, 64, 900.0, p99=110.0), True, id="beyond-4x-p99"),
    ],
)
def test_requests_in_flight_at_the_end_are_news_only_when_stuck(level: Level, news: bool) -> None:
    notes = level_notes(level)
    assert bool(notes) is news, notes
    if news:
        assert "stuck" in notes[0]


def test_stuck_rule_has_a_floor_for_fast_routes() -> None:
    assert not stuck_in_flight(40.0, 2.0, 3.0)  # 20x a 2 ms p99, but 40 ms is a scheduler hiccup
    assert stuck_in_flight(150.0, 2.0, 3.0)
    assert stuck_in_flight(10.0, None, None)  # nothing completed to compare: always news


def closed_loop(ep: Endpoint) -> Endpoint:
    """`ep` as a closed loop ends a level: c requests in flight, the oldest about one p50 old."""
    levels = [
        replace(
            lv,
            in_flight_at_end=lv.concurrency,
            oldest_in_flight_ms=lv.latency_ms.p50 if lv.latency_ms else None,
        )
        for lv in ep.levels
    ]
    return replace(ep, levels=tuple(levels))


def test_the_panel_says_no_in_flight_line_for_a_normal_ladder() -> None:
    for ep in map(closed_loop, sample().endpoints):
        for full in (True, False):
            buffer = io.StringIO()
            Console(file=buffer, width=120, color_system=None).print(endpoint_panel(ep, full))
            assert "were still in flight" not in buffer.getvalue()
            assert "still in flight at the end" not in buffer.getvalue()


def test_a_known_worker_count_is_not_called_unknown() -> None:
    ep = sample().endpoints[0]  # the probe found uvicorn's one worker: evidence.workers == 1
    assert ep.verdict is not None
    assert ep.verdict.evidence.workers == 1
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(endpoint_panel(ep, full=True))
    row = next(ln for ln in buffer.getvalue().splitlines() if "worker processes" in ln)
    assert "unknown" not in row
    assert "assumed" not in row
    assert " 1 " in row
    unseen = replace(ep, verdict=replace(ep.verdict, evidence=replace(ep.verdict.evidence, workers=None)))
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None).print(endpoint_panel(unseen, full=True))
    assert "not seen (a remote or unreadable server), 1 assumed" in buffer.getvalue()


COMMANDS: Final = (
    (), ("host",), ("probe",), ("recommend",), ("demo",), ("tune",), ("verify",), ("report",),
    ("export",), ("export", "locust"), ("export", "k6"), ("import",), ("import", "locust"), ("import", "k6"),
)  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_is_shown_as_a_plain_flag(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    row = next(ln for ln in result.output.splitlines() if "--help" in ln)
    assert "-h" in row
    assert "<bool>" not in result.output, row


# ---------------------------------------------------------------------------------------
# verify and tune scale too


def test_verify_names_a_few_endpoints_and_counts_the_rest() -> None:
    run = Run("recommended", 2, 1000, 0, 200.0, 20.0, 40.0, 90.0, 1.9, 0.05, (200.0,))
    endpoints = tuple(f"GET /api/v1/r{i}" for i in range(ROUTES))
    result = VerifyResult((run,), None, endpoints, 64, 3.0, 1, False)

    def shown(verbose: bool) -> str:
        buffer = io.StringIO()
        print_verify(Console(file=buffer, width=120, color_system=None), result, verbose)
        return buffer.getvalue()

    assert "60 endpoints (GET /api/v1/r0" in shown(False)
    assert "GET /api/v1/r59" not in shown(False)
    assert "GET /api/v1/r59" in shown(True)
    assert len(shown(False).splitlines()) < 15


# ---------------------------------------------------------------------------------------
# Live: a real app under uvicorn, the CLI as a user runs it


@pytest.mark.slow
def test_live_probe_default_screen_fits_and_verbose_shows_every_panel(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ["--levels", "1,2,4", "--duration", "0.2", "--no-profile", "--out", str(out)]
    with serve("tests.apps.kinds_app:app") as server:
        result = CliRunner().invoke(app, ["probe", server.url, *args], env={"COLUMNS": "120"})
        verbose = CliRunner().invoke(app, ["probe", server.url, *args, "--verbose"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    measured = [f"{e['method']} {e['path']}" for e in report["endpoints"]]
    assert len(measured) == 4
    lines = result.stdout.splitlines() + result.stderr.splitlines()
    assert len(lines) <= budget(len(measured)), "\n".join(lines)
    for route in measured:
        assert any(route in ln and "%" in ln for ln in result.stdout.splitlines()), route
    assert "still in flight" not in result.stdout + result.stderr
    assert verbose.exit_code == 0, verbose.stderr
    assert verbose.stdout.count("levels used as evidence") == len(measured)


@pytest.mark.slow
def test_live_sixty_route_app_fits_and_groups_its_skips(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = [
        "--levels",
        "1,2",
        "--duration",
        "0.05",
        "--no-profile",
        "--max-seconds",
        "300",
        "--out",
        str(out),
    ]
    with serve("tests.apps.wide_app:app") as server:
        result = CliRunner().invoke(app, ["probe", server.url, *args], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    measured = [f"{e['method']} {e['path']}" for e in report["endpoints"]]
    assert len(measured) == ROUTES
    lines = result.stdout.splitlines() + result.stderr.splitlines()
    assert len(lines) <= budget(ROUTES), "\n".join(lines)
    for route in measured:
        assert any(route in ln and "%" in ln for ln in result.stdout.splitlines()), route
    assert "skipped 136: not a safe method, e.g. POST /api/v1/things0" in result.stdout
    assert "skipped 5: preflight answered 401" in result.stdout
    assert "skipped 6: preflight answered 404" in result.stdout


def test_verify_groups_the_routes_it_leaves_out() -> None:
    notes = [f"GET /r{i}: left out, inconclusive in the probe" for i in range(21)]
    notes += ["POST /c: left out, its --body is not kept in the report"]
    notes += ["the probe sent header(s) x: pass -H"]
    assert note_lines(notes) == [
        "21 routes left out, inconclusive in the probe, e.g. GET /r0 (--verbose names each)",
        "POST /c: left out, its --body is not kept in the report",
        "the probe sent header(s) x: pass -H",
    ]
    assert note_lines(notes, every=True) == notes
