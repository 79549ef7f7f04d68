"""verify --rate/--slo/--capacity against real gunicorn servers: the exit codes CI gates on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from tests.servers import REPO

KINDS = "tests.apps.kinds_app:app"
# Short runs: one round, a short closed loop, then the open loop for as long.
QUICK = ["--duration", "1", "--concurrency", "4", "--repeat", "1", "--app-dir", str(REPO)]


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config from `recommend` (host facts only: one worker per CPU)."""
    where = tmp_path_factory.mktemp("slo")
    out = where / "gunicorn.conf.py"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        r = CliRunner().invoke(app, ["recommend", "--app", KINDS, "--yes", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    return out


def verify(conf: Path, tmp_path: Path, *args: str) -> tuple[int, dict[str, object], str]:
    own = Path(shutil.copy(conf, tmp_path / "gunicorn.conf.py"))
    r = CliRunner().invoke(app, ["verify", KINDS, "-c", str(own), *QUICK, *args, "--json"])
    return r.exit_code, json.loads(r.stdout) if r.stdout else {}, r.stderr


@pytest.mark.slow
def test_a_rate_within_capacity_passes(conf: Path, tmp_path: Path) -> None:
    code, data, stderr = verify(conf, tmp_path, "-e", "GET /io?ms=5", "--rate", "20", "--slo", "p99<2s")
    assert code == ExitCode.OK, stderr
    slo = data["slo"]
    assert isinstance(slo, dict)
    assert slo["met"] is True
    assert "met: p99" in slo["verdict"]
    runs = data["runs"]
    assert isinstance(runs, list)
    rec = runs[0]
    assert rec["label"] == "recommended"
    at_rate = rec["at_rate"]
    assert at_rate["rate_rps"] == 20
    assert at_rate["intended"] >= 15  # ~20 starts in the 1 s window
    assert at_rate["failed"] == 0
    assert at_rate["latency_ms"]["p50"] >= 5  # the route sleeps 5 ms: measured from the intended start


@pytest.mark.slow
def test_beyond_capacity_fails_with_the_shortfall_and_the_capacity_is_found(
    conf: Path, tmp_path: Path
) -> None:
    # A 20 ms blocking call holds each worker's loop: one worker serves 50 req/s at most, two 100.
    code, data, stderr = verify(
        conf, tmp_path, "-e", "GET /loop?ms=20", "--rate", "200", "--slo", "p99<100ms,errors<1%", "--capacity"
    )
    assert code == ExitCode.SLO_MISSED, stderr
    assert "missed:" in stderr
    assert "p99" in stderr
    assert "(+" in stderr  # by how much
    slo = data["slo"]
    assert isinstance(slo, dict)
    assert slo["met"] is False
    runs = data["runs"]
    assert isinstance(runs, list)
    single_run = next(r for r in runs if r["label"] == "single-worker")
    single = single_run["capacity"]
    assert single["steps"]  # it searched, and found where the objective breaks
    assert any(not step["met"] for step in single["steps"])
    # 1 s steps (10 x the 100 ms bound) overstate an overload by at most 10%: below 55 req/s (60 for
    # noise), and above a trickle.
    assert single["rate_rps"] is not None
    assert 2 <= single["rate_rps"] <= 60
    # A capacity is a rate the server completes (the "fell behind" rule applies to every step):
    # not above what the same worker served in the closed loop, but for the search's 5% steps.
    assert single["rate_rps"] <= 1.15 * single_run["throughput_rps"]
    # At 200 req/s the recommended config fell behind, and the objective's verdict says so.
    assert "beyond capacity: served" in slo["verdict"]


def test_slo_needs_a_rate_or_capacity(conf: Path, tmp_path: Path) -> None:
    code, _, stderr = verify(conf, tmp_path, "-e", "GET /io", "--slo", "p99<1s")
    assert code == ExitCode.USAGE
    assert "--rate" in stderr
    code, _, stderr = verify(conf, tmp_path, "-e", "GET /io", "--capacity")
    assert code == ExitCode.USAGE
    assert "--slo" in stderr
