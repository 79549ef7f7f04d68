"""Handing the probe to Locust and k6 and reading their results back: real engines, real server."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from fastapi_tune.core.errors import BadInputError, ExitCode, UsageError
from fastapi_tune.measure.import_load import K6_WORKERS_TAG, import_k6
from fastapi_tune.measure.import_locust import import_locust
from fastapi_tune.measure.report import (
    Endpoint,
    Latency,
    Level,
    ProbeReport,
    ServerInfo,
    StopReason,
    report_from_json,
    report_to_json,
)
from fastapi_tune.render.export_load import (
    ArrivalRate,
    LoadSpec,
    ScriptLadder,
    ScriptObjective,
    drain_seconds,
    header_env_var,
    parse_mix,
    parse_objective,
    render_k6,
    spec_from_report,
)
from fastapi_tune.render.locustfile import ROUTE_PAUSE_S, ladder_steps, render_locust
from tests.servers import free_port

APP = "tests.apps.kinds_app:app"
# The two routes: asyncio.sleep, and Python CPU inside `async def`. Slow enough that Locust
# (about 1 ms of CPU per request) keeps up on a busy 2-core machine: at the top level the I/O route
# needs 100 req/s, the CPU route caps near 65.
IO_URL, CPU_URL = "/io?ms=80", "/cpu?ms=15"
# A short ladder of the shortest steps each importer takes; c=8 is past one worker's serial limit.
LEVELS = (1, 2, 4, 8)
STEP_S = 3.0  # k6
LOCUST_STEP_S = 4.0  # export_load.LOCUST_MIN_STEP_SECONDS: Locust's history has one row a second
RUN_TIMEOUT_S = 120
K6 = shutil.which("k6", path=str(Path(sys.executable).parent)) or shutil.which("k6")


def _level(concurrency: int) -> Level:
    return Level(
        concurrency=concurrency,
        requests=100,
        errors=0,
        errors_by_kind={},
        duration_s=1.0,
        throughput_rps=100.0,
        latency_ms=Latency(p50=10, p90=12, p99=None, max=20, mean=10),
        server_cpu_cores=None,
        server_rss_bytes=None,
        client_cpu_cores=0.01,
        client_saturated=False,
        littles_law_ratio=1.0,
        p99_supported=False,
    )


def probe_report(base: str) -> ProbeReport:
    """What a probe of the kinds app would have saved (its numbers do not matter here)."""
    return ProbeReport(
        target=base,
        host=None,
        server=ServerInfo(local=True),
        endpoints=(
            Endpoint("GET", "/io", base + IO_URL, (_level(1), _level(4)), StopReason.MAX_LEVEL),
            Endpoint("GET", "/cpu", base + CPU_URL, (_level(1), _level(2)), StopReason.SATURATED),
        ),
    )


def ladder_spec(base: str, seconds: float = LOCUST_STEP_S) -> LoadSpec:
    return spec_from_report(probe_report(base), levels=LEVELS, seconds=seconds)


# ---------------------------------------------------------------------------------------
# The spec and the scripts (pure)


def test_spec_from_report_keeps_routes_paths_and_the_probes_levels() -> None:
    spec = spec_from_report(probe_report("http://127.0.0.1:8000"), {"GET /cpu": 3})
    assert spec.base_url == "http://127.0.0.1:8000"
    assert [(e.name, e.path, e.weight) for e in spec.endpoints] == [("GET /cpu", CPU_URL, 3.0)]
    assert spec.pattern == ScriptLadder(levels=(1, 2, 4), seconds=10.0)


@pytest.mark.parametrize(
    ("mix", "kwargs", "message"),
    [
        pytest.param({"GET /nope": 1.0}, {}, "GET /nope", id="unknown-route"),
        pytest.param({"GET /io": 0.0}, {}, "at least one > 0", id="all-zero"),
        pytest.param(None, {"rate": 50.0}, "objective", id="rate-without-objective"),
        pytest.param(None, {"seconds": 1.0}, "at least 3 s", id="short-steps"),
        pytest.param(None, {"levels": [0, 4]}, ">= 1", id="zero-level"),
    ],
)
def test_spec_from_report_refuses_what_cannot_run(
    mix: dict[str, float] | None, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        spec_from_report(probe_report("http://127.0.0.1:1"), mix, **kwargs)  # type: ignore[arg-type]


def test_parse_mix() -> None:
    assert parse_mix("GET /orders/{oid}=8, post /login=1") == {"GET /orders/{oid}": 8.0, "POST /login": 1.0}
    for bad in ("GET /x", "GET /x=lots", "/x=1"):
        with pytest.raises(UsageError, match="--mix"):
            parse_mix(bad)


def test_parse_objective() -> None:
    assert parse_objective("p99<300ms,errors<1%") == ScriptObjective(p99_ms=300, max_error_ratio=0.01)
    assert parse_objective("p99 < 0.5s") == ScriptObjective(p99_ms=500, max_error_ratio=0.01)
    with pytest.raises(UsageError, match="cannot read 'latency fast'"):
        parse_objective("latency fast")
    with pytest.raises(UsageError, match="p95 is not exported"):
        parse_objective("p95<200ms")


def test_scripts_name_header_variables_and_never_hold_a_value() -> None:
    spec = dataclasses.replace(
        ladder_spec("http://127.0.0.1:8000"), header_names=("Authorization", "X-Api-Key")
    )
    for text in (render_locust(spec), render_k6(spec)):
        assert header_env_var("Authorization") == "FASTAPI_TUNE_HEADER_AUTHORIZATION"
        assert "FASTAPI_TUNE_HEADER_AUTHORIZATION" in text
        assert "FASTAPI_TUNE_HEADER_X_API_KEY" in text
        assert "'GET /io'" in text or '"GET /io"' in text
        assert "Bearer" not in text
    compile(render_locust(spec), "locustfile.py", "exec")


def test_locustfile_without_its_header_variable_refuses_to_start(tmp_path: Path) -> None:
    spec = dataclasses.replace(ladder_spec("http://127.0.0.1:8000"), header_names=("Authorization",))
    script = tmp_path / "locustfile.py"
    script.write_text(render_locust(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_TUNE_HEADER_")}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "FASTAPI_TUNE_HEADER_AUTHORIZATION" in done.stderr


@pytest.mark.skipif(K6 is None, reason="the k6 wheel is not installed")
@pytest.mark.parametrize(
    ("pattern", "scenarios", "thresholds"),
    [
        pytest.param(ScriptLadder(LEVELS, STEP_S), ["route_0", "route_1"], False, id="isolated-ladder"),
        pytest.param(ScriptLadder(LEVELS, STEP_S, isolate=False), ["mix"], False, id="mixed-ladder"),
        pytest.param(ArrivalRate(42.5, 30, ScriptObjective(300, 0.01)), ["mix"], True, id="rate-objective"),
    ],
)
def test_k6_accepts_every_exported_script(
    pattern: ScriptLadder | ArrivalRate, scenarios: list[str], thresholds: bool, tmp_path: Path
) -> None:
    script = tmp_path / "load.js"
    spec = dataclasses.replace(
        ladder_spec("http://127.0.0.1:8000"), pattern=pattern, header_names=("Cookie",)
    )
    script.write_text(render_k6(spec))
    assert K6 is not None
    done = subprocess.run(
        [K6, "inspect", "-e", "FASTAPI_TUNE_HEADER_COOKIE=x", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)
    assert sorted(options["scenarios"]) == scenarios
    if thresholds:
        assert options["thresholds"]["http_req_duration"] == ["p(99)<300"]
        assert options["scenarios"]["mix"]["executor"] == "constant-arrival-rate"
        assert options["scenarios"]["mix"]["rate"] == 2550  # 42.5/s given per minute
    else:
        assert all(s["executor"] == "ramping-vus" for s in options["scenarios"].values())


def test_report_source_round_trips_and_old_reports_read_as_probe() -> None:
    report = dataclasses.replace(probe_report("http://127.0.0.1:8000"), source="k6")
    raw = report_to_json(report)
    assert report_from_json(raw, "r.json").source == "k6"
    del raw["source"]
    assert report_from_json(raw, "r.json").source == "probe"
    with pytest.raises(BadInputError, match="source"):
        report_from_json({**raw, "source": "jmeter"}, "r.json")


# ---------------------------------------------------------------------------------------
# Bad input: one line naming the file and what was expected, exit 3

HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
    "Total Min Response Time,Total Max Response Time,Total Average Content Size"
)


def _history_row(ts: int, users: int, name: str, total: int, p50: str = "22") -> str:
    return (
        f"{ts},{users},GET,{name},0,0,{p50},{p50},{p50},{p50},25,26,27,28,29,29,30,{total},0,22,22.0,20,30,10"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "Type,Name,Request Count,Failure Count\nGET,/x,10,0\n",
            "missing columns: Timestamp",
            id="stats-csv",
        ),
        pytest.param("\x00\x01garbage", "missing columns", id="garbage"),
        pytest.param(
            f"{HISTORY_HEADER}\n{_history_row(1, 1, 'GET /x', 5, p50='fast')}\n", "'50%'", id="bad-cell"
        ),
        pytest.param(
            f"{HISTORY_HEADER}\n{_history_row(1, 1, 'Aggregated', 5)}\n",
            "--csv-full-history",
            id="no-history",
        ),
        pytest.param(
            f"{HISTORY_HEADER}\n"
            + "\n".join(_history_row(t, t, "GET /x", t * 9) for t in range(1, 6))
            + "\n",
            "no steady step",
            id="only-ramps",
        ),
    ],
)
def test_import_locust_refuses_other_files(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "run_stats_history.csv"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message) as caught:
        import_locust(tmp_path / "run")
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_import_locust_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"run_stats_history\.csv: not found"):
        import_locust(tmp_path / "run")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param(["not json"], "line 1: expected k6's JSON output", id="not-json"),
        pytest.param(['{"type":"Point","metric":"http_req_duration"}'], "line 1: expected a Point", id="no-data"),  # noqa: E501
        pytest.param(['{"metrics": {}}'], "expected a k6 Metric or Point", id="summary-export"),
        pytest.param(
            ['{"type":"Point","metric":"http_req_duration","data":{"time":"2026-01-01T00:00:00Z","value":3,'
             '"tags":{"name":"GET /x"}}}'],
            "no http_req_duration points tagged with name and vus",
            id="not-an-exported-ladder",
        ),
    ],
)  # fmt: skip
def test_import_k6_refuses_other_files(lines: Sequence[str], message: str, tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=message) as caught:
        import_k6(path)
    assert str(path) in str(caught.value)
    assert caught.value.exit_code == ExitCode.BAD_INPUT


# ---------------------------------------------------------------------------------------
# The exported ladder's own results (issue 23, item 5): steps named, windows, the generator's CPU

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
    "99.99%,100%"
)


def _stats_row(name: str, count: int, failures: int = 0, p50: int = 100) -> str:
    return f"GET,{name},{count},{failures},{p50},{p50},{p50},{p50 * 2},17,1.0,0.0," + ",".join(
        [str(p50)] * 5 + [str(p50 * 2)] * 6
    )


def _results(steps: list[dict[str, object]], workers: int | None = 1) -> str:
    return json.dumps({"format": 1, "warmup_s": 2, "server_workers": workers, "steps": steps})


def _window(counted: float, cpu: float, requests: int) -> dict[str, float]:
    return {"counted_s": counted, "cpu_s": cpu, "requests": requests}


def _step(users: int, *windows: object, route: str = "GET /io") -> dict[str, object]:
    return {"index": 0, "users": users, "seconds": 6, "routes": [route], "windows": list(windows)}


def test_import_locust_reads_each_step_by_its_name(tmp_path: Path) -> None:
    (tmp_path / "run_fastapi_tune.json").write_text(
        _results([
            _step(1, _window(4.0, 0.1, 40), _window(4.0, 0.05, 0)),
            _step(8, _window(4.0, 3.9, 160), _window(3.0, 0.2, 120)),
        ])
    )  # fmt: skip
    (tmp_path / "run_stats.csv").write_text(
        "\n".join([
            STATS_HEADER,
            _stats_row("GET /io @1", 40),
            _stats_row("GET /io @1 warm-up", 20),
            _stats_row("GET /io @8", 280, failures=7),
            _stats_row("GET /io stopping", 99, p50=3500),  # a route's last requests: never a level
            _stats_row("GET /other @1", 5),  # not a step of this run
        ])
        + "\n"
    )  # fmt: skip
    (tmp_path / "run_failures.csv").write_text(
        "Method,Name,Error,Occurrences\nGET,GET /io @8,\"BadStatusCode('http://x/io', code=503)\",7\n"
    )
    report = import_locust(tmp_path / "run_stats.csv")  # any of the run's files names the run
    assert report.server.workers == 1  # the probe's, as the script was exported with it
    (endpoint,) = report.endpoints
    one, eight = endpoint.levels
    assert (one.concurrency, one.requests, one.duration_s, one.throughput_rps) == (1, 40, 4.0, 10.0)
    assert not one.client_saturated
    # Two generators with windows of 4 s and 3 s: the rate is theirs summed, 40 + 40 req/s.
    assert eight.throughput_rps == pytest.approx((280 - 7) / 280 * 80)
    assert eight.errors_by_kind == {"5xx": 7}
    assert eight.client_saturated  # one generator wanted 0.975 of a core
    assert eight.client_cpu_cores == pytest.approx(0.975 + 0.2 / 3, abs=0.001)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        pytest.param("{", "expected the results file", id="not-json"),
        pytest.param(json.dumps({"format": 9, "steps": []}), "format 1", id="other-format"),
        pytest.param(_results([_step(0)]), r"steps\[0\]\.users", id="users"),
        pytest.param(
            _results([_step(1, {"counted_s": -1, "cpu_s": 0})]),
            r"windows\[0\]: expected counted_s > 0",
            id="window",
        ),
        pytest.param(_results([_step(1, _window(4, 0.1, 3))]), "no requests named", id="no-rows"),
    ],
)  # fmt: skip
def test_import_locust_refuses_a_broken_results_file(results: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "run_fastapi_tune.json").write_text(results)
    (tmp_path / "run_stats.csv").write_text(STATS_HEADER + "\n")
    with pytest.raises(BadInputError, match=message) as caught:
        import_locust(tmp_path / "run")
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_the_locustfile_names_steps_drains_and_carries_the_workers() -> None:
    report = dataclasses.replace(
        probe_report("http://127.0.0.1:8000"), server=ServerInfo(local=True, workers=3)
    )
    spec = spec_from_report(report, levels=(1, 64), seconds=6)
    text = render_locust(spec)
    compile(text, "locustfile.py", "exec")
    assert "class Route0(FastHttpUser):" in text
    assert "name=step_name('GET /io')" in text
    assert "SERVER_WORKERS = 3" in text
    # Each route: its levels, a drain holding the top level uncounted, a pause; the last pause too.
    assert ladder_steps(spec, spec.pattern) == [  # type: ignore[arg-type]
        (0, 1, 6, True), (0, 64, 6, True), (0, 64, 2.0, False), (0, 0, ROUTE_PAUSE_S, False),
        (1, 1, 6, True), (1, 64, 6, True), (1, 64, 2.0, False), (1, 0, ROUTE_PAUSE_S, False),
    ]  # fmt: skip
    assert f'tags: {{ {K6_WORKERS_TAG}: "3" }}' in render_k6(spec)


@pytest.mark.parametrize(
    ("users", "best_rps", "drain"),
    [
        pytest.param(64, 100.0, 2.0, id="fast-route-floor"),
        pytest.param(128, 20.0, 9.6, id="slow-route-little"),
        pytest.param(128, 0.0, 60.0, id="never-answered"),
        pytest.param(4096, 1.0, 60.0, id="cap"),
    ],
)
def test_a_routes_drain_outlasts_its_slowest_requests(users: int, best_rps: float, drain: float) -> None:
    assert drain_seconds(users, best_rps) == drain


def test_import_k6_reads_the_workers_the_script_was_exported_with(tmp_path: Path) -> None:
    lines = [
        json.dumps({"type": "Point", "metric": "http_req_duration", "data": {
            "time": f"2026-01-01T00:00:0{i}.000000000Z", "value": 10.0,
            "tags": {"name": "GET /x", "vus": "4", "status": "200", K6_WORKERS_TAG: "2"}}})
        for i in range(6)
    ]  # fmt: skip
    (tmp_path / "out.json").write_text("\n".join(lines) + "\n")
    assert import_k6(tmp_path / "out.json").server.workers == 2


# ---------------------------------------------------------------------------------------
# Real engines against a real server


@contextmanager
def _processes(commands: Sequence[Sequence[str]], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every command (output to logs/N.log); kill the ones still running on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for i, cmd in enumerate(commands):
            with (logs / f"{i}.log").open("wb") as log:
                started.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_locust_distributed(locustfile: Path, prefix: Path) -> None:
    """One headless master expecting two workers, all on loopback, as the file's comment says."""
    port = str(free_port())
    base = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", "WARNING"]
    master = [
        *base, "--headless", "--master", "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
        "--master-bind-port", port, "--csv", str(prefix), "--csv-full-history",
    ]  # fmt: skip
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    with _processes([master, worker, worker], prefix.parent) as (m, *workers):
        assert m.wait(timeout=RUN_TIMEOUT_S) == 0, (prefix.parent / "0.log").read_text()[-2000:]
        for w in workers:
            w.wait(timeout=30)
