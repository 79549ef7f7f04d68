"""verify end to end: a generated gunicorn.conf.py run for real by gunicorn, driven through the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.verify.run import Run, judge
from tests.servers import REPO, serve

SAMPLE = "fastapi_tune.sample_app:app"
# Short runs: each configuration boots gunicorn, warms up for 1 s, then counts for 0.5 s.
QUICK = ["--duration", "0.5", "--concurrency", "8", "--repeat", "1"]
FIRST_THREE = ["recommended", "rule-of-thumb", "single-worker"]


@dataclass(frozen=True)
class Invoked:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def run_cli(*args: str, env: dict[str, str] | None = None) -> Invoked:
    result = CliRunner().invoke(app, list(args), env=env)
    return Invoked(result.exit_code, result.stdout, result.stderr, result.exception)


@dataclass(frozen=True)
class Generated:
    path: Path
    workers: int  # what the plan chose (the config's own worker count)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """A config from `recommend` without a probe report (host facts only)."""
    where = tmp_path_factory.mktemp("recommend")
    conf = where / "gunicorn.conf.py"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)  # so no ./fastapi-tune-probe.json of someone else's is picked up
        r = run_cli("recommend", "--app", SAMPLE, "--yes", "--out", str(conf), "--json")
    assert r.code == 0, r.stderr
    return Generated(conf, json.loads(r.stdout)["workers"])


@pytest.fixture
def conf(generated: Generated, tmp_path: Path) -> Path:
    """This test's own copy, so its path (searched for in process command lines) is unique."""
    return Path(shutil.copy(generated.path, tmp_path / "gunicorn.conf.py"))


def logical_cpus(env: dict[str, str] | None = None) -> int:
    r = run_cli("host", "--json", env=env)
    assert r.code == 0, r.stderr
    logical: int = json.loads(r.stdout)["cpu"]["logical"]
    return logical


