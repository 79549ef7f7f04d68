"""When every route fails (issue 23, item 2): a 500, a hang past --timeout, a refusal at preflight, a
document whose schemas cannot be filled. The report is written whatever happened, each route's reason
is printed, and the exit code says which: NOTHING_MEASURED, BAD_INPUT naming the field, or USAGE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.discover.openapi import SkipCause, Skipped
from fastapi_tune.measure.report import (
    Endpoint,
    ProbeReport,
    ServerInfo,
    StopReason,
    report_from_json,
    report_to_json,
)
from fastapi_tune.measure.unmeasured import nothing_measured
from tests.hostile_servers import hostile_server, json_route
from tests.servers import REPO, Server, serve

QUICK = ["--levels", "1,2", "--duration", "0.15", "--no-profile"]


@pytest.fixture(scope="module")
def failing() -> Iterator[Server]:
    with serve("tests.apps.failing_app:app") as s:
        yield s


def probe(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["probe", *args])
    return result.exit_code, result.stdout, result.stderr


def skipped_of(out: Path) -> dict[str, dict[str, Any]]:
    return {s["path"]: s for s in json.loads(out.read_text())["skipped"]}


def test_a_route_that_answers_500_is_reported_not_a_usage_error(failing: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, stdout, stderr = probe(failing.url, "-e", "GET /boom", *QUICK, "--out", str(out))
    assert code == ExitCode.NOTHING_MEASURED, stderr
    boom = skipped_of(out)["/boom"]
    assert (boom["cause"], boom["status"]) == ("preflight", 500)
    assert boom["elapsed_ms"] is not None
    assert "database is down" in boom["reason"]
    assert "GET /boom" in stdout
    assert "answered 500" in stdout
    assert "nothing measured" in stderr
    assert str(out) in stderr


def test_a_route_that_hangs_is_a_timeout_with_its_time(failing: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, stdout, stderr = probe(failing.url, "-e", "GET /hang", "--timeout", "1", *QUICK, "--out", str(out))
    assert code == ExitCode.NOTHING_MEASURED, stderr
    hang = skipped_of(out)["/hang"]
    assert (hang["cause"], hang["status"]) == ("preflight", None)
    assert hang["elapsed_ms"] >= 900
    assert "timed out" in hang["reason"]
    assert "--timeout 1 s" in stdout


def test_every_route_of_a_discovered_app_failing_is_nothing_measured(failing: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, stdout, stderr = probe(failing.url, "--timeout", "1", *QUICK, "--out", str(out))
    assert code == ExitCode.NOTHING_MEASURED, stderr
    skipped = skipped_of(out)
    assert {p: s["status"] for p, s in skipped.items()} == {"/boom": 500, "/hang": None, "/secure": 401}
    assert "pass credentials with -H" in stdout


def test_without_preflight_the_failed_ladders_are_the_report(failing: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, stdout, stderr = probe(
        failing.url,
        "-e",
        "/boom",
        "-e",
        "/hang",
        "--timeout",
        "1",
        "--no-preflight",
        *QUICK,
        "--out",
        str(out),
    )
    assert code == ExitCode.NOTHING_MEASURED, stderr
    endpoints = {e["path"]: e for e in json.loads(out.read_text())["endpoints"]}
    assert endpoints["/boom"]["levels"][0]["errors_by_kind"] == {
        "5xx": endpoints["/boom"]["levels"][0]["errors"]
    }
    hang = endpoints["/hang"]["levels"][0]
    assert hang["errors_by_kind"].get("timeout", 0) >= 1 or hang["stalled"]
    assert "GET /hang" in stderr
    assert "5xx" in stdout


def test_one_route_measured_is_a_normal_probe(tmp_path: Path) -> None:
    with serve("tests.apps.probe_app:app") as s:
        code, _, stderr = probe(
            s.url, "-e", "/fast", "-e", "/broken", *QUICK, "--out", str(tmp_path / "r.json")
        )
    assert code == 0, stderr


@pytest.mark.slow
def test_tune_on_an_app_whose_routes_all_fail_keeps_the_report(tmp_path: Path) -> None:
    report = tmp_path / "p.json"
    argv = [
        "tune", "failing_app:app", "--app-dir", str(REPO / "tests" / "apps"), "-e", "GET /boom",
        "--max-seconds", "10", "--yes", "--out", str(tmp_path / "g.conf.py"), "--report", str(report),
    ]  # fmt: skip
    result = CliRunner().invoke(
        app,
        argv,
        env={"FASTAPI_TUNE_CPUS": "", "FASTAPI_TUNE_MEMORY": ""},
    )
    assert result.exit_code == ExitCode.NOTHING_MEASURED, result.stderr
    assert skipped_of(report)["/boom"]["status"] == 500
    assert not (tmp_path / "g.conf.py").exists()


# ---------------------------------------------------------------------------------------
# Documents that cannot fill any request: the field is named, the report is written.


def _doc(op: dict[str, Any], path: str = "/x", method: str = "get") -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {path: {method: op}}}


def _query(schema: object) -> dict[str, Any]:
    return {"parameters": [{"name": "name", "in": "query", "required": True, "schema": schema}]}


def _body(schema: object) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@pytest.mark.parametrize(
    ("doc", "args", "field"),
    [
        pytest.param(
            _doc(_query({"type": "string", "minLength": "five"})), (), "'minLength' is 'five'", id="minLength"
        ),
        pytest.param(
            _doc(_query({"type": "integer", "minimum": "low"})), (), "'minimum' is 'low'", id="minimum"
        ),
        pytest.param(_doc(_query({"type": 5})), (), "'type' is 5", id="type"),
        pytest.param(_doc(_query({"type": "string", "pattern": "(["})), (), "pattern", id="pattern"),
        pytest.param(_doc(_query({"enum": "red"})), (), "'enum' is 'red'", id="enum"),
        pytest.param(_doc(_query({"$ref": "#/components/schemas/Nope"})), (), "points to nothing", id="ref"),
        pytest.param(
            _doc(
                _body(
                    {
                        "type": "object",
                        "required": ["n"],
                        "properties": {"n": {"type": "string", "maxLength": []}},
                    }
                ),
                method="post",
            ),
            ("-e", "POST /x"),
            "'maxLength' is []",
            id="body-maxLength",
        ),
        pytest.param(
            _doc(_body({"type": "array", "minItems": 3, "maxItems": 1}), method="post"),
            ("-e", "POST /x"),
            "minItems 3",
            id="body-minItems",
        ),
    ],
)
def test_a_document_that_fills_nothing_names_the_field(
    doc: dict[str, Any], args: tuple[str, ...], field: str, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    with hostile_server({"/openapi.json": json_route(doc)}, json_route({"ok": 1})) as s:
        code, stdout, stderr = probe(s.url, *args, *QUICK, "--out", str(out))
    assert code == ExitCode.BAD_INPUT, stderr
    assert field in stderr
    assert "Traceback" not in stderr
    (skipped,) = json.loads(out.read_text())["skipped"]
    assert skipped["cause"] == "schema"
    assert field in skipped["reason"]
    assert field in stdout


def test_nothing_selected_is_still_usage_with_the_reasons_and_a_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with hostile_server({"/openapi.json": json_route(_doc({}, method="post"))}, json_route({"ok": 1})) as s:
        code, stdout, stderr = probe(s.url, *QUICK, "--out", str(out))
    assert code == ExitCode.USAGE, stderr
    assert "--unsafe" in stderr
    assert skipped_of(out)["/x"]["cause"] == "not-selected"
    assert "POST /x" in stdout


# ---------------------------------------------------------------------------------------
# The decision (pure) and the report's new fields


def _report(
    endpoints: tuple[Endpoint, ...], skipped: tuple[Skipped, ...], interrupted: bool = False
) -> ProbeReport:
    return ProbeReport(
        "http://127.0.0.1:1", None, ServerInfo(local=False), endpoints, skipped, interrupted=interrupted
    )


@pytest.mark.parametrize(
    ("skipped", "code"),
    [
        pytest.param(
            (Skipped("GET", "/a", "preflight answered 500: x", SkipCause.PREFLIGHT, 500, 3.0),),
            ExitCode.NOTHING_MEASURED,
            id="preflight",
        ),
        pytest.param(
            (Skipped("GET", "/a", "time budget", SkipCause.BUDGET),), ExitCode.NOTHING_MEASURED, id="budget"
        ),
        pytest.param(
            (Skipped("GET", "/a", "'minLength' is 'five'", SkipCause.SCHEMA),),
            ExitCode.BAD_INPUT,
            id="schema",
        ),
        pytest.param(
            (Skipped("POST", "/a", "not a safe method", SkipCause.NOT_SELECTED),), ExitCode.USAGE, id="unsafe"
        ),
        pytest.param((), ExitCode.USAGE, id="empty-document"),
        pytest.param(
            (
                Skipped("GET", "/a", "x", SkipCause.SCHEMA),
                Skipped("GET", "/b", "y", SkipCause.PREFLIGHT, 404, 1.0),
            ),
            ExitCode.NOTHING_MEASURED,
            id="a-sent-one-failed",
        ),
    ],
)
def test_the_exit_follows_what_happened_to_the_routes(skipped: tuple[Skipped, ...], code: ExitCode) -> None:
    error = nothing_measured(_report((), skipped))
    assert error is not None
    assert error.exit_code == code


def test_a_measured_route_or_ctrl_c_is_not_nothing_measured() -> None:
    skipped = (Skipped("GET", "/a", "preflight answered 500: x", SkipCause.PREFLIGHT, 500, 3.0),)
    assert nothing_measured(_report((), skipped, interrupted=True)) is None
    unmeasured = Endpoint("GET", "/b", "http://127.0.0.1:1/b", (), StopReason.ERRORS)
    error = nothing_measured(_report((unmeasured,), ()))
    assert error is not None
    assert error.exit_code == ExitCode.NOTHING_MEASURED


def test_skipped_causes_round_trip_and_old_reports_still_load() -> None:
    report = _report((), (Skipped("GET", "/a", "preflight answered 500: x", SkipCause.PREFLIGHT, 500, 3.2),))
    raw = report_to_json(report)
    again = report_from_json(json.loads(json.dumps(raw)), "r.json")
    assert again.skipped == report.skipped
    del raw["skipped"][0]["cause"], raw["skipped"][0]["status"], raw["skipped"][0]["elapsed_ms"]
    old = report_from_json(raw, "old.json").skipped[0]
    assert (old.cause, old.status, old.elapsed_ms) == (None, None, None)
