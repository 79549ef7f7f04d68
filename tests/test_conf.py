"""gunicorn.conf.py rendering: golden files, gunicorn --check-config, a live start, file writes.

Regenerate the golden files after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_conf.py
and review the diff like code.
"""

from __future__ import annotations

import json
import os
import runpy
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fastapi_tune.core.errors import RefusedError
from fastapi_tune.core.fileio import atomic_write, backup_path, write_with_backup
from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.plan.model import DEPRECATED_WORKER, Plan
from fastapi_tune.render.commands import flag_per_line, gunicorn_argv
from fastapi_tune.render.conf import render_gunicorn_conf
from fastapi_tune.render.plan import plan_to_json, print_plan

try:  # `python -m pytest` from the repo root puts it on sys.path
    from tests.test_plan import cpu_report, make_host, plan_for, threadpool_report
except ImportError:  # pragma: no cover - plain `pytest`: pytest put tests/ itself on sys.path
    from test_plan import (  # type: ignore[import-not-found, no-redef]
        cpu_report,
        make_host,
        plan_for,
        threadpool_report,
    )

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
TEST_APP = "tests.apps.plain_app:app"

CASES: dict[str, Callable[[], Plan]] = {
    "vm-cpu-bound-2cpu": lambda: plan_for(make_host(2), cpu_report(), "vm"),
    "kubernetes-target-rps": lambda: plan_for(
        make_host(2, logical=16), cpu_report(workers=2), "kubernetes", target_rps=1000
    ),
    "container-no-report": lambda: plan_for(
        make_host(1.5, logical=8, memory=2 * (1 << 30)), None, "container"
    ),
    "vm-threadpool-bound": lambda: plan_for(make_host(4), threadpool_report(), "vm", preload=True),
}
# Not golden, but every generated file must pass --check-config.
EXTRA: dict[str, Callable[[], Plan]] = {
    "asgi-worker": lambda: plan_for(make_host(2), None, "vm", worker_class="asgi"),
    "small-memory-no-shm": lambda: plan_for(
        make_host(1, memory=512 << 20, dev_shm=False), None, "small-memory"
    ),
}


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", str(path), TEST_APP],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", [pytest.param(name, id=name) for name in CASES])
def test_golden_conf(case: str) -> None:
    text = render_gunicorn_conf(CASES[case]())
    golden = GOLDEN / f"{case}.conf.py"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"missing {golden}: run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), f"{golden} differs: review, then UPDATE_GOLDEN=1"


@pytest.mark.parametrize("case", [pytest.param(name, id=name) for name in {**CASES, **EXTRA}])
def test_gunicorn_accepts_the_conf(case: str, tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf({**CASES, **EXTRA}[case]()), encoding="utf-8")
    result = _check_config(conf)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_config_can_fail(tmp_path: Path) -> None:
    """The check above means something: gunicorn rejects a bad setting."""
    broken = tmp_path / "gunicorn.conf.py"
    broken.write_text('workers = "many"\n', encoding="utf-8")
    assert _check_config(broken).returncode != 0


def test_conf_is_deterministic_and_never_uses_the_deprecated_worker() -> None:
    a = render_gunicorn_conf(CASES["vm-cpu-bound-2cpu"]())
    b = render_gunicorn_conf(CASES["vm-cpu-bound-2cpu"]())
    assert a == b
    code = [line for line in a.splitlines() if not line.lstrip().startswith("#")]
    assert not any(DEPRECATED_WORKER in line for line in code)
    assert 'worker_class = "uvicorn_worker.UvicornWorker"' in a


