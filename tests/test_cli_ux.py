"""The CLI as people meet it: one vocabulary, prompts that check each answer, Ctrl-C at a prompt."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.measure.report import report_to_json
from tests.servers import REPO
from tests.test_plan import cpu_report

COMMANDS = ("host", "probe", "recommend", "verify", "demo", "report")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_dash_h_and_shows_flags_without_bool(command: str) -> None:
    result = CliRunner().invoke(app, [command, "-h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    options = [line for line in result.output.splitlines() if "--json" in line or "--yes" in line]
    assert all("<bool>" not in line for line in options), options


@pytest.mark.parametrize(
    ("command", "option"),
    [
        pytest.param("probe", "--out", id="probe-out"),
        pytest.param("recommend", "--out", id="recommend-out"),
        pytest.param("demo", "--dir", id="demo-dir"),
        pytest.param("host", "--cpus", id="host-cpus"),
        pytest.param("recommend", "--cpus", id="recommend-cpus"),
        pytest.param("demo", "--json", id="demo-json"),
        pytest.param("probe", "--html", id="probe-html"),
    ],
)
def test_one_vocabulary(command: str, option: str) -> None:
    result = CliRunner().invoke(app, [command, "-h"], env={"COLUMNS": "200"})
    assert option in result.output


class Terminal:
    """fastapi-tune on a real pseudo-terminal, so that it prompts as it does for a person."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastapi_tune", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", "TERM": "dumb"},
            start_new_session=True,
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while text not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"{text!r} not seen in:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
        assert text in self.seen, self.seen

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:  # a hang fails this test, not a later one (a leaked process)
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


@pytest.mark.slow
def test_a_bad_answer_is_said_at_once_and_asked_again(tmp_path: Path) -> None:
    t = Terminal("recommend", cwd=tmp_path)
    t.expect("App to serve")
    t.send("main\r")
    t.expect("expected MODULE:ATTRIBUTE")
    t.expect("App to serve")
    t.send("main:app\r")
    t.expect("Deployment profile")
    t.send("nope\r")
    t.expect("no such profile")
    t.send("vm\r")
    t.expect("Bind address")
    t.send("somewhere\r")
    t.expect("expected HOST:PORT")
    t.send("127.0.0.1:9000\r")
    assert t.wait() == 0, t.seen
    assert 'wsgi_app = "main:app"' in (tmp_path / "gunicorn.conf.py").read_text()


@pytest.mark.slow
def test_ctrl_c_at_a_prompt_exits_130_without_a_traceback(tmp_path: Path) -> None:
    t = Terminal("recommend", cwd=tmp_path)
    t.expect("App to serve")
    t.proc.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
    code = t.wait()
    assert code == ExitCode.INTERRUPTED, t.seen
    assert "Traceback" not in t.seen
    assert not (tmp_path / "gunicorn.conf.py").exists()


def test_brief_fits_a_screen_and_piped_output_is_not_cut_at_80_columns(tmp_path: Path) -> None:
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(report_to_json(cpu_report())))
    args = ["-m", "fastapi_tune", "recommend", "--probe", str(probe), "--yes"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("COLUMNS", None)
    full = subprocess.run(
        [sys.executable, *args, "-o", str(tmp_path / "a.py")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    brief = subprocess.run(
        [sys.executable, *args, "--brief", "-o", str(tmp_path / "b.py")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert len(brief.stdout.splitlines()) <= 24 < len(full.stdout.splitlines())
    assert "gunicorn main:app" in brief.stdout
    assert max(len(line) for line in full.stdout.splitlines()) > 80  # piped: 120 columns, not 80
