"""Locust and k6 read back agree with the probe (issue 23, item 5): the same app, the probe's own
verdicts, then `export` -> a real Locust master + 2 workers and a real k6 -> `import`, as a user runs
them. Without the server's CPU an imported run cannot tell cpu-bound from loop-blocking: both read
`serialized`, which is the agreement expected for them."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.judge.classify import classify_report
from fastapi_tune.measure.import_locust import import_locust
from fastapi_tune.measure.report import Endpoint, ProbeReport, ServerInfo, StopReason
from fastapi_tune.render.export_load import spec_from_report
from fastapi_tune.render.locustfile import render_locust
from tests.servers import serve
from tests.test_load_tools import K6, RUN_TIMEOUT_S, _level, run_locust_distributed

# Each case: the app, its routes (under one uvicorn worker), the ladder, the probe's seconds per level.
# - An async I/O route and a CPU route. The I/O route is slow (800 ms) so that c=64 asks only 80
#   req/s, which a starved 2-core host still serves (at 160 req/s the server's own queue bent the
#   curve near the thread limiter's knee); it goes first, as a route's last step is where requests
#   were lost or spilled into the next route's first step. The probe holds its levels 3 s: with
#   0.5 s windows, 800 ms requests started together complete in waves a window catches or not.
# - An async route capped at 80 in flight by a semaphore: its knee sits where two workers' thread
#   limiters would (2 x 40), and only the worker count the probe saw (1) tells them apart.
CASES = [
    pytest.param(
        "tests.apps.kinds_app:app", ("GET /io?ms=800", "GET /cpu?ms=5"), "1,4,16,64", id="io-and-cpu"
    ),
    pytest.param(
        "tests.apps.capped_app:app", ("GET /capped?ms=500&limit=80",), "1,8,32,64,128", id="capped-at-80"
    ),
]
PROBE_S = "3"
STEP_S = "6"  # 2 s of warm-up, 4 s counted: five 800 ms requests at c=1
# What an imported run can say for what the probe saw with the server's CPU in view.
BLACK_BOX = {"cpu-bound": "serialized", "loop-blocking": "serialized"}


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.stderr[-3000:]
    return result.stdout


def classes(report: dict[str, Any]) -> dict[str, str]:
    return {e["path"]: e["class"] for e in report["endpoints"]}


def expected(probe: dict[str, Any]) -> dict[str, str]:
    return {path: BLACK_BOX.get(cls, cls) for path, cls in classes(probe).items()}


def curves(report: dict[str, Any]) -> list[tuple[str, list[tuple[int, float, float | None, bool]]]]:
    """What the assertion shows when the classes differ: each level's throughput, p50, saturation."""
    return [
        (
            e["path"],
            [
                (
                    lv["concurrency"],
                    round(lv["throughput_rps"]),
                    (lv["latency_ms"] or {}).get("p50"),
                    lv["client_saturated"],
                )
                for lv in e["levels"]
            ],
        )
        for e in report["endpoints"]
    ]


