"""Hostile servers, careless flags, broken files: every run ends bounded, safe, with nothing lost.

The servers are raw asyncio on loopback (tests/hostile_servers.py) that misbehave on purpose. Times are
asserted with generous margins: other work shares these 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from fastapi_tune.cli import base as cli
from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import BadInputError, ExitCode, ServerFailedError
from fastapi_tune.core.fileio import atomic_write, write_with_backup
from fastapi_tune.flows.demo import SAMPLE_APP
from fastapi_tune.measure.launch import free_port
from fastapi_tune.measure.observe import find_server
from tests.hostile_servers import (
    Hostile,
    dribble_route,
    endless_route,
    hostile_server,
    json_route,
    raw_route,
    redirect_route,
)
from tests.servers import REPO

SECRET = "s3cr3t-Value-42"


def run_cli(*args: str) -> tuple[int, str, str]:
    # Stack sampling adds ~2 s per endpoint and is tested on its own (test_stacks_live.py).
    quiet = ["--no-profile"] if args[:1] == ("probe",) else []
    r = CliRunner().invoke(app, [*args, *quiet])
    return r.exit_code, r.stdout, r.stderr


def doc(paths: dict[str, object]) -> dict[str, object]:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths}


def many_operations(n: int) -> dict[str, object]:
    return doc({f"/r{i}": {"get": {"responses": {}}} for i in range(n)})


@pytest.fixture
def fast() -> Iterator[Hostile]:
    """A server that answers every request at once, with a small document."""
    with hostile_server({"/openapi.json": json_route(doc({"/a": {"get": {}}}))}, json_route({"ok": 1})) as s:
        yield s


# ---------------------------------------------------------------------------------------
# Budgets


def test_thousands_of_operations_keep_to_the_time_budget(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with hostile_server({"/openapi.json": json_route(many_operations(3000))}, json_route({"ok": 1})) as s:
        started = time.monotonic()
        code, _, stderr = run_cli("probe", s.url, "--max-seconds", "3", "--out", str(out))
        took = time.monotonic() - started
    assert code == 0, stderr
    # The documented grace: the level under way is cut at the deadline, then the report is written.
    assert took < 3 + 3, took
    report = json.loads(out.read_text())
    assert report["elapsed_s"] < 3 + 1.5
    assert len(report["endpoints"]) < 10  # ~2 s fit a couple of 0.7 s levels (none on a busy machine)
    reasons = [x["reason"] for x in report["skipped"]]
    assert len(reasons) + len(report["endpoints"]) == 3000
    assert all(r.startswith("time budget") for r in reasons)
    assert any("preflight" in r for r in reasons)  # the preflight kept to its share as well


def test_a_level_too_large_for_the_budget_never_starts(fast: Hostile, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    started = time.monotonic()
    code, _, stderr = run_cli("probe", fast.url, "--levels", "4096", "--max-seconds", "2", "--out", str(out))
    assert code == ExitCode.NOTHING_MEASURED, stderr  # no route measured: exit 10, the report says why
    assert time.monotonic() - started < 2 + 3
    report = json.loads(out.read_text())
    assert report["endpoints"] == []
    assert report["skipped"][0]["reason"].startswith("time budget: no level measured")


def test_a_dribbling_document_ends_at_its_deadline(tmp_path: Path) -> None:
    with hostile_server({"/openapi.json": dribble_route(0.2)}) as s:
        started = time.monotonic()
        code, _, stderr = run_cli("probe", s.url, "--timeout", "0.5", "--out", str(tmp_path / "r.json"))
        took = time.monotonic() - started
    assert code == 4, stderr
    assert "no complete answer within 1.5 s" in stderr
    assert took < 10


def test_an_endless_document_is_refused_without_reading_it(tmp_path: Path) -> None:
    with hostile_server({"/openapi.json": endless_route()}) as s:
        code, _, stderr = run_cli("probe", s.url, "--out", str(tmp_path / "r.json"))
    assert code == 3, stderr
    assert "larger than 64 MiB" in stderr


def test_a_redirect_to_another_host_is_not_followed(tmp_path: Path) -> None:
    with hostile_server({"/openapi.json": redirect_route("http://192.0.2.1/openapi.json")}) as s:
        code, _, stderr = run_cli("probe", s.url, "--out", str(tmp_path / "r.json"))
        assert s.requests == ["GET /openapi.json"]
    assert code == 3
    assert "answered 302" in stderr
    assert "redirects are not followed" in stderr


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        pytest.param(b'{"paths": {', "not a JSON document", id="truncated"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nests too deeply", id="deep"),
        pytest.param(b'{"paths": []}', "no 'paths' object", id="paths-list"),
    ],
)
def test_a_broken_document_is_bad_input(body: bytes, needle: str, tmp_path: Path) -> None:
    with hostile_server({"/openapi.json": raw_route(body)}) as s:
        code, _, stderr = run_cli("probe", s.url, "--out", str(tmp_path / "r.json"))
    assert code == 3
    assert needle in stderr


def test_odd_documents_skip_single_operations(tmp_path: Path) -> None:
    paths = {
        "/a": {"get": {"parameters": None}},
        "/b/{x}": {
            "get": {
                "parameters": [{"name": "x", "in": "path", "required": True, "schema": {"minLength": "five"}}]
            }
        },
        "/c HTTP/1.1\r\nX-Injected: 1": {"get": {}},
    }
    out = tmp_path / "r.json"
    with hostile_server({"/openapi.json": json_route(doc(paths))}, json_route({"ok": 1})) as s:
        code, _, stderr = run_cli("probe", s.url, "--levels", "1", "--duration", "0.1", "--out", str(out))
        assert not any("X-Injected" in r for r in s.requests)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert [e["path"] for e in report["endpoints"]] == ["/a"]
    reasons = " | ".join(x["reason"] for x in report["skipped"])
    assert "'minLength' is 'five'" in reasons
    assert "spaces or control characters" in reasons


def test_markup_in_paths_is_shown_as_text(tmp_path: Path) -> None:
    paths: dict[str, object] = {"/x[/]": {"get": {}}, "/y[/]": {"post": {}}}
    out = tmp_path / "r.json"
    with hostile_server({"/openapi.json": json_route(doc(paths))}, json_route({"ok": 1})) as s:
        code, stdout, stderr = run_cli(
            "probe", s.url, "--levels", "1", "--duration", "0.1", "--out", str(out)
        )
    assert code == 0, stderr
    assert "skipped POST /y[/]" in stderr
    assert "GET /x[/]" in stdout


# ---------------------------------------------------------------------------------------
# Numbers where they enter


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["probe", "URL", "--timeout", "nan"], "--timeout nan", id="timeout-nan"),
        pytest.param(["probe", "URL", "--max-seconds", "inf"], "--max-seconds inf", id="max-seconds-inf"),
        pytest.param(["probe", "URL", "--max-seconds", "-1"], "--max-seconds -1", id="max-seconds-negative"),
        pytest.param(["probe", "URL", "--duration", "nan"], "--duration nan", id="duration-nan"),
        pytest.param(["probe", "URL", "--levels", "1,10000"], "--levels 10000", id="levels-huge"),
        pytest.param(["probe", "URL", "--max-concurrency", "0"], "--max-concurrency 0", id="max-conc-0"),
        pytest.param(["probe", "http://127.0.0.1:0/"], "port is not a number", id="port-0"),
        pytest.param(["recommend", "--target-rps", "-5", "--yes"], "--target-rps -5", id="target-rps"),
        pytest.param(["demo", "--max-seconds", "nan"], "--max-seconds nan", id="demo-nan"),
        pytest.param(
            ["verify", "m:app", "-c", "CONF", "-e", "/", "--duration", "nan"], "--duration nan", id="v-dur"
        ),
        pytest.param(
            ["verify", "m:app", "-c", "CONF", "-e", "/", "--repeat", "1000000"], "--repeat", id="v-rep"
        ),
    ],
)
def test_numbers_are_checked_where_they_enter(
    args: list[str], needle: str, fast: Hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "CONF").write_text("workers = 1\n")
    code, _, stderr = run_cli(*[fast.url if a == "URL" else a for a in args])
    assert code == 2, stderr
    assert needle in stderr
    assert fast.requests == []  # refused before anything was sent


# ---------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-H", f"Authorization: Bearer {SECRET}\r\nX-Other: 1"], id="header-crlf"),
        pytest.param(["-H", f"Authorization: {SECRET}\0"], id="header-nul"),
        pytest.param(["-H", f"X-Token: {SECRET}é"], id="header-non-ascii"),
        pytest.param(["-H", f"Bad Name: {SECRET}"], id="header-name"),
    ],
)
def test_bad_headers_are_refused_without_echoing_them(args: list[str], fast: Hostile) -> None:
    code, stdout, stderr = run_cli("probe", fast.url, *args)
    assert code == 2
    assert SECRET not in stdout + stderr
    assert fast.requests == []


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"http://user:{SECRET}@127.0.0.1:PORT/", id="userinfo"),
        pytest.param(f"http://127.0.0.1:PORT/?api_key={SECRET}", id="query"),
        pytest.param(f"ftp://user:{SECRET}@127.0.0.1:PORT/", id="scheme"),
    ],
)
def test_secrets_in_the_target_never_reach_the_screen(url: str, fast: Hostile) -> None:
    code, stdout, stderr = run_cli("probe", url.replace("PORT", str(fast.port)))
    assert code == 2
    assert SECRET not in stdout + stderr
    assert fast.requests == []


def test_a_secret_query_parameter_is_redacted_in_the_report(tmp_path: Path) -> None:
    query = [{"name": "api_key", "in": "query", "required": True, "schema": {"type": "string"}}]
    out = tmp_path / "r.json"
    with hostile_server(
        {"/openapi.json": json_route(doc({"/a": {"get": {"parameters": query}}}))}, json_route({})
    ) as s:
        code, stdout, stderr = run_cli(
            "probe", s.url, "--param", f"api_key={SECRET}", "--levels", "1", "--duration", "0.1",
            "--out", str(out), "--json",
        )  # fmt: skip
        assert any(SECRET in r for r in s.requests)  # the app got it
    assert code == 0, stderr
    assert SECRET not in stdout + stderr + out.read_text()
    assert json.loads(out.read_text())["endpoints"][0]["url"].endswith("?api_key=<redacted>")


def test_error_lines_hide_the_users_header_values(capsys: pytest.CaptureFixture[str]) -> None:
    error = ServerFailedError(f"gunicorn said: token {SECRET} refused; dsn postgres://u:pw@db/x")
    assert cli.report_error(error, [SECRET]) == 6
    said = capsys.readouterr().err
    assert SECRET not in said
    assert ":pw@" not in said
    assert "refused" in said


def test_server_command_lines_are_redacted() -> None:
    port = free_port()
    code = f"import socket,time;s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "DB_PASSWORD=" + SECRET, "--api-token", SECRET])
    try:
        for _ in range(100):
            info = find_server(port)
            if info.pid is not None:
                break
            time.sleep(0.05)
        assert info.pid == proc.pid
        assert info.cmdline is not None
        assert "DB_PASSWORD=<redacted>" in info.cmdline
        assert SECRET not in info.cmdline
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------
# Output paths: checked before measuring; a failed write names the path and loses nothing


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only): a real full disk for ENOSPC."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); test_a_failed_write_* covers ENOSPC with a fake")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> None:
    """Fill a filesystem to the last byte."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("flag", "where", "needle"),
    [
        pytest.param("--out", "missing/dir/r.json", "the directory missing/dir does not exist", id="missing"),
        pytest.param("--out", ".", "is a directory", id="directory"),
        pytest.param("--html", "missing/r.html", "does not exist", id="html-missing"),
        pytest.param("--out", "/dev/null", "not a regular file", id="device"),
    ],
)
def test_output_paths_are_checked_before_measuring(
    flag: str, where: str, needle: str, fast: Hostile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli("probe", fast.url, flag, where)
    assert code == 3
    assert needle in stderr
    assert fast.requests == []  # not one request: nothing measured into a path that cannot take it


def test_a_read_only_directory_is_refused_before_measuring(tiny_fs: Path, fast: Hostile) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    code, _, stderr = run_cli("probe", fast.url, "--out", str(tiny_fs / "r.json"))
    assert code == 3
    assert "Read-only file system" in stderr
    assert fast.requests == []


def test_a_full_disk_keeps_the_old_file_and_rescues_the_report(tiny_fs: Path, fast: Hostile) -> None:
    out = tiny_fs / "r.json"
    out.write_text("old\n")
    fill(tiny_fs)
    code, _, stderr = run_cli("probe", fast.url, "--levels", "1", "--duration", "0.1", "--out", str(out))
    assert code == 3
    assert f"{out}: cannot write it (No space left on device); the old file is unchanged" in stderr
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler", "r.json"]  # no temp, no .bak
    rescued = Path(stderr.split("saved to ", 1)[1].split(" instead", 1)[0].strip())
    try:
        assert json.loads(rescued.read_text())["endpoints"][0]["path"] == "/a"
    finally:
        rescued.unlink()


def test_a_full_disk_leaves_no_half_backup(tiny_fs: Path, tmp_path: Path) -> None:
    conf = tiny_fs / "gunicorn.conf.py"
    conf.write_text("workers = 3\n" * 500)  # a backup needs as much room again
    fill(tiny_fs)
    code, _, stderr = run_cli(
        "recommend", "--yes", "--out", str(conf), "--probe", str(tmp_path / "none.json")
    )
    assert code == 3, stderr
    code, _, stderr = run_cli("recommend", "--yes", "--out", str(conf))
    assert code == 3, stderr
    assert "No space left on device" in stderr
    assert conf.read_text() == "workers = 3\n" * 500
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler", "gunicorn.conf.py"]


def test_a_failed_write_names_the_path_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.json"
    target.write_text("old\n")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BadInputError, match=r"r.json: cannot write it \(No space left on device\); the old"):
        atomic_write(target, "new\n")
    with pytest.raises(
        BadInputError, match=r"r.json.bak: cannot write the backup \(No space left on device\)"
    ):
        write_with_backup(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ---------------------------------------------------------------------------------------
# Signals, with the real console script in a subprocess


def tool(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastapi_tune", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_for(check: Callable[[], bool], seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_during_probe_saves_a_partial_report(fast: Hostile, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = tool(
        "probe", fast.url, "--levels", "1,2,4,8", "--duration", "3", "--no-preflight", "--out", str(out)
    )
    wait_for(lambda: len(fast.requests) > 100)
    time.sleep(3.5)  # the first level is done, the second under way
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    report = json.loads(out.read_text())
    assert report["interrupted"] is True
    assert report["endpoints"][0]["levels"]  # what was measured before SIGTERM is kept


def descendants(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def all_gone(procs: list[psutil.Process]) -> bool:
    return not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_sigterm_during_demo_stops_the_sample_app(tmp_path: Path) -> None:
    proc = tool("demo", "--dir", str(tmp_path), "--max-seconds", "30")
    wait_for(lambda: any("uvicorn" in " ".join(p.cmdline()) for p in descendants(proc)))
    time.sleep(1.5)  # the probe is under way
    started = descendants(proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    wait_for(lambda: all_gone(started), 15)


@pytest.mark.slow
def test_sigterm_during_verify_stops_every_gunicorn(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('workers = 2\nworker_class = "uvicorn_worker.UvicornWorker"\n')
    proc = tool("verify", SAMPLE_APP, "-c", str(conf), "-e", "GET /io", "--duration", "30", "--repeat", "1")
    wait_for(lambda: len([p for p in descendants(proc) if "gunicorn" in " ".join(p.cmdline())]) >= 3, 90)
    started = descendants(proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    wait_for(lambda: all_gone(started), 15)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3])
def test_an_early_ctrl_c_prints_no_traceback(delay: float, tmp_path: Path) -> None:
    proc = tool("probe", "http://127.0.0.1:9/", "--out", str(tmp_path / "r.json"))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    # A signal before fastapi_tune.entry.main has installed its handlers (the interpreter's start-up,
    # site and .pth files, runpy, entry's own few imports: a few ms, longer on a busy machine) is out
    # of reach; from there on, the slow imports (typer, rich, httpx) included, no traceback.
    if "Traceback" in stderr or stderr.startswith("Fatal Python error"):
        assert "fastapi_tune/cli/app.py" not in stderr, stderr  # it came before the handlers
    else:
        # -SIGINT: before Python's own handler (a quiet death); 4: it found no server first.
        assert proc.returncode in (130, -signal.SIGINT, 4), stderr


# ---------------------------------------------------------------------------------------
# Bad input files: exit 3, one line naming the file and the key


def saved_report(tmp_path: Path, fast: Hostile) -> dict[str, Any]:
    out = tmp_path / "good.json"
    code, _, stderr = run_cli("probe", fast.url, "--levels", "1", "--duration", "0.1", "--out", str(out))
    assert code == 0, stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        pytest.param({"throughput_rps": math.nan}, "throughput_rps: expected a finite number", id="nan"),
        pytest.param({"duration_s": math.inf}, "duration_s: expected a finite number", id="inf"),
        pytest.param({"concurrency": -4}, "endpoints[0].levels[0].concurrency", id="negative-concurrency"),
        pytest.param({"server_rss_bytes": [-1]}, "server_rss_bytes", id="negative-rss"),
    ],
)
def test_a_report_with_impossible_numbers_is_bad_input(
    edit: dict[str, Any], needle: str, fast: Hostile, tmp_path: Path
) -> None:
    data = saved_report(tmp_path, fast)
    data["endpoints"][0]["levels"][0].update(edit)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))  # json writes NaN and Infinity as Python reads them back
    code, _, stderr = run_cli("recommend", "--probe", str(bad), "--yes", "--out", str(tmp_path / "g.py"))
    assert code == 3
    assert str(bad) in stderr
    assert needle in stderr


def test_a_deeply_nested_report_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "deep.json"
    bad.write_text("[" * 200_000 + "]" * 200_000)
    code, _, stderr = run_cli("recommend", "--probe", str(bad), "--yes", "--out", str(tmp_path / "g.py"))
    assert code == 3
    assert "nested too deeply" in stderr


BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
    ]
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(BOMB, "more than 50 aliases", id="billion-laughs"),
        pytest.param("[" * 30_000, "nested too deeply", id="deep"),
        pytest.param("x" * 70_000, "more than 64 KiB", id="huge"),
        pytest.param(b"description: \xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param("workers: [1\n", "not valid YAML (line 2, column 1)", id="broken"),
    ],
)
def test_a_hostile_profile_is_bad_input_quickly(text: str | bytes, needle: str, tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    if isinstance(text, bytes):
        profile.write_bytes(text)
    else:
        profile.write_text(text)
    started = time.monotonic()
    code, _, stderr = run_cli(
        "recommend", "--profile", str(profile), "--yes", "--out", str(tmp_path / "g.py")
    )
    assert time.monotonic() - started < 10
    assert code == 3
    assert needle in stderr
    assert len(stderr) < 400  # one line; never the document
