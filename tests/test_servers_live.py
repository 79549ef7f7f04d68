"""Real gunicorn, uvicorn and Granian on loopback: each server's recommended command boots and serves with
the planned values (workers, keep-alive, the cap after a collapse); verify --servers compares them; a
Python without Granian gets the line that says how to install it."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.observe import find_server
from fastapi_tune.measure.report import EndpointClass, ProbeReport, report_to_json
from fastapi_tune.plan.server_model import Server
from tests.servers import REPO
from tests.test_plan import cpu_report, make_endpoint, make_level, make_report
from tests.test_verify import run_cli

APP = "tests.apps.kinds_app:app"
READY = "/io?ms=1"
KEEPALIVE_S = 2
# vm's policy with a short keep-alive (so its effect shows in seconds) and, for the cap, one worker.
PROFILE = """
description: "test: {workers}"
bind: "127.0.0.1:8000"
workers: {{per_cpu: 1.0, min: {low}, max: 16, fixed: {fixed}}}
memory_headroom: 0.25
assumed_worker_rss_mib: 150
timeout: {{factor: 3.0, min: 30, max: 120}}
graceful_timeout: 10
stop_grace_period: null
keepalive: {keepalive}
behind_load_balancer: false
lb_idle_timeout: null
max_requests: 10000
max_requests_jitter: 1000
access_log: null
backlog: 2048
worker_class: uvicorn-worker
preload: allow
"""


def _profile(where: Path, workers: int) -> Path:
    path = where / f"w{workers}.yaml"
    fixed = workers if workers == 1 else "null"
    path.write_text(
        PROFILE.format(workers=workers, low=workers, fixed=fixed, keepalive=KEEPALIVE_S), encoding="utf-8"
    )
    return path


def _report_file(where: Path, report: ProbeReport) -> Path:
    path = where / "report.json"
    path.write_text(json.dumps(report_to_json(report)), encoding="utf-8")
    return path


def _stalling_report() -> ProbeReport:
    """Served cleanly at 2 in flight on one worker, stalled at 4: the plan caps each worker at 2."""
    clean = [make_level(c, c / 0.02, 25.0, cpu=0.3) for c in (1, 2)]
    stalled = dataclasses.replace(make_level(4, 0.0, 25.0, cpu=0.01), stalled=True, requests=0)
    return make_report([make_endpoint("/io", EndpointClass.STALLED, [*clean, stalled])])


def _recommend(where: Path, server: Server, profile: Path, report: ProbeReport) -> Path:
    out = where / ("gunicorn.conf.py" if server is Server.GUNICORN else f"run-{server}.sh")
    r = run_cli(
        "recommend", "--app", APP, "--server", server.value, "--profile", str(profile),
        "--probe", str(_report_file(where, report)), "--cpus", "2", "--memory", "4G",
        "--out", str(out), "--yes", "--json",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    return out


def _argv(server: Server, written: Path) -> list[str]:
    """The written file as a user runs it: gunicorn -c CONF, or sh run-SERVER.sh."""
    if server is Server.GUNICORN:
        return [sys.executable, "-m", "gunicorn", "-c", str(written), "--no-control-socket"]
    return ["sh", str(written)]


def _env(port: int) -> dict[str, str]:
    # The scripts run `granian` / `uvicorn` from PATH: this environment's, as the app's would be.
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "PYTHONPATH": str(REPO),
        "PORT": str(port),
        "BIND": f"127.0.0.1:{port}",
    }


def _get(sock: socket.socket) -> bytes:
    """One request on a keep-alive connection and its whole response (headers and body may come apart)."""
    sock.sendall(b"GET /io?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _seconds_until_closed(port: int, limit_s: float) -> float:
    """Send one request on a keep-alive connection, then time how long the server keeps it idle."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert _get(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(limit_s)
        try:
            data = sock.recv(100)
        except TimeoutError:
            return limit_s
        assert data == b""
        return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("server", list(Server))
