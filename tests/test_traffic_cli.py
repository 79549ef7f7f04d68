"""--access-log as a user runs it: the traffic command, stdin, gzip, recommend's defaults, errors, secrets."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.discover.openapi import Skipped
from fastapi_tune.measure.report import EndpointClass, ProbeReport, report_to_json
from tests.logs import QUERY, ROUTES, SECRETS, SHARES, Shape, log_text, write_log
from tests.servers import REPO
from tests.test_plan import make_endpoint, make_level, make_report


def openapi_file(tmp_path: Path) -> Path:
    """The generated app's OpenAPI document: the routes the logs' requests belong to."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in ROUTES:
        paths.setdefault(path, {})[method.lower()] = {"responses": {"200": {"description": "ok"}}}
    doc = tmp_path / "openapi.json"
    doc.write_text(json.dumps({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths}))
    return doc


def invoke(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin, env=env)
    return result.exit_code, result.stdout, result.stderr


def no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_traffic_from_stdin_as_json(tmp_path: Path) -> None:
    shape = Shape(seconds=240)
    code, stdout, stderr = invoke(
        "traffic", "--openapi", str(openapi_file(tmp_path)), "--access-log", "-", "--json",
        stdin=log_text("json", shape),
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    shares = {r["route"]: r["share"] for r in data["routes"]}
    for route, share in SHARES.items():
        assert shares[route] == pytest.approx(share, abs=0.01)
    assert data["peak"]["rps"] == pytest.approx(shape.peak_rps, rel=0.05)
    assert data["sources"][0]["name"] == "-"
    assert "unmatched" in stderr  # the one-line summary goes to stderr
    no_secret(stdout, stderr)


def test_traffic_table_shows_shares_statuses_and_unmatched(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    write_log(log, "nginx")
    code, stdout, stderr = invoke(
        "traffic", "--openapi", str(openapi_file(tmp_path)), "--access-log", str(log)
    )
    assert code == 0, stderr
    assert "GET /orders/{oid}" in stdout
    assert "45.0%" in stdout
    assert "peak 50 req/s over 60 s from 2026-03-14T09:05:00+00:00" in stdout
    assert "GET /wp-login.php" in stdout
    no_secret(stdout, stderr)


def test_gzip_on_stdin_through_the_installed_command(tmp_path: Path) -> None:
    """A real pipe into a real process: `zcat`-free, the reader sees gzip's magic bytes on stdin."""
    data = gzip.compress(log_text("gunicorn", Shape(seconds=180)).encode())
    proc = subprocess.run(
        [sys.executable, "-m", "fastapi_tune", "traffic", "--openapi", str(openapi_file(tmp_path)),
         "--access-log", "-", "--json"],
        input=data, capture_output=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    profile = json.loads(proc.stdout)
    assert profile["sources"][0]["format"] == "combined"
    assert profile["peak"]["rps"] == pytest.approx(50.0, rel=0.05)
    no_secret(proc.stdout.decode(), proc.stderr.decode())


def test_a_log_with_no_usable_line_is_one_error_line_exit_3(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text(f"worker booted; GET /orders/1{QUERY}\n" * 30)
    code, stdout, stderr = invoke(
        "traffic", "--openapi", str(openapi_file(tmp_path)), "--access-log", str(log)
    )
    assert code == 3  # BAD_INPUT, as the README documents
    assert code == ExitCode.BAD_INPUT
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:")
    assert str(log.name) in lines[0]
    no_secret(stdout, stderr)


# ---------------------------------------------------------------------------------------
# recommend


def measured_report(tmp_path: Path, traffic: bool = False) -> Path:
    """The GET routes measured (cheap orders, costly items), POST /login skipped as unsafe."""
    costs = {
        "/orders/{oid}": 0.002,
        "/items": 0.02,
        "/users/me": 0.002,
        "/users/{uid}": 0.004,
        "/health": 0.001,
    }
    endpoints = [
        make_endpoint(
            path,
            EndpointClass.CPU_BOUND,
            [make_level(c, 1 / cpu, cpu * 1000 * c + 1, cpu=1.0) for c in (1, 4, 16)],
        )
        for path, cpu in costs.items()
    ]
    report: ProbeReport = make_report(endpoints)
    report = ProbeReport(**{**report.__dict__, "skipped": (Skipped("POST", "/login", "not a safe method"),)})
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(report_to_json(report)))
    return path


def recommend(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    code, stdout, stderr = invoke(
        "recommend", "--app", "tests.apps.plain_app:app", "--out", str(tmp_path / "gunicorn.conf.py"),
        "--yes", "--json", "--slo", "p99<500ms", *args,
        env={"FASTAPI_TUNE_CPUS": "2", "FASTAPI_TUNE_MEMORY": "8G"},
    )  # fmt: skip
    return code, json.loads(stdout) if code == 0 else {}, stderr


def test_recommend_plans_for_the_logs_mix_and_peak(tmp_path: Path) -> None:
    report = measured_report(tmp_path)
    log = tmp_path / "access.log"
    write_log(log, "nginx")
    code, plan, stderr = recommend(tmp_path, "--probe", str(report), "--access-log", str(log))
    assert code == 0, stderr
    line = next(x for x in stderr.splitlines() if x.startswith("access log: --mix"))
    assert "--mix from 14,700 requests (GET /orders/{oid} 45%, GET /items 25%" in line
    assert "--target-rps 50 (the busiest 60 s of the log, from 2026-03-14T09:05:00+00:00)" in line
    assert "POST /login" in stderr  # its 15% could not be measured: said so
    assert plan["mix_model"]["target_rps"] == 50.0
    assert any(i.startswith("access log:") for i in plan["inputs"])
    # The shares are the mix: the same plan as typing them by hand.
    typed = ",".join(f"{route}={share * 100:g}" for route, share in SHARES.items() if route != "POST /login")
    code, by_hand, stderr = recommend(tmp_path, "--probe", str(report), "--mix", typed, "--target-rps", "50")
    assert code == 0, stderr
    assert by_hand["mix_model"] == plan["mix_model"]
    assert by_hand["workers"] == plan["workers"]
    equal_mix = recommend(tmp_path, "--probe", str(report), "--target-rps", "50")[1]
    assert equal_mix["mix_model"]["max_rps"] != plan["mix_model"]["max_rps"]  # the mix changed something
    no_secret(stderr, json.dumps(plan), (tmp_path / "gunicorn.conf.py").read_text())


def test_flags_win_over_the_log(tmp_path: Path) -> None:
    report = measured_report(tmp_path)
    log = tmp_path / "access.log"
    write_log(log, "json")
    code, plan, stderr = recommend(
        tmp_path,
        "--probe",
        str(report),
        "--access-log",
        str(log),
        "--target-rps",
        "80",
        "--mix",
        "GET /items=1",
    )
    assert code == 0, stderr
    assert plan["mix_model"]["target_rps"] == 80.0
    assert "--mix and --target-rps as given" in stderr


def test_recommend_reads_the_traffic_a_probe_saved(tmp_path: Path) -> None:
    """probe --access-log keeps the profile in the report; recommend then needs no log."""
    log = tmp_path / "access.log"
    write_log(log, "json")
    report_path = measured_report(tmp_path)
    code, stdout, stderr = invoke("traffic", "--probe", str(report_path), "--access-log", str(log), "--json")
    assert code == 0, stderr
    saved = json.loads(report_path.read_text())
    saved["traffic"] = json.loads(stdout)
    report_path.write_text(json.dumps(saved))
    code, plan, stderr = recommend(tmp_path, "--probe", str(report_path))
    assert code == 0, stderr
    assert plan["mix_model"]["target_rps"] == 50.0
    assert "access log: --mix from" in stderr


def test_recommend_needs_routes_to_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./fastapi-tune-probe.json here
    log = tmp_path / "access.log"
    write_log(log, "nginx", Shape(seconds=120))
    code, _, stderr = recommend(tmp_path, "--probe", str(tmp_path / "none.json"), "--access-log", str(log))
    assert code == ExitCode.BAD_INPUT  # an explicit --probe that does not exist
    code, _, stderr = invoke(
        "recommend", "--yes", "--out", str(tmp_path / "g.py"), "--access-log", str(log),
        env={"FASTAPI_TUNE_CPUS": "2", "FASTAPI_TUNE_MEMORY": "8G"},
    )  # fmt: skip
    assert code == ExitCode.USAGE, stderr
    assert "probe the app first" in stderr
