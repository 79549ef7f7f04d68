"""probe and tune with --access-log on a real app: the routes that carry the traffic are measured first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from tests.logs import SECRETS, weighted_log
from tests.servers import Server, serve

# Traffic per second by path: the busiest routes are declared last in the app.
WEIGHTS = {"/orders/17": 50, "/orders/42": 0, "/g": 30, "/f": 15, "/a": 5}
HEAVY_FIRST = [
    "/orders/{oid}",
    "/g",
    "/f",
    "/a",
    "/b",
    "/c",
    "/d",
    "/e",
]  # unlogged ones: the document's order
SHARE = {"/orders/{oid}": 0.5, "/g": 0.3, "/f": 0.15, "/a": 0.05}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("tests.apps.traffic_app:app") as s:
        yield s


def probe(server: Server, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(
        app,
        ["probe", server.url, "--levels", "1", "--duration", "0.3", "--max-seconds", "2",
         "--no-profile", "--out", str(out), *args],
    )  # fmt: skip
    report = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, report, result.stdout + result.stderr


def measured(report: dict[str, Any]) -> list[str]:
    return [e["path"] for e in report["endpoints"] if e["levels"]]


def skipped_for_time(report: dict[str, Any]) -> list[str]:
    return [s["path"] for s in report["skipped"] if s["reason"].startswith("time budget")]


def test_a_short_budget_goes_to_the_busiest_routes(server: Server, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    weighted_log(log, WEIGHTS)
    code, report, output = probe(server, tmp_path, "--access-log", str(log))
    assert code == 0, output
    done, left = measured(report), skipped_for_time(report)
    assert left, "the budget covered every route: the test proves nothing"
    assert done, output
    # Measured in the order of the traffic: every measured route carries at least as much as any left out.
    assert done == HEAVY_FIRST[: len(done)]
    assert set(left) == set(HEAVY_FIRST[len(done) :])
    traffic = report["traffic"]
    shares = {r["route"]: r["share"] for r in traffic["routes"]}
    for path, share in SHARE.items():
        assert shares[f"GET {path}"] == pytest.approx(share, abs=0.01)
    assert traffic["peak"]["rps"] == pytest.approx(100.0, rel=0.05)
    for secret in SECRETS:
        assert secret not in output
        assert secret not in json.dumps(report)


def test_without_a_log_the_documents_order_stands(server: Server, tmp_path: Path) -> None:
    """The contrast: the same budget without the log measures /a, /b, ... and not the busy route."""
    code, report, output = probe(server, tmp_path)
    assert code == 0, output
    done = measured(report)
    assert done == ["/a", "/b", "/c", "/d", "/e", "/f", "/g", "/orders/{oid}"][: len(done)]
    assert "/orders/{oid}" in skipped_for_time(report)
    assert report["traffic"] is None


@pytest.mark.slow
def test_tune_measures_the_busy_routes_first_and_plans_for_their_peak(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    weighted_log(log, WEIGHTS)
    result = CliRunner().invoke(
        app,
        ["tune", "tests.apps.traffic_app:app", "--access-log", str(log), "--max-seconds", "3",
         "--out", str(tmp_path / "gunicorn.conf.py"), "--report", str(tmp_path / "probe.json"),
         "--yes", "--json"],
        env={"FASTAPI_TUNE_CPUS": "", "FASTAPI_TUNE_MEMORY": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    done = measured(data["report"])
    assert done[0] == "/orders/{oid}"
    assert any(i.startswith("access log: --mix from") for i in data["plan"]["inputs"])
    assert "--target-rps 100" in result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
        assert secret not in (tmp_path / "gunicorn.conf.py").read_text()