def processes_mentioning(needle: str) -> list[psutil.Process]:
    """Live processes (not this one) with `needle` in their command line."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.pid == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(needle in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


def check_run(run: dict[str, Any]) -> None:
    """What every run of a clean, short verify must show."""
    assert run["workers"] >= 1
    assert run["requests"] > 0
    assert run["throughput_rps"] > 0
    assert run["errors"] == 0
    assert run["rss_mib"] > 0
    lat = run["latency_ms"]
    assert set(lat) == {"p50", "p99"}
    assert lat["p50"] > 0
    # p99 is only reported with enough samples to support it (200); then it is at least p50.
    assert (lat["p99"] is None) == (run["requests"] < 200)
    if lat["p99"] is not None:
        assert lat["p99"] >= lat["p50"]


@pytest.fixture(scope="module")
def swept(generated: Generated, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One --sweep run with 1 effective CPU (sweep-1, sweep-2) and a WEB_CONCURRENCY that must be ignored."""
    conf = Path(shutil.copy(generated.path, tmp_path_factory.mktemp("sweep") / "gunicorn.conf.py"))
    env = {"FASTAPI_TUNE_CPUS": "1", "WEB_CONCURRENCY": "4"}
    r = run_cli("verify", SAMPLE, "-c", str(conf), "-e", "GET /score", *QUICK, "--sweep", "--json", env=env)
    assert r.code == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)  # --json: the document and nothing else on stdout
    assert not processes_mentioning(str(conf))
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Runs by every name they stand for (a run measured once for several configurations)."""
    return {name: r for r in data["runs"] for name in (r["label"], *r["same_as"])}


@pytest.mark.slow
def test_runs_are_the_documented_ones_in_order(swept: dict[str, Any], generated: Generated) -> None:
    names = [name for r in swept["runs"] for name in (r["label"], *r["same_as"])]
    assert sorted(names) == sorted([*FIRST_THREE, "sweep-1", "sweep-2"])
    assert [r["label"] for r in swept["runs"]][:2] == FIRST_THREE[:2]
    for run in swept["runs"]:
        check_run(run)
    # Each worker count is measured once, under all its names.
    assert len({r["workers"] for r in swept["runs"]}) == len(swept["runs"])
    runs = by_name(swept)
    # WEB_CONCURRENCY=4 was set, yet the recommended run used the config's own count.
    assert runs["recommended"]["workers"] == generated.workers != 4
    assert runs["rule-of-thumb"]["workers"] == 2 * logical_cpus() + 1
    assert runs["single-worker"]["workers"] == 1
    assert runs["sweep-1"] is runs["single-worker"]
    assert swept["worker_recycling"].startswith("off")
    assert swept["endpoints"] == ["GET /score"]
    assert (swept["concurrency"], swept["duration_s"], swept["interrupted"]) == (8, 0.5, False)


@pytest.mark.slow
def test_sweep_counts_up_to_twice_the_effective_cpus(swept: dict[str, Any]) -> None:
    top = math.ceil(2 * 1)  # FASTAPI_TUNE_CPUS=1
    runs = by_name(swept)
    assert [runs[f"sweep-{n}"]["workers"] for n in range(1, top + 1)] == list(range(1, top + 1))


@pytest.mark.slow
def test_verdict_compares_with_the_best_and_the_rule_of_thumb(swept: dict[str, Any]) -> None:
    runs = by_name(swept)
    best = max(swept["runs"], key=lambda r: r["throughput_rps"])
    assert swept["best"] is None  # one round: no noise measured, so no best is named
    assert "no noise was measured" in swept["verdict"]
    rec, rule = runs["recommended"], runs["rule-of-thumb"]
    assert swept["recommended_vs_best"] == pytest.approx(
        rec["throughput_rps"] / best["throughput_rps"], rel=1e-3
    )
    assert swept["recommended_memory_vs_rule_of_thumb"] == pytest.approx(
        rec["rss_mib"] / rule["rss_mib"], rel=1e-3
    )
    # More worker processes hold more memory: 2 workers against 2 x logical + 1 >= 3.
    assert swept["recommended_memory_vs_rule_of_thumb"] < 1.0
    assert swept["verdict"].startswith(f"recommended ({rec['workers']} workers)")


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small probe report of two sample routes, one with a path parameter: enough levels for a
    verdict, since verify drives only the endpoints that were clean in the probe."""
    out = tmp_path_factory.mktemp("probe") / "report.json"
    with serve(SAMPLE) as s:
        r = run_cli(
            "probe", s.url, "--levels", "1,2,4,8", "--duration", "0.3", "--no-profile", "-e", "GET /score",
            "-e", "GET /orders/{order_id}", "--out", str(out),
        )  # fmt: skip
    assert r.code == 0, r.stderr
    return out


@pytest.mark.slow
def test_probe_report_endpoints_are_mixed(sample_report: Path, conf: Path) -> None:
    r = run_cli(
        "verify", SAMPLE, "-c", str(conf), "--probe", str(sample_report), *QUICK, "--repeat", "2", "--json"
    )
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    # Two interleaved rounds per configuration; the table's figure is their median.
    assert data["repeat"] == 2
    for run in data["runs"]:
        rounds = run["throughput_rps_rounds"]
        assert len(rounds) == 2
        assert run["throughput_rps"] == pytest.approx(sum(rounds) / 2, abs=0.1)
    # The report's URLs pointed at the probed server; verify kept their concrete paths only.
    assert data["endpoints"] == ["GET /score", "GET /orders/1"]
    assert [run["label"] for run in data["runs"]] == FIRST_THREE  # no sweep without --sweep
    for run in data["runs"]:
        check_run(run)
    assert not processes_mentioning(str(conf))


