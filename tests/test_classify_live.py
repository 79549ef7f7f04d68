"""Classification against the real sample app: one route of each kind, under both servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from tests.servers import serve

EXPECTED = {
    "/orders/{order_id}": "io-bound",
    "/report": "threadpool-bound",
    "/inventory": "loop-blocking",
    "/score": "cpu-bound",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "workers"),
    [pytest.param("uvicorn", 1, id="uvicorn-1-worker"), pytest.param("gunicorn", 2, id="gunicorn-2-workers")],
)
def test_every_route_of_the_sample_app_is_classified_right(server: str, workers: int, tmp_path: Path) -> None:
    out = tmp_path / "probe.json"
    with serve("fastapi_tune.sample_app:app", server=server, workers=workers) as s:
        started = time.monotonic()
        result = CliRunner().invoke(app, ["probe", s.url, "--out", str(out)])
        elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["server"]["workers"] == workers
    got = {e["path"]: e["class"] for e in report["endpoints"]}
    assert got == EXPECTED, [(e["path"], e["verdict"]["summary"]) for e in report["endpoints"]]
    # The bar is 30 s on an idle 2-core machine; CI may share it, so allow twice that.
    assert elapsed < 60, elapsed


@pytest.mark.slow
def test_cpu_work_is_not_read_as_a_blocked_loop_on_a_busy_host(tmp_path: Path) -> None:
    """A busy-loop process per core while probing: a CPU route waits for a CPU, and its demand
    (on CPU + waiting) still tells it from a route that sleeps inside `async def`."""
    out = tmp_path / "probe.json"
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        with serve("fastapi_tune.sample_app:app") as s:
            result = CliRunner().invoke(
                app, ["probe", s.url, "-e", "/score", "-e", "/inventory", "--no-profile", "-o", str(out)]
            )
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    got = {e["path"]: e["class"] for e in report["endpoints"]}
    assert got == {"/score": "cpu-bound", "/inventory": "loop-blocking"}, [
        (e["path"], e["verdict"]["summary"]) for e in report["endpoints"]
    ]
    assert report["host_load"]["busy"] is True
    # The levels saw the contention (whether the scheduler made the workers wait is its own affair:
    # with more busy processes than the test's, it may give them their core and starve the others).
    demands = [lv["demand"] for e in report["endpoints"] for lv in e["levels"]]
    assert any(d["host_idle_cores"] < 0.3 and d["others_cores"] >= 1.0 for d in demands), demands
