"""Real APIs on a real PostgreSQL, probed through the CLI as a user would: pools, stalls, budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.measure.report import EndpointClass, ProbeReport, ServerInfo, report_to_json
from tests.pg import Postgres
from tests.servers import serve
from tests.test_classify import LADDER, level
from tests.test_contract import judged, plan_from
from tests.test_plan import make_host

POOL = 5


def probe(url: str, out: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["probe", url, "-o", str(out), "--no-profile", *args])
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.slow
def test_a_route_waiting_on_its_pool_reads_pool_bound_with_the_pool_size(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_DSN", postgres.dsn)
    monkeypatch.setenv("POOL_SIZE", str(POOL))
    with serve("tests.apps.pg_async_app:app") as s:
        report = probe(s.url, tmp_path / "r.json", "-e", "/sleep", "--max-seconds", "30")
    (ep,) = report["endpoints"]
    assert ep["class"] == "pool-bound", ep["verdict"]["summary"]
    k = ep["verdict"]["evidence"]["pool_size_per_worker"]
    assert 0.75 * POOL <= k <= 1.25 * POOL, k  # the bar: within 25% of the pool size


@pytest.mark.slow
def test_the_sync_dependency_deadlock_reads_as_a_stall(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_DSN", postgres.dsn)
    monkeypatch.setenv("POOL_TIMEOUT", "5")  # longer than the confirming window, short for the test
    with serve("tests.apps.pg_sync_app:app") as s:
        report = probe(s.url, tmp_path / "r.json", "-e", "/stall", "--max-seconds", "40")
    (ep,) = report["endpoints"]
    assert ep["class"] == "stalled", ep["verdict"]["summary"]
    assert ep["stop_reason"] == "stalled"
    stalled = [lv for lv in ep["levels"] if lv["stalled"]]
    assert len(stalled) == 1
    assert stalled[0]["in_flight_at_end"] == stalled[0]["concurrency"]
    assert any("pool_size + max_overflow" in a for a in ep["verdict"]["advice"])


def test_recommend_caps_workers_by_the_database_connections(tmp_path: Path) -> None:
    """A pool-bound verdict on 8 CPUs wants many workers; 100 connections of 15 per worker allow 6."""
    levels = tuple(level(n, min(n, 15) / 0.02, n / (min(n, 15) / 0.02) * 1000, 0.1) for n in LADDER)
    ep = judged("/items", levels, 1)
    assert ep.verdict is not None
    assert ep.verdict.cls is EndpointClass.POOL_BOUND
    unbounded = plan_from([ep], workers=1, cpus=8)
    assert unbounded.workers > 6
    assert any("--db-max-connections" in u for u in unbounded.unknowns)
    probe_report = ProbeReport(
        target="http://127.0.0.1:8000",
        host=make_host(8),
        server=ServerInfo(local=True, pid=10, kind="uvicorn", workers=1, worker_pids=(10,)),
        endpoints=(ep,),
    )
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(report_to_json(probe_report)))
    result = CliRunner().invoke(
        app,
        [
            "recommend", "--probe", str(path), "--app", "main:app", "--cpus", "8", "--yes", "--json",
            "--db-max-connections", "100", "--db-pool-size", "15", "-o", str(tmp_path / "g.py"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["workers"] == 6
    assert "(100 max_connections - 3 reserved) / 15 per worker's pool = 6" in plan["worker_formula"]
