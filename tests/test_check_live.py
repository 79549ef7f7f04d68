"""`fastapi-tune check` on a real app under a real uvicorn: the baseline, the unchanged app on a busy
host (no false alarm), and a pull request's worth of changes (tests/apps/check_app.py's variants)
caught with the new exit code, a JUnit failure and an annotation at the sleep's line; `compare` on the
saved reports agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from tests.servers import REPO

APPS = REPO / "tests" / "apps"
SLEEP_LINE = next(
    i for i, line in enumerate((APPS / "check_app.py").read_text().splitlines(), 1) if "SLEEP_LINE" in line
)
ORDERS = "GET /orders/{order_id}"
# A short fixed ladder keeps each run near 20 s; the baseline records it and later runs inherit it.
LADDER = ("--levels", "1,4,16", "--max-seconds", "40")


def check(
    baseline: Path, variant: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        ["check", "check_app:app", "--app-dir", str(APPS), "--baseline", str(baseline), *extra],
        env={
            "FASTAPI_TUNE_CHECK_VARIANT": variant,
            "GITHUB_ACTIONS": "",
            "GITHUB_STEP_SUMMARY": "",
            **(env or {}),
        },
    )
    return result.exit_code, result.stdout, result.stderr


def junit_statuses(path: Path) -> dict[str, str]:
    """Each testcase's outcome: `failure`, the skipped message's status word, or `passed`."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        skipped = case.find("skipped")
        if case.find("failure") is not None:
            out[str(case.get("name"))] = "failure"
        elif skipped is not None:
            out[str(case.get("name"))] = str(skipped.get("message")).split(":", 1)[0]
        else:
            out[str(case.get("name"))] = "passed"
    return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unchanged app's baseline, made by a first `check` (no file yet: saved, exit 0)."""
    path = tmp_path_factory.mktemp("check") / "baseline.json"
    code, stdout, stderr = check(path, "", *LADDER)
    assert code == ExitCode.OK, stderr
    assert "Baseline saved" in stdout
    saved = json.loads(path.read_text())
    assert saved["settings"]["app"] == "check_app:app"
    assert saved["settings"]["levels"] == [1, 4, 16]
    return path


@pytest.fixture
def busy_host() -> Iterator[None]:
    """A busy loop per core beside the test, as tests/test_classify_live.py makes one."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


@pytest.mark.slow
def test_the_unchanged_app_passes_on_a_busy_host(baseline: Path, busy_host: None, tmp_path: Path) -> None:
    before = baseline.read_bytes()
    code, stdout, stderr = check(baseline, "", "--json")
    assert code == ExitCode.OK, stdout + stderr
    result = json.loads(stdout)
    routes = result["comparison"]["routes"]
    assert {r["status"] for r in routes} <= {"unchanged", "improved", "inconclusive"}, routes
    assert any(r["status"] != "inconclusive" for r in routes), "something must have been judged"
    assert result["baseline_saved"] is False
    assert baseline.read_bytes() == before  # a check without --update never touches the baseline


@pytest.mark.slow
def test_a_pull_requests_changes_are_caught_and_compare_agrees(baseline: Path, tmp_path: Path) -> None:
    junit, summary, new = tmp_path / "check.xml", tmp_path / "summary.md", tmp_path / "new.json"
    github = {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(REPO), "GITHUB_STEP_SUMMARY": str(summary)}
    code, stdout, stderr = check(
        baseline, "sleep,cpu,routes", "--junit", str(junit), "--out", str(new), env=github
    )
    assert code == ExitCode.REGRESSED, stdout + stderr
    # The blocking call: a class change, a JUnit failure, an annotation at its file and line.
    assert (
        f"::error file=tests/apps/check_app.py,line={SLEEP_LINE},title=GET /orders/{{order_id}} regressed::"
        in (stdout)
    ), stdout
    statuses = junit_statuses(junit)
    assert statuses == {
        ORDERS: "failure",
        "GET /score": "failure",
        "GET /report": "gone",
        "GET /health": "passed",
    }
    failure = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == ORDERS).find(
        "failure"
    )
    assert failure is not None
    assert "loop-blocking" in str(failure.get("message"))
    assert "time.sleep" in str(failure.text)
    # 4x the CPU on /score: CPU per request beyond its band, even beside a busy neighbour.
    assert "CPU per request" in next(
        str(c.find("failure").get("message"))  # type: ignore[union-attr]
        for c in ET.parse(junit).getroot().iter("testcase")
        if c.get("name") == "GET /score"
    )
    assert "| `GET /orders/{order_id}` | **regressed** |" in summary.read_text()
    assert "regressed against the baseline" in stderr

    # `compare` on the two saved reports judges the same.
    again = tmp_path / "compare.xml"
    result = CliRunner().invoke(
        app,
        ["compare", str(baseline), str(new), "--junit", str(again), "--app-dir", str(APPS)],
        env={"GITHUB_ACTIONS": "", "GITHUB_STEP_SUMMARY": ""},
    )
    assert result.exit_code == ExitCode.REGRESSED, result.stderr
    assert junit_statuses(again) == statuses
