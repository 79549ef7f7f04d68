"""Classification against the real sample app: one route of each kind, under both servers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli import app
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
