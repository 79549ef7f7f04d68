"""verify --rate on one real gunicorn worker, below and beyond its capacity, refereed by k6 on the same
config: what the server served, the "beyond capacity" line, the objective, and item 4 of issue 23
(the open loop must not measure the backlog the closed-loop burst before it left behind).

The route is /loop?ms=20 (a 20 ms blocking call in `async def`): one worker serves ~50 req/s
whatever else loads the machine's CPUs, so the bounds below can stay relative and still pass on a
busy machine. Exact ratios belong in benchmarks/openloop.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from tests.servers import REPO, serve

KINDS = "tests.apps.kinds_app:app"
ROUTE = "/loop?ms=20"
K6 = shutil.which("k6", path=str(Path(sys.executable).parent)) or shutil.which("k6")
CONF = 'workers = 1\nworker_class = "uvicorn_worker.UvicornWorker"\n'
# verify's own defaults for the closed loop (c=64: the burst that leaves a backlog), one round.
VERIFY = ["--duration", "2", "--repeat", "1", "--app-dir", str(REPO), "--json"]

CLOSED_JS = """
import http from 'k6/http';
export const options = { discardResponseBodies: true };
export default function () { http.get(__ENV.URL); }
"""
OPEN_JS = """
import http from 'k6/http';
const rate = Number(__ENV.RATE);
const arrival = (duration, start) => ({
  executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration,
  startTime: start, preAllocatedVUs: 64, maxVUs: 64,
});
export const options = {
  discardResponseBodies: true,
  thresholds: { 'http_req_duration{scenario:main}': ['max>=0'] },
  scenarios: { warm: arrival('1s', '0s'), main: arrival('3s', '1s') },
};
export default function () { http.get(__ENV.URL); }
"""

pytestmark = [pytest.mark.slow, pytest.mark.skipif(K6 is None, reason="the k6 wheel is not installed")]


@dataclass(frozen=True)
class Referee:
    """k6 on the config: its closed-loop capacity, and its latency at half of it."""

    conf: Path
    capacity_rps: float
    half_rps: int
    half_p50_ms: float
    half_p99_ms: float


def _k6(script: str, tmp: Path, *args: str, env: dict[str, str]) -> dict[str, Any]:
    assert K6 is not None
    path, summary = tmp / "script.js", tmp / "summary.json"
    path.write_text(script)
    cmd = [K6, "run", "-q", "--no-usage-report", "--summary-trend-stats", "med,p(99)"]
    cmd += ["--summary-export", str(summary), *args]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    done = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics: dict[str, Any] = json.loads(summary.read_text())["metrics"]
    return metrics


@pytest.fixture(scope="module")
def referee(tmp_path_factory: pytest.TempPathFactory) -> Referee:
    tmp = tmp_path_factory.mktemp("k6")
    conf = tmp / "one-worker.conf.py"
    conf.write_text(CONF)
    with serve(KINDS, "gunicorn", 1, ["-c", str(conf), "--max-requests", "0"]) as server:
        url = server.url + ROUTE
        closed = _k6(CLOSED_JS, tmp, "--vus", "8", "--duration", "4s", env={"URL": url})
        capacity = float(closed["http_reqs"]["rate"])
        half = round(capacity / 2)
        opened = _k6(OPEN_JS, tmp, env={"URL": url, "RATE": str(half)})
    lat = opened["http_req_duration{scenario:main}"]
    return Referee(conf, capacity, half, float(lat["med"]), float(lat["p(99)"]))


def verify(referee: Referee, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    own = Path(shutil.copy(referee.conf, tmp_path / "gunicorn.conf.py"))
    html = tmp_path / "verify.html"
    r = CliRunner().invoke(
        app, ["verify", KINDS, "-c", str(own), "-e", f"GET {ROUTE}", *VERIFY, "--html", str(html), *args]
    )
    data: dict[str, Any] = json.loads(r.stdout) if r.stdout else {}
    data["html"] = html.read_text() if html.exists() else ""
    return r.exit_code, data, r.stderr


def recommended(data: dict[str, Any]) -> dict[str, Any]:
    run: dict[str, Any] = next(r for r in data["runs"] if r["label"] == "recommended")
    assert run["workers"] == 1
    return run


def test_beyond_capacity_counts_what_was_served_says_so_and_misses_the_objective(
    referee: Referee, tmp_path: Path
) -> None:
    rate = round(1.5 * referee.capacity_rps)
    # p99 < 10 s: the requests it completed meet it (~2 s at most); falling behind alone misses it.
    code, data, stderr = verify(referee, tmp_path, "--rate", str(rate), "--slo", "p99<10s")
    assert code == ExitCode.SLO_MISSED, stderr
    at = recommended(data)["at_rate"]
    # The generator held the rate; the server served its capacity (k6's closed loop), not the rate.
    assert at["arrival_rps"] == pytest.approx(rate, rel=0.05)
    assert at["served_rps"] == pytest.approx(referee.capacity_rps, rel=0.25)
    assert at["completed"] == at["intended"]  # all answered in the end: why "completed" misled
    assert at["backlog_at_end"] > 0.1 * at["intended"]
    assert at["drain_s"] > 0.5
    assert at["fell_behind"] is True
    line = at["beyond_capacity"]
    assert line.startswith(f"beyond capacity: served {at['served_rps']:.0f} of {rate} req/s")
    assert "p50 grew from" in line
    assert "achieved_rps" not in at
    # The same line in the verdict, the objective (the exit-7 message), and the HTML.
    assert line in data["verdict"]
    assert data["slo"]["met"] is False
    assert line in data["slo"]["verdict"]
    assert "beyond capacity: served" in stderr
    assert "beyond capacity: served" in data["html"]


def test_half_capacity_changes_nothing_and_matches_k6(referee: Referee, tmp_path: Path) -> None:
    code, data, stderr = verify(referee, tmp_path, "--rate", str(referee.half_rps), "--slo", "p99<10s")
    assert code == ExitCode.OK, stderr
    run = recommended(data)
    at = run["at_rate"]
    assert at["fell_behind"] is False
    assert at["beyond_capacity"] is None
    assert "beyond capacity" not in data["verdict"]
    assert "beyond capacity" not in data["html"]
    assert at["served_rps"] == pytest.approx(at["arrival_rps"], rel=0.1)
    assert at["arrival_rps"] == pytest.approx(referee.half_rps, rel=0.05)
    assert at["dropped_starts"] == 0
    # Measured on a settled server: the c=64 burst before it left ~64 x 20 ms = 1.3 s of work
    # queued, which an open loop started at once reads as its own latency (issue 23, item 4; on
    # main this run read p50 770 ms, p99 1370 ms where k6 reads ~25 ms). The slack is for a busy
    # machine's hiccups in one tool's run and not the other's (seen: 100-300 ms at load 12).
    assert run["notes"] == []
    lat = at["latency_ms"]
    bounds = ((lat["p50"], referee.half_p50_ms, 2, 40.0), (lat["p99"], referee.half_p99_ms, 3, 150.0))
    for ours, theirs, times, plus in bounds:
        assert ours <= max(times * theirs, theirs + plus), (ours, theirs, os.getloadavg())
    # From the intended start, not from the send: never below k6's median (half of it for noise).
    assert lat["p50"] >= 0.5 * referee.half_p50_ms
