"""verify --rate/--slo/--capacity against real gunicorn servers: the exit codes CI gates on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli import app
from fastapi_tune.errors import ExitCode
from fastapi_tune.host import read_host
from fastapi_tune.slo import parse_slo
from fastapi_tune.verify import VerifyOptions, run_verify
from fastapi_tune.verify_judge import Run
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
def test_a_rate_beyond_capacity_fails_with_the_shortfall(conf: Path, tmp_path: Path) -> None:
    # A 30 ms blocking call holds each worker's loop: 2 workers serve ~66 req/s at most, not 400.
    code, data, stderr = verify(
        conf, tmp_path, "-e", "GET /loop?ms=30", "--rate", "400", "--slo", "p99<100ms,errors<1%"
    )
    assert code == ExitCode.SLO_MISSED, stderr
    assert "missed:" in stderr
    assert "p99" in stderr
    assert "(+" in stderr  # by how much
    slo = data["slo"]
    assert isinstance(slo, dict)
    assert slo["met"] is False


def test_slo_needs_a_rate_or_capacity(conf: Path, tmp_path: Path) -> None:
    code, _, stderr = verify(conf, tmp_path, "-e", "GET /io", "--slo", "p99<1s")
    assert code == ExitCode.USAGE
    assert "--rate" in stderr
    code, _, stderr = verify(conf, tmp_path, "-e", "GET /io", "--capacity")
    assert code == ExitCode.USAGE
    assert "--slo" in stderr


class _Quiet:
    def run_started(self, *args: object) -> None: ...
    def step(self, text: str) -> None: ...
    def run_done(self, run: Run) -> None: ...


@pytest.mark.slow
def test_capacity_search_finds_a_rate_below_what_the_workers_can_serve(conf: Path) -> None:
    options = VerifyOptions(
        app=KINDS,
        config=conf,
        app_dir=REPO,
        endpoints=("GET /loop?ms=20",),
        concurrency=4,
        duration_s=0.5,
        warmup_s=0.3,
        repeat=1,
        objective=parse_slo("p99<400ms"),
        capacity=True,
        step_s=0.5,
    )
    result = run_verify(options, read_host(), None, _Quiet())
    runs = {r.label: r for r in result.runs}
    single = runs["single-worker"].capacity
    assert single is not None
    assert single.steps  # it searched
    # One loop blocked 20 ms per request serves at most 50 req/s; the capacity at p99 < 400 ms is
    # below that and above a trickle.
    assert single.rate_rps is not None
    assert 2 <= single.rate_rps <= 55
    assert any(not ok for _, ok, _ in single.steps)  # it found where the objective breaks