@pytest.mark.slow
@pytest.mark.skipif(K6 is None, reason="the k6 wheel is not installed")
@pytest.mark.parametrize(("app_spec", "routes", "levels"), CASES)
def test_locust_and_k6_agree_with_the_probe_on_the_same_app(
    app_spec: str, routes: tuple[str, ...], levels: str, tmp_path: Path
) -> None:
    assert K6 is not None
    probe_path = tmp_path / "probe.json"
    with serve(app_spec) as server:
        endpoints = [arg for route in routes for arg in ("-e", route)]
        cli(
            "probe", server.url, *endpoints, "--levels", levels, "--duration", PROBE_S, "--no-profile",
            "--out", str(probe_path),
        )  # fmt: skip
        probe = json.loads(probe_path.read_text())
        assert "inconclusive" not in classes(probe).values(), curves(probe)

        locustfile, k6_script = tmp_path / "locustfile.py", tmp_path / "load.js"
        for kind, script in (("locust", locustfile), ("k6", k6_script)):
            cli("export", kind, "--report", str(probe_path), "--seconds", STEP_S, "-o", str(script))
        run_locust_distributed(locustfile, tmp_path / "run")
        summary = tmp_path / "summary.json"
        done = subprocess.run(
            [K6, "run", "-q", "--no-usage-report", "--out", f"json={tmp_path / 'k6.json'}",
             "--summary-export", str(summary), str(k6_script)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
            env={**os.environ, "K6_NO_USAGE_REPORT": "true"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]

    ladder = {int(c) for c in levels.split(",")}
    for kind, results in (("locust", tmp_path / "run"), ("k6", tmp_path / "k6.json")):
        report = json.loads(
            cli("import", kind, str(results), "--out", str(tmp_path / f"{kind}.json"), "--json")
        )
        assert report["source"] == kind
        assert report["server"]["workers"] == probe["server"]["workers"] == 1  # carried by the script
        assert report["server"]["local"] is False
        for e in report["endpoints"]:
            # A busy machine may cost the first step a row; the rest of the ladder is there.
            assert {lv["concurrency"] for lv in e["levels"]} <= ladder, curves(report)
            assert len(e["levels"]) >= len(ladder) - 1, curves(report)
            assert all(lv["throughput_rps"] > 0 and lv["server_cpu_cores"] is None for lv in e["levels"])
        assert classes(report) == expected(probe), (kind, curves(report), curves(probe))
        if kind == "locust":
            # Closed loop with no think time: users ~ requests in flight (Little's law within 30%) on
            # the slowest route, where the users never wait for the client.
            for io in (e["levels"] for e in report["endpoints"] if e["path"].startswith("/io")):
                assert all(0.7 < (lv["littles_law_ratio"] or 0) < 1.3 for lv in io), curves(report)
        else:
            # Every request k6 counted is in some level, but for each step's warm-up (its first
            # third: 2 of STEP_S's 6 s).
            sent = json.loads(summary.read_text())["metrics"]["http_reqs"]["count"]
            counted = sum(lv["requests"] for e in report["endpoints"] for lv in e["levels"])
            assert 0.5 * sent < counted <= sent


def _one_route_report(base: str, path: str, rps: float) -> ProbeReport:
    """What a probe of one route would have saved: one worker, `rps` its best throughput."""
    level = dataclasses.replace(_level(1), throughput_rps=rps)
    endpoint = Endpoint("GET", path, base + path, (level,), StopReason.MAX_LEVEL)
    return ProbeReport(
        target=base, host=None, server=ServerInfo(local=True, workers=1), endpoints=(endpoint,)
    )


@pytest.mark.slow
def test_each_locust_step_keeps_its_own_requests(tmp_path: Path) -> None:
    """A route's c=128 step, then the next route's c=1: the first route's last requests (users stop
    100 a second) were read as that route's own c=1 level (70 requests at 3.5 s) and replaced the
    real one, and a top step lost the requests its users were in when they stopped. Each step now
    counts the requests it sent, so every step the generator kept up with holds Little's law: a
    closed loop's throughput x latency is its users."""
    locustfile = tmp_path / "locustfile.py"
    with serve("tests.apps.kinds_app:app") as server:
        report = _one_route_report(server.url, "/io?ms=200", 600.0)
        second = dataclasses.replace(
            report.endpoints[0],
            path="/cpu?ms=5",
            url=server.url + "/cpu?ms=5",
            levels=(dataclasses.replace(_level(1), throughput_rps=50.0),),  # its best: 50 req/s
        )
        report = dataclasses.replace(report, endpoints=(*report.endpoints, second))
        locustfile.write_text(render_locust(spec_from_report(report, levels=(1, 128), seconds=5)))
        run_locust_distributed(locustfile, tmp_path / "run")
    imported = import_locust(tmp_path / "run")
    got = {
        e.path: [(lv.concurrency, lv.requests, lv.littles_law_ratio, lv.client_saturated) for lv in e.levels]
        for e in imported.endpoints
    }
    assert {p: [lv[0] for lv in levels] for p, levels in got.items()} == {
        "/io?ms=200": [1, 128],
        "/cpu?ms=5": [1, 128],
    }, got
    kept_up = [(n, r) for levels in got.values() for n, _, r, saturated in levels if n == 1 or not saturated]
    assert all(r is not None and 0.75 <= r <= 1.33 for _, r in kept_up), got


@pytest.mark.slow
def test_a_locust_out_of_cpu_is_named_and_left_out(tmp_path: Path) -> None:
    """Locust pinned to one CPU that a busy loop shares, driving a trivial route at c=32: it wants
    that CPU all the time (on it or waiting for it). The step is marked client-saturated and is not
    evidence, as the probe's own levels are when its client was the limit; before, an imported level
    never was, and the generator's limit read as the server's."""
    locustfile = tmp_path / "locustfile.py"
    cpu = min(os.sched_getaffinity(0))
    pin = functools.partial(os.sched_setaffinity, 0, {cpu})
    with serve("tests.apps.kinds_app:app", server="gunicorn", workers=2) as server:
        spec = spec_from_report(_one_route_report(server.url, "/io?ms=0", 1000.0), levels=(1, 32), seconds=5)
        locustfile.write_text(render_locust(spec))
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)  # noqa: PLW1509 - pins a child before exec
        try:
            argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"]
            done = subprocess.run(
                [*argv, "--csv", str(tmp_path / "run"), "--loglevel", "WARNING"],
                capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, preexec_fn=pin,
            )  # fmt: skip
        finally:
            hog.kill()
            hog.wait()
        assert done.returncode == 0, done.stderr[-2000:]
    report = classify_report(import_locust(tmp_path / "run"))
    (endpoint,) = report.endpoints
    top = endpoint.levels[-1]
    assert top.concurrency == 32
    assert top.client_saturated, [(lv.concurrency, lv.client_cpu_cores) for lv in endpoint.levels]
    assert endpoint.verdict is not None
    assert endpoint.verdict.evidence.excluded_client_saturated >= 1
