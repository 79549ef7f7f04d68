"""A real-sized app: every route gets a verdict within the budget, and the verdicts are right.

A generated app (tests/apps/breadth_app.py) of routes of every kind with random service times,
served for real, probed through the CLI with half the default budget (to keep the suite short):
the triage must reach every route, and the deepening must keep to the budget. Bounds are
generous: other work shares the machine (benchmarks/breadth.py holds the exact figures).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.measure.schedule import DEFAULT_BUDGET_S
from tests.apps.breadth_app import routes
from tests.servers import serve

ROUTES = 15
SEED = 7
# A route or two may read wrong when a neighbour starves the host for a moment; none may be left
# without a verdict.
RIGHT_SHARE = 0.8
# Past the budget: the CLI's own start, the report's rendering, a busy machine's slack.
SLACK_S = 20.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "workers"),
    [pytest.param("uvicorn", 1, id="uvicorn-1-worker"), pytest.param("gunicorn", 2, id="gunicorn-2-workers")],
)
def test_every_route_gets_a_verdict_within_the_budget(
    server: str, workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTAPI_TUNE_BREADTH", f"{ROUTES}:{SEED}")
    labels = {f"GET {r.path}": r.label for r in routes(ROUTES, SEED)}
    budget = DEFAULT_BUDGET_S / 2
    out = tmp_path / "probe.json"
    with serve("tests.apps.breadth_app:app", server=server, workers=workers) as s:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["probe", s.url, "-o", str(out), "--max-seconds", f"{budget:g}"])
        elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    assert f"{ROUTES} route(s): a triage of each first" in result.stderr
    assert "Triage done in" in result.stderr
    report = json.loads(out.read_text())
    got = {f"{e['method']} {e['path']}": e for e in report["endpoints"]}
    assert set(got) == set(labels), report["skipped"]
    summaries = {k: (e["class"], e["verdict"]["summary"]) for k, e in got.items() if e["class"] != labels[k]}
    assert not [k for k, e in got.items() if e["class"] == "inconclusive"], summaries
    assert {e["evidence_depth"] for e in got.values()} <= {"triage", "ladder"}
    right = sum(got[k]["class"] == label for k, label in labels.items())
    assert right >= RIGHT_SHARE * ROUTES, summaries
    assert report["elapsed_s"] <= budget + 2, report["elapsed_s"]
    assert elapsed < budget + SLACK_S, elapsed