BAD_CONFIG = "workers = 2\nthis is not python(\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("app_module", "config_text", "needle"),
    [
        pytest.param(SAMPLE, BAD_CONFIG, "SyntaxError", id="config-syntax-error"),
        pytest.param("no_such_module:app", None, "Worker failed to boot", id="app-module-missing"),
    ],
)
def test_server_that_cannot_boot_is_one_error(
    app_module: str, config_text: str | None, needle: str, conf: Path
) -> None:
    if config_text is not None:
        conf.write_text(config_text)
    started = time.monotonic()
    r = run_cli("verify", app_module, "-c", str(conf), "-e", "GET /score", *QUICK, "--json")
    assert r.code == ExitCode.SERVER_FAILED, r.stderr
    assert isinstance(r.exception, SystemExit)  # our error line, not an escaped exception
    assert "error: gunicorn" in r.stderr
    assert needle in r.stderr  # gunicorn's own words
    assert "fastapi_tune/" not in r.stderr  # no traceback of ours
    assert r.stdout == ""
    assert time.monotonic() - started < 30
    assert not processes_mentioning(str(conf))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["-c", "{missing}", "-e", "GET /score"], "no such config file", id="missing-config"),
        pytest.param(["-c", "{conf}"], "-e 'GET", id="nothing-to-drive"),
        pytest.param(["-c", "{conf}", "-e", "GET /orders/{order_id}"], "concrete", id="template-path"),
        pytest.param(["-c", "{conf}", "-e", "GET /score", "--concurrency", "0"], "--concurrency", id="c0"),
    ],
)
def test_usage_errors(
    args: list[str], needle: str, conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./fastapi-tune-probe.json here
    filled = [
        a.replace("{missing}", str(tmp_path / "nope.conf.py")).replace("{conf}", str(conf)) for a in args
    ]
    r = run_cli("verify", SAMPLE, *QUICK, *filled)  # the case's own options win
    assert r.code == ExitCode.USAGE, r.stderr
    assert needle in r.stderr
    assert r.stdout == ""
    assert not processes_mentioning(str(conf))


def wait_for_workers(conf: Path, count: int, timeout_s: float) -> None:
    """Until a gunicorn master started with `conf` has `count` workers (forked: same command line)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in processes_mentioning(str(conf)):
            try:
                if "--bind" in p.info["cmdline"] and len(p.children()) >= count:
                    return
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no gunicorn with {count} workers for {conf} within {timeout_s} s")


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_exits_130(conf: Path, generated: Generated, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastapi_tune", "verify", SAMPLE, "-c", str(conf), "-e", "GET /score",
         "--duration", "30", "--concurrency", "8", "--json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for_workers(conf, generated.workers, timeout_s=30)
        time.sleep(1.5)  # into the first run's load
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert waited < 10, waited  # far less than the 30 s the run would have taken
    assert "interrupted" in stderr
    data = json.loads(stdout)
    assert data["interrupted"] is True
    assert data["runs"] == []  # the run cut short is not reported as if it were complete
    assert not processes_mentioning(str(conf))


def _run(label: str, workers: int, rps: float, p99: float | None, rss: float, errors: int = 0) -> Run:
    return Run(label, workers, 1000, errors, rps, 200.0, p99, rss, 1.9, 0.05, (rps,))


@pytest.mark.parametrize(
    ("runs", "best", "ratio", "mentions", "absent"),
    [
        pytest.param(
            [_run("recommended", 2, 222, 3157, 93), _run("rule-of-thumb", 5, 206, 1850, 232)],
            "recommended",
            1.0,
            ["93 MiB recommended", "p99 is 3157 ms vs 1850 ms"],
            [],
            id="worse-tail-is-said",
        ),
        pytest.param(
            [_run("recommended", 2, 200, 1900, 93), _run("sweep-3", 3, 220, 1800, 139)],
            "sweep-3",
            200 / 220,
            ["91% of the highest (sweep-3"],
            ["p99 is"],
            id="a-better-sweep-run",
        ),
        pytest.param(
            [_run("recommended", 2, 300, None, 93, errors=50), _run("single-worker", 1, 100, None, 46)],
            "single-worker",
            None,
            ["failed 50 of 1000 (5.0%)", "not comparable"],
            [],
            id="errors-disqualify-the-best",
        ),
    ],
)
def test_judge(
    runs: list[Run], best: str, ratio: float | None, mentions: list[str], absent: list[str]
) -> None:
    verdict = judge(runs)
    assert verdict is not None
    assert verdict.best.label == best
    assert verdict.ratio_to_best == (None if ratio is None else pytest.approx(ratio))
    for text in mentions:
        assert text in verdict.line
    for text in absent:
        assert text not in verdict.line
