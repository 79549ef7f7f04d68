"""demo end to end: serve the sample app, probe it, classify its four routes, write a config, stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from tests.servers import REPO

SAMPLE_MODULE = "fastapi_tune.sample_app"


def own_sample_servers() -> set[int]:
    """This test's own descendants serving the sample app: other work on the machine is not ours."""
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(SAMPLE_MODULE in part for part in p.cmdline()):
                pids.add(p.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


@pytest.mark.slow
def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 40 s of budget: the probe splits it evenly between the routes and the two 100 ms routes
    # need c=64 (past AnyIO's 40 threads) to tell threadpool-bound from io-bound; the probe
    # itself finishes in about 17 s because the other two routes saturate early.
    result = CliRunner().invoke(app, ["demo", "--dir", str(out), "--max-seconds", "40"])
    assert result.exit_code == 0, result.stderr

    report_path = out / "fastapi-tune-probe.json"
    conf = out / "gunicorn.conf.py"
    assert report_path.is_file()
    assert conf.is_file()
    report = json.loads(report_path.read_text())
    classes = {e["path"]: e["class"] for e in report["endpoints"]}
    assert set(classes) == {"/orders/{order_id}", "/report", "/inventory", "/score"}, classes
    assert set(classes.values()) == {"io-bound", "threadpool-bound", "loop-blocking", "cpu-bound"}, classes
    assert report["interrupted"] is False
    # Every route of the sample app degrades gracefully: no collapse, and no cap written.
    assert report["overload"]["verdict"]["behaviour"] in ("holds", "degrades"), report["overload"]
    assert not (out / "asgi_admission.py").exists()
    assert "post_worker_init" not in conf.read_text()

    check = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", str(conf)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # The demo ran in this process: the server it started was its child, and it is gone.
    assert report["server"]["pid"] not in own_sample_servers()
    assert own_sample_servers() == set()
