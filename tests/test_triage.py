"""The triage's pieces without a server: its levels, the budget's split, the drain, the deepening order,
and how the judge reads two or three short levels with the stacks beside them."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fastapi_tune.core.errors import UsageError
from fastapi_tune.discover.openapi import Operation, explicit_operations, same_route_once
from fastapi_tune.judge.classify import classify
from fastapi_tune.judge.priority import deepen_order
from fastapi_tune.measure.drain import DRAIN_MAX_S, backlog_s, loops_idle, wait_drained
from fastapi_tune.measure.probe_options import BudgetPlan, DeepenPick, ProbeOptions, check_options
from fastapi_tune.measure.report import (
    Endpoint,
    EndpointClass,
    EvidenceDepth,
    ServerInfo,
    StopReason,
    endpoint_to_json,
)
from fastapi_tune.measure.schedule import (
    DEFAULT_BUDGET_S,
    LADDER_MIN_S,
    ROUTE_S,
    after_triage,
    budget_s,
    deepenable,
    initial_plan,
    ladder_deadline,
    picks_for,
)
from fastapi_tune.measure.stack_attribution import (
    Hotspot,
    LoopShares,
    RouteProfile,
    ThreadKind,
    ThreadpoolLoad,
)
from fastapi_tune.measure.triage import TRIAGE_MIN_S, TriageClock, scaled, triage_concurrency
from fastapi_tune.render.probe import plan_line
from tests.test_classify import level

# ---------------------------------------------------------------------------------------
# The triage's levels


@pytest.mark.parametrize(
    ("workers", "cap", "expected"),
    [
        pytest.param(1, None, (4, 64), id="one-worker"),
        pytest.param(2, None, (8, 128), id="two-workers"),
        pytest.param(None, None, (4, 64), id="unknown-as-one"),
        pytest.param(2, 32, (8, 32), id="max-concurrency-caps"),
    ],
)
def test_triage_levels_bracket_the_workers_and_the_thread_limiter(
    workers: int | None, cap: int | None, expected: tuple[int, int]
) -> None:
    spread, knee = triage_concurrency(workers, cap)
    assert (spread, knee) == expected


def test_level_three_only_after_a_step_that_scaled() -> None:
    one = level(1, 50.0, 20.0, 0.05)
    assert scaled(one, level(4, 190.0, 21.0, 0.1))  # ~linear: an async route or a `def` one
    assert not scaled(one, level(4, 52.0, 77.0, 0.9))  # one request at a time: serialised
    assert not scaled(replace(one, throughput_rps=0.0), level(4, 190.0, 21.0, 0.1))


def test_later_routes_keep_what_the_first_two_levels_cost_on_this_host() -> None:
    clock = TriageClock()
    assert clock.reserve_s() == TRIAGE_MIN_S
    clock.costs += [0.3, 0.35]  # a quiet host: the floor holds
    assert clock.reserve_s() == TRIAGE_MIN_S
    clock.costs += [1.2, 1.1, 1.3]  # a busy one: what it costs there
    assert clock.reserve_s() == pytest.approx(1.1)


# ---------------------------------------------------------------------------------------
# The budget


def test_the_default_budget_grows_with_the_route_count_and_max_seconds_wins() -> None:
    assert budget_s(10, None) == (DEFAULT_BUDGET_S, False)
    covered = int(DEFAULT_BUDGET_S / ROUTE_S)
    assert budget_s(covered, None) == (DEFAULT_BUDGET_S, False)
    grown, was_grown = budget_s(150, None)
    assert was_grown
    assert grown == pytest.approx(150 * ROUTE_S)
    assert budget_s(150, 30.0) == (30.0, False)


def test_the_plan_says_what_fits_and_the_line_says_it() -> None:
    plan = initial_plan(40, 60.0, False, spent_s=1.0)
    assert plan.triage_s > 0
    assert plan.estimate_s <= plan.budget_s
    assert 0 <= plan.ladders < 40
    line = plan_line(plan)
    assert line.startswith("40 route(s): a triage of each first")
    assert f"about {plan.ladders} of them" in line
    picks = [DeepenPick(3, "uncertain"), DeepenPick(1, "uncertain"), DeepenPick(7, "serialised")]
    later = after_triage(plan, picks, took_s=33.0, now_left_s=26.0)
    assert later.picks == tuple(picks[: later.ladders])
    assert "Triage done in 33 s" in plan_line(later)
    assert "2 uncertain" in plan_line(later)
    none_left = after_triage(plan, picks, took_s=58.0, now_left_s=1.0)
    assert none_left.picks == ()
    assert "every verdict rests on the triage" in plan_line(none_left)


def test_a_grown_budget_says_so() -> None:
    plan = initial_plan(150, 150 * ROUTE_S, True, spent_s=1.0)
    assert "grown with the route count" in plan_line(plan)


def test_each_ladder_gets_its_share_or_none() -> None:
    now = 100.0
    assert ladder_deadline(now, now + LADDER_MIN_S / 2, 3) is None
    first = ladder_deadline(now, now + 60.0, 4)
    assert first == pytest.approx(now + 15.0)  # 60 s for 4 ladders
    crowded = ladder_deadline(now, now + 20.0, 60)
    assert crowded is not None
    assert crowded - now >= LADDER_MIN_S  # a ladder never starts on a sliver


# ---------------------------------------------------------------------------------------
# Draining a backlog


def test_backlog_is_littles_law() -> None:
    lv = replace(level(64, 32.0, 2000.0, 0.03), in_flight_at_end=64)
    assert backlog_s(lv) == pytest.approx(2.0)
    assert backlog_s(level(64, 32.0, 2000.0, 0.03)) == 0.0
    assert backlog_s(None) == 0.0


def _fake_proc(tmp_path: Path, wchans: dict[int, str]) -> Path:
    for pid, wchan in wchans.items():
        (tmp_path / str(pid)).mkdir(parents=True, exist_ok=True)
        (tmp_path / str(pid) / "wchan").write_text(wchan)
    return tmp_path


def test_loops_idle_reads_each_workers_wait_channel(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {11: "do_epoll_wait", 12: "do_epoll_wait"})
    assert loops_idle([11, 12], proc) is True
    _fake_proc(tmp_path, {12: "hrtimer_nanosleep"})  # time.sleep inside `async def`: still working
    assert loops_idle([11, 12], proc) is False
    _fake_proc(tmp_path, {12: "0"})  # running
    assert loops_idle([11, 12], proc) is False
    assert loops_idle([11, 99], proc) is None  # unreadable: no answer rather than a guess


def test_the_drain_ends_when_the_loops_idle_and_is_bounded_when_they_do_not(tmp_path: Path) -> None:
    backlog = replace(level(64, 32.0, 2000.0, 0.03), in_flight_at_end=64)  # ~2 s by Little's law
    stop = threading.Event()
    idle = _fake_proc(tmp_path / "idle", {11: "do_epoll_wait"})
    assert wait_drained([11], backlog, stop, time.monotonic() + 60, idle) < 0.5
    busy = _fake_proc(tmp_path / "busy", {11: "hrtimer_nanosleep"})
    waited = wait_drained([11], backlog, stop, time.monotonic() + 0.3, busy)
    assert 0.25 <= waited < 1.0  # the probe's deadline bounds it
    assert DRAIN_MAX_S < 10


# ---------------------------------------------------------------------------------------
# One route per template


def test_a_template_is_probed_once_whatever_its_ids() -> None:
    doc = {
        "openapi": "3.1.0",
        "paths": {
            "/items/{item_id}": {"get": {"parameters": [{"name": "item_id", "in": "path", "required": True}]}}
        },
    }
    ops, skipped = explicit_operations([("GET", "/items/1"), ("GET", "/items/2")], doc, "http://h")
    assert skipped == []
    assert [(o.path, o.url) for o in ops] == [
        ("/items/{item_id}", "http://h/items/1"),
        ("/items/{item_id}", "http://h/items/2"),
    ]
    once, repeated = same_route_once([*ops, Operation("HEAD", "/items/{item_id}", "http://h/items/1")])
    assert [(o.method, o.url) for o in once] == [("GET", "http://h/items/1"), ("HEAD", "http://h/items/1")]
    assert [(s.path, s.reason.split(",")[0]) for s in repeated] == [
        ("/items/2", "the same route as GET /items/{item_id}")
    ]


# ---------------------------------------------------------------------------------------
# The judge on triage evidence


def _profile(
    idle: float = 0.0,
    app: float = 0.0,
    blocked: float = 0.0,
    framework: float = 0.0,
    threads: float = 0.0,
    call: str | None = None,
) -> RouteProfile:
    spots = (Hotspot(ThreadKind.EVENT_LOOP, "app.py", 12, "route", app, call),) if app else ()
    if threads:
        spots = (Hotspot(ThreadKind.THREADPOOL, "app.py", 20, "route", 1.0, call),)
    return RouteProfile(
        workers=1,
        seconds=0.3,
        loop=LoopShares(samples=30, idle=idle, app=app, app_blocked=blocked, framework=framework),
        threadpool=ThreadpoolLoad(busy_threads=threads, pool_wait_threads=0.0, threads_seen=int(threads)),
        hotspots=spots,
    )


SERIAL_TRIAGE = (level(1, 33.0, 30.0, 0.03), level(4, 33.0, 120.0, 0.03))
BLOCKED = _profile(app=0.98, blocked=0.96, call="time.sleep")


def test_a_clear_triage_reads_high_and_one_without_witnesses_reads_nothing() -> None:
    v = classify(SERIAL_TRIAGE, 1, True, BLOCKED)
    assert v.cls is EndpointClass.LOOP_BLOCKING, v.summary
    assert v.confidence >= 0.9, v.summary
    assert "time.sleep" in v.summary
    computing = classify(
        (level(1, 50.0, 20.0, 0.98), level(4, 50.0, 80.0, 0.99)), 1, True, _profile(app=0.97)
    )
    assert computing.cls is EndpointClass.CPU_BOUND, computing.summary
    assert computing.confidence >= 0.9
    # Two levels with neither the server's CPU nor its stacks: not a verdict.
    blind = classify(tuple(replace(lv, server_cpu_cores=None) for lv in SERIAL_TRIAGE), 1, False)
    assert blind.cls is EndpointClass.INCONCLUSIVE
    assert classify(SERIAL_TRIAGE[:1], 1, True, BLOCKED).cls is EndpointClass.INCONCLUSIVE


def test_stacks_that_contradict_the_cpu_lower_the_confidence() -> None:
    agree = classify(SERIAL_TRIAGE, 1, True, BLOCKED)
    # The same curve and CPU, but the loop seen idle: something else serialises it.
    idle = classify(SERIAL_TRIAGE, 1, True, _profile(idle=0.9))
    assert idle.confidence < agree.confidence - 0.3


def test_a_starved_host_blurs_the_cpu_but_a_blocking_call_still_tells() -> None:
    # Demand inflated by waiting for a CPU (0.8 per worker), the loop blocked in time.sleep.
    starved = (level(1, 40.0, 25.0, 0.6), level(8, 70.0, 110.0, 0.8))
    v = classify(starved, 2, True, _profile(app=0.92, blocked=0.36, call="time.sleep"))
    assert v.cls is EndpointClass.LOOP_BLOCKING, v.summary


def test_a_def_route_cut_before_the_thread_limiter_is_threadpool_bound() -> None:
    levels = (level(1, 7.0, 140.0, 0.015), level(4, 27.0, 145.0, 0.03))
    v = classify(levels, 1, True, _profile(idle=0.98, threads=3.9, call="time.sleep"))
    assert v.cls is EndpointClass.THREADPOOL_BOUND, v.summary
    assert "will plateau" in v.summary


def test_a_knee_near_the_limiter_with_no_pool_thread_busy_is_an_async_route() -> None:
    # An async 5 ms route whose one worker runs out of CPU near c=32 looks like the thread limiter.
    levels = (level(1, 190.0, 5.2, 0.05), level(4, 760.0, 5.3, 0.2), level(64, 6400.0, 10.0, 0.95))
    v = classify(levels, 1, True, _profile(idle=0.85, framework=0.15))
    assert v.cls is EndpointClass.IO_BOUND, v.summary


def test_a_request_that_is_all_cpu_at_c1_is_cpu_bound_however_it_scaled() -> None:
    # A trivial route: c=1 waits on the round trip, so c=4 "scales", but the worker computed throughout.
    levels = (level(1, 1000.0, 1.0, 0.6), level(4, 3900.0, 1.0, 0.97), level(64, 5100.0, 12.0, 0.98))
    v = classify(levels, 1, True, _profile(idle=0.4, framework=0.6))
    assert v.cls is EndpointClass.CPU_BOUND, v.summary
    assert "at c=1 a worker wanted a CPU" in v.summary


# ---------------------------------------------------------------------------------------
# The deepening order


def _triaged(path: str, levels: tuple[object, ...], profile: RouteProfile | None) -> Endpoint:
    return Endpoint(
        "GET",
        path,
        "http://h" + path,
        levels,  # type: ignore[arg-type]
        StopReason.SATURATED,
        profile=profile,
        evidence_depth=EvidenceDepth.TRIAGE,
    )


def test_uncertain_first_then_serialised_then_the_rest_and_weight_moves_a_route_up() -> None:
    sure_io = _triaged(
        "/io",
        (level(1, 25.0, 40.0, 0.02), level(4, 100.0, 40.0, 0.05), level(64, 1600.0, 40.0, 0.3)),
        _profile(idle=0.95),
    )
    serial = _triaged("/loop", SERIAL_TRIAGE, BLOCKED)
    unsure = _triaged("/odd", SERIAL_TRIAGE, _profile(idle=0.9))  # curve and stacks disagree
    server = ServerInfo(local=True, pid=1, workers=1)
    order = deepen_order([sure_io, serial, unsure], server, {})
    assert [(p.index, p.why) for p in order] == [(2, "uncertain"), (1, "serialised"), (0, "slowest")]
    heavy = deepen_order([sure_io, serial, unsure], server, {"GET /io": 50.0, "GET /loop": 1.0})
    assert heavy[0].index == 0


def test_failed_triages_are_not_climbed_again() -> None:
    ok = _triaged("/a", SERIAL_TRIAGE, BLOCKED)
    failed = replace(ok, path="/b", stop_reason=StopReason.ERRORS)
    unmeasured = replace(ok, path="/c", levels=())
    assert deepenable([ok, failed, unmeasured]) == [0]
    picks = picks_for(None, [ok, failed, unmeasured], ServerInfo(local=False), {})
    assert [p.index for p in picks] == [0]


def test_evidence_depth_is_written_only_when_known() -> None:
    ep = _triaged("/a", SERIAL_TRIAGE, None)
    assert endpoint_to_json(ep)["evidence_depth"] == "triage"
    assert "evidence_depth" not in endpoint_to_json(replace(ep, evidence_depth=None))


def test_budget_plan_estimate_never_exceeds_the_budget() -> None:
    plan = BudgetPlan(routes=5, budget_s=10.0, grown=False, triage_s=8.0, ladder_s=5.0, ladders=3)
    assert plan.estimate_s == 10.0


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0])
def test_traffic_weights_are_checked_where_they_enter(weight: float) -> None:
    with pytest.raises(UsageError, match="traffic weight of GET /a"):
        check_options(ProbeOptions(url="http://127.0.0.1:1", route_weights={"GET /a": weight}))