def test_recommended_command_boots_with_the_planned_workers_and_keepalive(
    server: Server, tmp_path: Path
) -> None:
    written = _recommend(tmp_path, server, _profile(tmp_path, 2), cpu_report())
    port = free_port()
    with run_server(
        _argv(server, written), port, ready_path=READY, workers=2, cwd=REPO, env=_env(port), name=server
    ):
        found = find_server(port)
        assert found.kind == server.value
        assert found.workers == 2
        idle = _seconds_until_closed(port, 4 * KEEPALIVE_S)
    # The planned keep-alive, not the server's default (gunicorn 2 s is close: uvicorn's 5, Granian's 30
    # are not); generous bounds for a busy machine.
    assert KEEPALIVE_S * 0.5 <= idle < KEEPALIVE_S * 2.5


@pytest.mark.slow
@pytest.mark.parametrize("server", [Server.UVICORN, Server.GRANIAN])
def test_a_collapse_in_the_probe_caps_connections_per_worker(server: Server, tmp_path: Path) -> None:
    """Cap 2 (served at 2, stalled at 4): uvicorn answers a third connection 503 at once, Granian does
    not accept it until one of the first two closes."""
    written = _recommend(tmp_path, server, _profile(tmp_path, 1), _stalling_report())
    planned = {Server.UVICORN: "--limit-concurrency 3", Server.GRANIAN: "--backpressure 2"}[server]
    assert planned in written.read_text(encoding="utf-8")
    port = free_port()
    with run_server(_argv(server, written), port, ready_path=READY, cwd=REPO, env=_env(port), name=server):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            for sock in held:
                assert _get(sock).startswith(b"HTTP/1.1 200")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
                third.settimeout(1.5)
                if server is Server.UVICORN:
                    assert _get(third).startswith(b"HTTP/1.1 503")
                else:
                    third.sendall(b"GET /io?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n")
                    with pytest.raises(TimeoutError):
                        third.recv(4096)
                    held.pop().close()
                    third.settimeout(10)
                    assert third.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()


@pytest.mark.slow
def test_verify_servers_compares_them_in_one_table(tmp_path: Path) -> None:
    r = run_cli(
        "verify", APP, "-e", "GET /io?ms=5", "-e", "GET /cpu?ms=2", "--servers", "gunicorn,uvicorn,granian",
        "--duration", "0.5", "--concurrency", "8", "--repeat", "2", "--json",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert [run["server"] for run in data["runs"]] == ["gunicorn", "uvicorn", "granian"]
    for run in data["runs"]:
        assert run["workers"] == 2  # this host's 2 CPUs, the vm profile: the same plan for each
        assert run["requests"] > 0
        assert run["errors"] == 0
        assert run["rss_mib"] > 20
        assert run["boot_s"] > 0
        assert len(run["throughput_rps_rounds"]) == 2
        assert "--max-requests" not in run["command"]
        assert "--workers-lifetime" not in run["command"]
    assert data["basis"] == "throughput"
    assert data["verdict"]
    assert data["best"] in (None, "gunicorn", "uvicorn", "granian")
    assert data["best"] is not None or data["tied_within_noise"]
    assert all(s["score"] > 0 for s in data["scores"])


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real Python environment without Granian (nor anything else): a fresh venv."""
    where = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = str(where / "bin" / "python")
    found = subprocess.run([python, "-c", "import granian"], capture_output=True, check=False, timeout=60)
    assert found.returncode != 0
    return python


def test_missing_granian_says_how_to_install_it(bare_python: str) -> None:
    r = run_cli("verify", APP, "-e", "GET /io", "--servers", "granian", "--python", bare_python)
    assert r.code == 6
    assert r.stderr.count("\n") <= 2
    assert f"{bare_python} -m pip install 'granian>=2.8'" in r.stderr
    assert "fastapi-tune[granian]" in r.stderr


def test_recommend_for_a_missing_granian_still_plans_and_says_so(bare_python: str, tmp_path: Path) -> None:
    out = tmp_path / "run-granian.sh"
    r = run_cli(
        "recommend", "--server", "granian", "--python", bare_python, "--out", str(out), "--yes", "--json"
    )
    assert r.code == 0, r.stderr
    server = json.loads(r.stdout)["server"]
    assert server["installed"] is False
    assert any("fastapi-tune[granian]" in n for n in server["notes"])
    assert os.access(out, os.X_OK)
