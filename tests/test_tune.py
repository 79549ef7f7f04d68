"""`fastapi-tune tune APP` as a new user runs it on an app of their own: start it, probe, plan, write
the files, stop it; and what it says when the app does not start or the run is stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.plan.model import MIN_PLAN_CONFIDENCE
from tests.servers import REPO

OWN_APP = REPO / "tests" / "apps" / "own_app"


def tune(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        [
            "tune",
            *args,
            "--out",
            str(tmp_path / "gunicorn.conf.py"),
            "--report",
            str(tmp_path / "probe.json"),
        ],
        env={"FASTAPI_TUNE_CPUS": "", "FASTAPI_TUNE_MEMORY": ""},
    )
    return result.exit_code, result.stdout, result.stderr


def own_app_servers() -> set[int]:
    """This test's descendants serving the own app (other work on the machine is not ours)."""
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "main:app" in p.cmdline():
                pids.add(p.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def io_route_is_sure(report: dict[str, Any], path: str) -> bool:
    verdict = next(e["verdict"] for e in report["endpoints"] if e["path"] == path)
    return bool(verdict["class"] == "io-bound" and verdict["confidence"] >= MIN_PLAN_CONFIDENCE)


@pytest.mark.slow
def test_tune_kubernetes_end_to_end(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    code, stdout, stderr = tune(
        tmp_path,
        "main:app",
        "--app-dir", str(OWN_APP), "--profile", "kubernetes", "--cpus", "1", "--memory", "512M",
        "--target-rps", "300", "--deploy", str(deploy), "--max-seconds", "20", "--yes", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    result = json.loads(stdout)
    assert {e["path"] for e in result["report"]["endpoints"]} == {"/items", "/digest"}
    assert result["app_env"]["uvicorn"] is not None
    plan = result["plan"]
    assert plan["workers"] == 1
    assert any(s["name"] == "control_socket_disable" for s in plan["settings"])

    conf = tmp_path / "gunicorn.conf.py"
    check = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", str(conf)],
        cwd=OWN_APP, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    deployment = yaml.safe_load((deploy / "deployment.yaml").read_text())
    hpa = yaml.safe_load((deploy / "hpa.yaml").read_text())
    replicas = plan["replicas"]
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == replicas["replicas"]
    assert c["resources"]["requests"]["cpu"] == f"{replicas['cpu_request_milli']}m"
    assert c["resources"]["requests"]["memory"] == f"{replicas['memory_request_mib']}Mi"
    assert c["resources"]["limits"] == {"cpu": "1000m", "memory": "512Mi"}
    graceful = next(s["value"] for s in plan["settings"] if s["name"] == "graceful_timeout")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > graceful
    if io_route_is_sure(result["report"], "/items"):
        assert c["readinessProbe"]["httpGet"]["path"] == "/items"
    else:  # a busy machine left the io route unsure: then no route is trusted as a health check
        assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"] == "own-app"
    assert hpa["spec"]["maxReplicas"] >= replicas["replicas"]
    cmd = [line for line in (deploy / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert json.loads(cmd[0].removeprefix("CMD ")) == ["gunicorn", "-c", "gunicorn.conf.py"]

    assert json.loads((tmp_path / "probe.json").read_text())["interrupted"] is False
    assert own_app_servers() == set()


def test_an_app_that_does_not_import_says_why_in_one_line(tmp_path: Path) -> None:
    code, _, stderr = tune(tmp_path, "nosuch:app", "--app-dir", str(tmp_path), "--yes")
    assert code == ExitCode.SERVER_FAILED
    lines = stderr.strip().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    first = lines[at]
    assert first.startswith("error: nosuch:app did not start (")
    assert "nosuch" in first
    assert "--app-dir" in first
    assert "--python" in first
    assert 'Could not import module "nosuch"' in "\n".join(lines[at + 1 :])  # uvicorn's own words follow
    assert own_app_servers() == set()


def test_a_python_that_does_not_run_is_a_usage_error(tmp_path: Path) -> None:
    code, _, stderr = tune(tmp_path, "main:app", "--python", str(tmp_path / "nope"), "--yes")
    assert code == ExitCode.USAGE
    assert "--python" in stderr


def test_existing_files_are_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\n")
    code, _, stderr = tune(tmp_path, "main:app", "--app-dir", str(OWN_APP))
    assert code == ExitCode.REFUSED
    assert "--yes" in stderr
    assert not (tmp_path / "probe.json").exists()  # nothing was measured
    assert (tmp_path / "gunicorn.conf.py").read_text() == "workers = 3\n"


def test_sizing_a_container_from_this_host_warns(tmp_path: Path) -> None:
    code, _, stderr = tune(
        tmp_path, "nosuch:app", "--app-dir", str(tmp_path), "--profile", "container", "--yes"
    )
    assert code == ExitCode.SERVER_FAILED
    if "quota" not in stderr:  # where this test runs in a limited container, nothing to warn about
        assert "warning: profile container sizes a container" in stderr.replace("\n", " ")


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_sigterm_stops_the_app_and_keeps_the_report(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-c", "from fastapi_tune.entry import main; main()", "tune", "main:app",
        "--app-dir", str(OWN_APP), "--yes", "--report", str(tmp_path / "probe.json"),
        "--out", str(tmp_path / "gunicorn.conf.py"), "--max-seconds", "30",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_TUNE_")}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    port = None
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if match := re.search(r"answers on http://127\.0\.0\.1:(\d+)", line):
            port = int(match.group(1))
    assert port is not None, "tune never started the app"
    time.sleep(2)  # inside the probe now
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, rest
    assert "interrupted" in rest
    assert _refused(port), "the app tune started is still listening"
    assert json.loads((tmp_path / "probe.json").read_text())["interrupted"] is True
    assert not (tmp_path / "gunicorn.conf.py").exists()  # no plan from half a probe