def _load(
    conf: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, object]:
    for name in ("WEB_CONCURRENCY", "BIND", "PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(conf, encoding="utf-8")
    return runpy.run_path(str(path))


@pytest.mark.parametrize(
    ("env", "workers", "bind"),
    [
        pytest.param({}, 2, "127.0.0.1:8000", id="planned"),
        pytest.param({"WEB_CONCURRENCY": "7"}, 7, "127.0.0.1:8000", id="web-concurrency"),
        pytest.param({"PORT": "9001"}, 2, "127.0.0.1:9001", id="port-keeps-loopback"),
        pytest.param({"BIND": "0.0.0.0:80", "PORT": "9001"}, 2, "0.0.0.0:80", id="bind-wins"),
    ],
)
def test_env_overrides(
    env: dict[str, str], workers: int, bind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ns = _load(render_gunicorn_conf(CASES["vm-cpu-bound-2cpu"]()), env, monkeypatch, tmp_path)
    assert ns["workers"] == workers
    assert ns["bind"] == bind


def test_comments_carry_the_evidence() -> None:
    text = render_gunicorn_conf(CASES["vm-threadpool-bound"]())
    assert "# workers:" in text
    assert "total_tokens = 80" in text
    assert "GET /sync-db" in text
    assert "Rule of thumb: 2 x 4 logical CPUs + 1 = 9" in text


def test_flag_per_line() -> None:
    cmd = flag_per_line(gunicorn_argv(CASES["vm-cpu-bound-2cpu"]()))
    assert cmd.splitlines()[0] == "gunicorn main:app \\"
    assert "    --worker-class uvicorn_worker.UvicornWorker \\" in cmd.splitlines()
    assert cmd.splitlines()[-1].strip() == "--worker-tmp-dir /dev/shm"


# ---------------------------------------------------------------------------------------
# A real gunicorn with a generated config


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[str]:
    """gunicorn started from a generated config; BIND and WEB_CONCURRENCY are its env overrides."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf(CASES["container-no-report"]()), encoding="utf-8")
    port = free_port()
    env = {**os.environ, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1"}
    argv = [sys.executable, "-m", "gunicorn", "-c", str(conf), "--no-control-socket", TEST_APP]
    with run_server(argv, port, ready_path="/", workers=1, cwd=ROOT, env=env, name="gunicorn") as running:
        yield running.url + "/"


def test_gunicorn_serves_with_the_generated_conf(gunicorn_server: str) -> None:
    deadline = time.monotonic() + 30
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(gunicorn_server, timeout=2) as resp:
                assert resp.status == 200
                assert json.loads(resp.read()) == {"status": "ok"}
                return
        except (urllib.error.URLError, ConnectionError) as e:
            last = e
            time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer within 30 s: {last}")


# ---------------------------------------------------------------------------------------
# Renderers


def test_print_plan_shows_table_formula_and_commands() -> None:
    console = Console(record=True, width=160, color_system=None)
    print_plan(console, CASES["kubernetes-target-rps"]())
    out = console.export_text()
    for needle in ("keepalive", "Workers:", "Rule of thumb:", "Replicas:", "uvicorn main:app", "fastapi run"):
        assert needle in out


def test_plan_to_json_round_trips() -> None:
    data = plan_to_json(CASES["kubernetes-target-rps"]())
    again = json.loads(json.dumps(data))
    assert again["workers"] == 1
    assert again["replicas"]["replicas"] == 31
    assert {s["name"] for s in again["settings"]} >= {"workers", "timeout", "keepalive", "bind"}


# ---------------------------------------------------------------------------------------
# File writes


def test_atomic_write_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("old\n")
    path.chmod(0o600)
    atomic_write(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["gunicorn.conf.py"]  # no temp file left


def test_backups_never_clobber_older_ones(tmp_path: Path) -> None:
    path = tmp_path / "gunicorn.conf.py"
    assert write_with_backup(path, "one\n") is None
    first = write_with_backup(path, "two\n")
    second = write_with_backup(path, "three\n")
    assert first is not None
    assert second is not None
    assert (first.name, second.name) == ("gunicorn.conf.py.bak", "gunicorn.conf.py.bak.1")
    assert first.read_text() == "one\n"
    assert second.read_text() == "two\n"
    assert path.read_text() == "three\n"
    assert backup_path(path).name == "gunicorn.conf.py.bak.2"
    # Writing the same text again changes nothing and makes no backup.
    assert write_with_backup(path, "three\n") is None


def test_write_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RefusedError):
        write_with_backup(tmp_path, "x")
