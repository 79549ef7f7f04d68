"""The overload step's judgement, plan and files, on reports measured on the collapse test apps.

tests/data/overload/*_report.json were written by `fastapi-tune tune` on tests/apps/collapse_async_dep_app.py
(the loop waits in a pool checkout), tests/apps/collapse_plain_app.py (fastapi#3205: 40 threads wait in
it) and tests/apps/graceful_lock_app.py (holds), verdicts removed: judging them is what is tested.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.rules import OVERLOAD_COLLAPSES, OVERLOAD_HOLDS, OverloadBehaviour, overload_behaviour
from fastapi_tune.judge.classify import classify_report
from fastapi_tune.judge.overload import name_cause
from fastapi_tune.measure.held import held_connections
from fastapi_tune.measure.overload import mix_plateau, plateau
from fastapi_tune.measure.overload_report import OverloadTrial
from fastapi_tune.measure.report import ProbeReport, report_from_json, report_to_json
from fastapi_tune.measure.stack_attribution import (
    Hotspot,
    LoopShares,
    RouteProfile,
    ThreadKind,
    ThreadpoolLoad,
)
from fastapi_tune.plan.admission import CAP_MARGIN, decide_admission
from fastapi_tune.plan.model import Choices
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.render.admission import admission_files, render_admission_module
from fastapi_tune.render.conf import render_gunicorn_conf
from fastapi_tune.render.html import render_html
from fastapi_tune.render.overload import overload_panel
from fastapi_tune.verify.overload import config_cap
from tests.servers import REPO
from tests.test_classify import level
from tests.test_plan import make_host

DATA = Path(__file__).resolve().parent / "data" / "overload"


def measured(name: str) -> ProbeReport:
    return report_from_json(json.loads((DATA / f"{name}_report.json").read_text()), name)


def judged(name: str) -> ProbeReport:
    return classify_report(measured(name))


# ---------------------------------------------------------------------------------------
# The rule


@pytest.mark.parametrize(
    ("goodput", "plateau_rps", "completed", "wedged", "expected"),
    [
        pytest.param(90.0, 100.0, 500, False, OverloadBehaviour.HOLDS, id="90%-holds"),
        pytest.param(100 * OVERLOAD_HOLDS, 100.0, 500, None, OverloadBehaviour.HOLDS, id="at-the-bar-holds"),
        pytest.param(50.0, 100.0, 500, False, OverloadBehaviour.DEGRADES, id="50%-degrades"),
        pytest.param(
            100 * OVERLOAD_COLLAPSES, 100.0, 90, False, OverloadBehaviour.DEGRADES, id="30%-degrades"
        ),
        pytest.param(29.0, 100.0, 90, False, OverloadBehaviour.COLLAPSES, id="29%-collapses"),
        pytest.param(0.0, 100.0, 0, None, OverloadBehaviour.COLLAPSES, id="nothing-completed"),
        pytest.param(95.0, 100.0, 500, True, OverloadBehaviour.WEDGED, id="no-answer-after-wedged"),
        pytest.param(5.0, None, 3, False, OverloadBehaviour.HOLDS, id="no-plateau-answered"),
    ],
)
def test_overload_behaviour(
    goodput: float,
    plateau_rps: float | None,
    completed: int,
    wedged: bool | None,
    expected: OverloadBehaviour,
) -> None:
    assert overload_behaviour(goodput, plateau_rps, completed, wedged) is expected


def test_the_plateau_is_not_one_lucky_level() -> None:
    levels = [
        level(n, rps, 5.0, 0.9) for n, rps in ((1, 136.0), (2, 588.0), (4, 771.0), (8, 967.0), (16, 412.0))
    ]
    assert plateau(levels) == (771.0, 4)
    # Every connection sends each route in turn: the slow route sets the pace.
    assert mix_plateau([100.0, 100.0]) == pytest.approx(100.0)
    assert mix_plateau([1000.0, 10.0]) == pytest.approx(2 / (1 / 1000 + 1 / 10))
    assert mix_plateau([]) is None


# ---------------------------------------------------------------------------------------
# Judging the measured collapses


def test_the_async_dependency_collapse_is_named() -> None:
    run = judged("async_dep").overload
    assert run is not None
    assert run.verdict is not None
    v = run.verdict
    assert v.behaviour is OverloadBehaviour.WEDGED
    assert v.collapse_per_worker == 19
    assert v.held_per_worker == 16
    assert v.cause is not None
    assert "event loop waits for a database connection (QueuePool._do_get)" in v.cause
    assert "current_user (tests/apps/collapse_async_dep_app.py:66)" in v.cause
    assert "15 connections were open to fastapi-tune-collapse-async-dep.sqlite" in v.cause
    assert any("declare `current_user` with `def`" in f for f in v.fixes)


def test_the_3205_collapse_is_named() -> None:
    run = judged("plain").overload
    assert run is not None
    assert run.verdict is not None
    v = run.verdict
    assert v.behaviour is OverloadBehaviour.WEDGED
    assert v.collapse_per_worker == 54
    assert v.held_per_worker == 45
    assert v.cause is not None
    assert "40 of AnyIO's 40 threads per worker wait for a database connection" in v.cause
    assert "list_items (tests/apps/collapse_plain_app.py:65)" in v.cause
    assert "fastapi/fastapi#3205" in v.cause
    assert "10 connections were open" in v.cause
    assert any("total_tokens = 10" in f for f in v.fixes)
    route = run.route("GET", "/items")
    assert route is not None
    assert route.verdict is not None
    assert route.verdict.collapse_per_worker == 54


def test_a_graceful_app_holds_and_is_not_searched() -> None:
    run = judged("graceful").overload
    assert run is not None
    assert run.verdict is not None
    assert run.verdict.behaviour is OverloadBehaviour.HOLDS
    assert run.routes == ()
    assert run.verdict.cause is None
    assert "queue adds latency, not failures" in run.verdict.summary


def _profile(hotspots: tuple[Hotspot, ...], loop_app: float, pool_wait: float) -> RouteProfile:
    return RouteProfile(
        workers=1,
        seconds=1.0,
        loop=LoopShares(samples=50, idle=1 - loop_app, app=loop_app, app_blocked=loop_app, framework=0.0),
        threadpool=ThreadpoolLoad(busy_threads=pool_wait, pool_wait_threads=pool_wait, threads_seen=40),
        hotspots=hotspots,
    )


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        pytest.param(
            _profile(
                (Hotspot(ThreadKind.EVENT_LOOP, "app.py", 9, "cache_get", 1.0, "threading.Lock.acquire"),),
                1,
                0,
            ),
            "the event loop wait on Lock.acquire in cache_get (app.py:9)",
            id="loop-on-a-lock",
        ),
        pytest.param(
            _profile((Hotspot(ThreadKind.THREADPOOL, "app.py", 5, "work", 1.0, "queue.Queue.get"),), 0, 2),
            "the pool threads wait on Queue.get in work (app.py:5)",
            id="threads-on-a-queue",
        ),
        pytest.param(_profile((), 0.0, 0.0), None, id="no-known-wait"),
    ],
)
def test_other_waits_are_named_or_left_alone(profile: RouteProfile, expected: str | None) -> None:
    cause, fixes = name_cause(profile, None, 64)
    if expected is None:
        assert (cause, fixes) == (None, ())
    else:
        assert cause is not None
        assert cause.startswith(expected)
        assert fixes


# ---------------------------------------------------------------------------------------
# The plan and its files


def _plan(name: str) -> Any:
    return make_plan(make_host(2), judged(name), load_profile("vm"), Choices(app="main:app"))


def test_a_collapse_is_capped_below_n_with_every_value_explained() -> None:
    report = judged("plain")
    cap = decide_admission(report)
    assert cap is not None
    # Below N with the margin, and no more than twice the knee (the app gains nothing past it).
    assert 1 <= cap.limit <= CAP_MARGIN * 45 < 54
    assert "fall over at 54 requests in flight per worker and held at 45" in cap.why_limit
    assert f"{CAP_MARGIN:g} x 45" in cap.why_limit
    assert cap.wait_s > 0
    assert "503" in cap.why_wait


def test_no_cap_where_the_app_holds_or_only_degrades() -> None:
    assert decide_admission(judged("graceful")) is None
    assert _plan("graceful").admission is None
    report = judged("plain")
    assert report.overload is not None
    assert report.overload.verdict is not None
    degrades = replace(report.overload.verdict, behaviour=OverloadBehaviour.DEGRADES)
    assert decide_admission(replace(report, overload=replace(report.overload, verdict=degrades))) is None
    assert decide_admission(replace(report, overload=None)) is None


def test_the_config_points_at_the_module_beside_it(tmp_path: Path) -> None:
    plan = _plan("async_dep")
    cap = plan.admission
    assert cap is not None
    conf = render_gunicorn_conf(plan)
    assert "def post_worker_init(worker):" in conf
    assert "from asgi_admission import wrap" in conf
    compile(conf, "gunicorn.conf.py", "exec")
    ((path, module),) = admission_files(plan, tmp_path / "gunicorn.conf.py")
    assert path == tmp_path / "asgi_admission.py"
    assert f"LIMIT = {cap.limit}\n" in module
    assert 'APP = "main:app"' in module
    assert "declare `current_user` with `def`" in module  # the code fix travels with the cap
    (tmp_path / "gunicorn.conf.py").write_text(conf)
    path.write_text(module)
    assert config_cap(tmp_path / "gunicorn.conf.py") == cap.limit
    # The hook wraps each worker's app: uvicorn-worker's `wsgi`, gunicorn's native worker's `asgi`.
    namespace: dict[str, Any] = {"__file__": str(tmp_path / "gunicorn.conf.py")}
    exec(compile(conf, "gunicorn.conf.py", "exec"), namespace)
    uvicorn_worker = types.SimpleNamespace(wsgi=object())
    native = types.SimpleNamespace(asgi=object())
    namespace["post_worker_init"](uvicorn_worker)
    namespace["post_worker_init"](native)
    assert type(uvicorn_worker.wsgi).__name__ == "Admission"
    assert type(native.asgi).__name__ == "Admission"
    assert uvicorn_worker.wsgi.limit == cap.limit


def test_plans_without_a_cap_keep_their_bytes() -> None:
    conf = render_gunicorn_conf(_plan("graceful"))
    assert "post_worker_init" not in conf
    assert "asgi_admission" not in conf


def _admission(limit: int, wait_s: float) -> Any:
    plan = _plan("async_dep")
    assert plan.admission is not None
    namespace: dict[str, Any] = {"__name__": "asgi_admission_test"}
    exec(render_admission_module(plan, plan.admission), namespace)
    return namespace["Admission"], limit, wait_s


def test_the_module_queues_then_answers_503() -> None:
    admission, limit, wait_s = _admission(2, 0.3)
    inside = 0
    most = 0
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def main() -> list[int]:
        wrapped = admission(app, limit, wait_s)
        statuses: list[int] = []

        async def one() -> None:
            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await wrapped({"type": "http"}, None, send)

        tasks = [asyncio.create_task(one()) for _ in range(5)]
        await asyncio.sleep(wait_s * 2)  # the three beyond the cap wait, then get their 503s
        release.set()
        await asyncio.gather(*tasks)
        # Slots are handed on in order: a new request after the burst gets in at once.
        await asyncio.wait_for(one(), 1)
        return statuses

    statuses = asyncio.run(main())
    assert most == limit
    assert sorted(statuses) == [200, 200, 200, 503, 503, 503]


def test_a_waiter_that_goes_away_gives_its_slot_back() -> None:
    admission, _, _ = _admission(1, 5.0)
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await done.wait()

    async def main() -> int:
        wrapped = admission(app, 1, 5.0)
        first = asyncio.create_task(wrapped({"type": "http"}, None, None))
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(wrapped({"type": "http"}, None, None))
        await asyncio.sleep(0.01)
        waiter.cancel()  # the client went away while queued
        done.set()
        await first
        await asyncio.gather(waiter, return_exceptions=True)
        return int(wrapped.active)

    assert asyncio.run(main()) == 0


# ---------------------------------------------------------------------------------------
# Reading and showing


def test_the_report_round_trips_and_old_reports_still_load() -> None:
    report = judged("plain")
    again = report_from_json(json.loads(json.dumps(report_to_json(report))), "again")
    assert again.overload == report.overload
    raw = report_to_json(report)
    del raw["overload"]
    assert report_from_json(raw, "old").overload is None
    assert "overload" not in report_to_json(replace(report, overload=None))


def test_terminal_and_html_show_the_cause() -> None:
    report = judged("async_dep")
    assert report.overload is not None
    console = Console(width=140, record=True)
    console.print(overload_panel(report.overload))
    text = console.export_text()
    assert "behaviour: wedged" in text
    assert "QueuePool._do_get" in text
    assert "fix: declare" in text
    page = render_html(report_to_json(report))
    assert "Overload: 64 in flight per worker" in page
    assert "current_user" in page


def test_held_connections_counts_database_files(tmp_path: Path) -> None:
    conns = [sqlite3.connect(tmp_path / "app.sqlite") for _ in range(3)]
    try:
        held = held_connections([os.getpid()], server_port=0)
    finally:
        for c in conns:
            c.close()
    assert held is not None
    assert (held.count, held.target) == (3, "app.sqlite")


def test_a_trial_is_wedged_only_when_asked() -> None:
    t = OverloadTrial(64, 64.0, 1.0, 0.5, 0, 0, 0.0)
    assert t.wedged is None
    assert replace(t, wedge_checked=True).wedged is True
    assert replace(t, wedge_checked=True, answer_after_s=0.01).wedged is False


def test_recommend_writes_the_module_beside_a_config_gunicorn_accepts(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    app_name = "tests.apps.collapse_async_dep_app:app"
    saved = tmp_path / "report.json"  # as probe saves it: judged
    saved.write_text(json.dumps(report_to_json(judged("async_dep"))))
    r = CliRunner().invoke(
        app,
        [
            "recommend",
            "--probe",
            str(saved),
            "--app",
            app_name,
            "--yes",
            "-o",
            str(conf),
        ],
    )
    assert r.exit_code == 0, r.stderr
    module = tmp_path / "asgi_admission.py"
    assert module.is_file()
    assert "Admission cap:" in r.stdout
    assert "asgi_admission:app" in r.stdout  # uvicorn and `fastapi run` serve the wrapped app
    check = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", str(conf)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "DB_FILE": str(tmp_path / "app.sqlite")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
