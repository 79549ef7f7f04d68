"""The probe end to end: a real app under a real uvicorn on loopback, driven through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import BadInputError, ExitCode, RefusedError
from fastapi_tune.discover.openapi import discover, resolve_target
from fastapi_tune.measure.launch import run_server
from fastapi_tune.measure.levels import default_levels, imbalanced
from fastapi_tune.measure.report import SCHEMA_VERSION
from tests.servers import REPO, Server, free_port, serve

QUICK = ["--levels", "1,2", "--duration", "0.15"]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("tests.apps.probe_app:app") as s:
        yield s


def run_cli(*args: str) -> tuple[int, str, str]:
    # Stack sampling adds ~2 s per endpoint and is tested on its own (test_stacks_live.py).
    quiet = ["--no-profile"] if args[:1] == ("probe",) else []
    result = CliRunner().invoke(app, [*args, *quiet])
    return result.exit_code, result.stdout, result.stderr


def load(path: Path) -> Any:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.slow
def test_discovery_fills_parameters_and_skips_unsafe(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _, stderr = run_cli(
        "probe", server.url, *QUICK, "--out", str(out), "--exclude", "/broken", "--exclude", "GET /slow",
        "--exclude", "/limited", "--exclude", "/private",
    )  # fmt: skip
    assert code == 0, stderr
    report = load(out)
    eps = {e["path"]: e for e in report["endpoints"]}
    assert set(eps) == {"/fast", "/items/{item_id}", "/search"}
    assert eps["/items/{item_id}"]["url"] == f"{server.url}/items/1?colour=red"
    assert eps["/search"]["url"] == f"{server.url}/search?q=test"
    # Every request answered 200: the filled parameters were accepted by the app.
    for ep in eps.values():
        assert [lv["errors"] for lv in ep["levels"]] == [0, 0]
        assert all(lv["requests"] > 0 for lv in ep["levels"])
    reasons = {(s["method"], s["path"]): s["reason"] for s in report["skipped"]}
    assert "not a safe method" in reasons[("POST", "/items")]
    assert "excluded" in reasons[("GET", "/broken")]


def test_report_has_the_documented_names(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, stdout, stderr = run_cli("probe", server.url, "-e", "/fast", *QUICK, "--out", str(out), "--json")
    assert code == 0, stderr
    printed = json.loads(stdout)  # --json: the report and nothing else on stdout
    assert printed == load(out)
    assert printed["schema_version"] == SCHEMA_VERSION == 2
    assert printed["target"] == server.url
    assert printed["host"]["cpu"]["effective"] > 0
    assert printed["server"]["local"] is True
    assert printed["server"]["pid"] == server.pid
    assert printed["server"]["workers"] == 1
    (ep,) = printed["endpoints"]
    assert (ep["method"], ep["path"]) == ("GET", "/fast")
    assert "class" in ep
    for lv in ep["levels"]:
        for key in ("concurrency", "requests", "errors", "throughput_rps", "server_cpu_cores",
                    "client_cpu_cores", "client_saturated"):  # fmt: skip
            assert key in lv
        assert set(lv["latency_ms"]) >= {"p50", "p90", "p99", "max"}
        assert lv["p99_supported"] == (lv["latency_ms"]["p99"] is not None)
        assert lv["server_rss_bytes"][0] > 10 * 2**20
    assert [lv["concurrency"] for lv in ep["levels"]] == [1, 2]


def test_sensitive_headers_are_sent_but_never_saved(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, stdout, stderr = run_cli(
        "probe", server.url, "-e", "/private", "-H", "Authorization: Bearer s3cret-token", "-H", "X-Trace: 7",
        *QUICK, "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert "s3cret" not in out.read_text() + stdout + stderr
    report = load(out)
    assert report["settings"]["headers"] == ["Authorization: <redacted>", "X-Trace: 7"]
    levels = report["endpoints"][0]["levels"]
    assert levels[0]["errors"] == 0  # the header reached the app


def test_server_errors_are_counted_by_kind_and_end_the_ladder(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _, stderr = run_cli(
        "probe", server.url, "-e", "/broken", "--no-preflight", "--duration", "0.2", "--out", str(out)
    )
    assert code == ExitCode.NOTHING_MEASURED, stderr  # its only route never answered well: exit 10
    (ep,) = load(out)["endpoints"]
    assert len(ep["levels"]) == 1
    assert ep["levels"][0]["errors_by_kind"]["5xx"] == ep["levels"][0]["errors"] > 0
    assert ep["stop_reason"] == "errors"
    assert "5xx" in ep["stop_detail"]
    assert ep["class"] == "inconclusive"


def test_429_ends_the_ladder_politely(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _, stderr = run_cli(
        "probe", server.url, "-e", "/limited", "--no-preflight", "--duration", "0.2", "--out", str(out)
    )
    assert code == ExitCode.NOTHING_MEASURED, stderr  # refused before any success: exit 10
    (ep,) = load(out)["endpoints"]
    assert len(ep["levels"]) == 1
    assert (ep["stop_reason"], ep["stop_detail"]) == ("rate limited", "Retry-After 3 s")


def test_timeouts_are_counted(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _, stderr = run_cli(
        "probe", server.url, "-e", "/slow", "--no-preflight", "--timeout", "0.2", "--levels", "2",
        "--duration", "0.5", "--out", str(out),
    )  # fmt: skip
    assert code == ExitCode.NOTHING_MEASURED, stderr  # every request timed out: exit 10
    (lv,) = load(out)["endpoints"][0]["levels"]
    assert lv["errors_by_kind"]["timeout"] >= 2


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        pytest.param("http://10.20.30.40:8000", "not a loopback address", id="private-ip"),
        pytest.param("http://203.0.113.9", "not a loopback address", id="public-ip"),
        pytest.param("http://no-such-host.invalid:8000", "cannot resolve", id="dns-failure"),
    ],
)
def test_non_loopback_is_refused_before_any_request(url: str, needle: str, tmp_path: Path) -> None:
    started = time.monotonic()
    code, _, stderr = run_cli("probe", url, "--out", str(tmp_path / "r.json"))
    assert code == ExitCode.REFUSED
    assert needle in stderr
    assert "--allow-remote" in stderr
    assert time.monotonic() - started < 5
    assert not (tmp_path / "r.json").exists()


def test_loopback_names_are_accepted() -> None:
    assert resolve_target("http://localhost:8000", allow_remote=False).loopback
    assert resolve_target("http://[::1]:8000/api/", allow_remote=False).base_url == "http://[::1]:8000/api"
    with pytest.raises(RefusedError):
        resolve_target("http://192.168.1.10:8000", allow_remote=False)


def test_connection_refused_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = run_cli("probe", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "r.json"))
    assert code == ExitCode.TARGET_UNREACHABLE
    assert "connection refused" in stderr
    assert "Traceback" not in stderr


def test_missing_openapi_suggests_e(tmp_path: Path) -> None:
    with serve("tests.apps.plain_app:app", extra=()) as s:
        code, _, stderr = run_cli(
            "probe", s.url, "--openapi", "/nope.json", "--out", str(tmp_path / "r.json")
        )
    assert code == ExitCode.BAD_INPUT
    assert "-e" in stderr


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param([1, 2], id="not-an-object"),
        pytest.param({"openapi": "3.1.0"}, id="no-paths"),
    ],
)
def test_junk_openapi_documents(doc: object) -> None:
    with pytest.raises(BadInputError, match="not an OpenAPI document"):
        discover(doc, "http://127.0.0.1:1", "x.json")


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    code, _, stderr = run_cli("probe", "http://127.0.0.1:1", "--levels", "1,x")
    assert code == ExitCode.USAGE
    assert "--levels" in stderr
    code, _, stderr = run_cli("probe", "http://127.0.0.1:1", "-e", "FETCH /x")
    assert code == ExitCode.USAGE


def test_default_levels() -> None:
    assert default_levels(128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert default_levels(48) == [1, 2, 4, 8, 16, 32, 48]


@pytest.mark.slow
def test_server_dying_mid_probe_keeps_the_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with serve("tests.apps.probe_app:app") as s:
        code, _, stderr = run_cli(
            "probe", s.url, "-e", "/fast", "-e", "/die", "--no-preflight", *QUICK, "--out", str(out)
        )
    assert code == ExitCode.TARGET_UNREACHABLE
    assert "stopped answering" in stderr
    assert str(out) in stderr
    eps = load(out)["endpoints"]
    assert [e["path"] for e in eps] == ["/fast", "/die"]
    assert eps[1]["stop_reason"] == "server died"


@pytest.mark.slow
def _read_lines_behind(proc: subprocess.Popen[str]) -> tuple[list[str], threading.Thread]:
    """Collect the process's stderr lines as they come, in a thread; the list fills while it runs."""
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    reader.start()
    return lines, reader


def test_ctrl_c_saves_what_was_measured_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with serve("fastapi_tune.sample_app:app") as s:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastapi_tune", "probe", s.url, "--out", str(out)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines, reader = _read_lines_behind(proc)
        # Interrupt once it measures (a fixed sleep fails on a busy machine still importing),
        # and late enough for one level at least.
        deadline = time.monotonic() + 120
        while not any("Probing" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        waited = time.monotonic() - sent
        reader.join(timeout=5)
        assert proc.stderr is not None
        proc.stderr.close()
        stderr = "".join(lines)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert waited < 2.0, waited
    assert str(out) in stderr
    report = load(out)
    assert report["interrupted"] is True
    assert sum(len(e["levels"]) for e in report["endpoints"]) >= 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the self-signed certificate")
@pytest.mark.slow
def test_self_signed_tls_needs_insecure(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "tests.apps.probe_app:app", "--host", "127.0.0.1",
        "--port", str(port), "--ssl-keyfile", str(key), "--ssl-certfile", str(cert), "--log-level", "warning",
    ]  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with run_server(argv, port, cwd=REPO, env=env, name="uvicorn (TLS)", scheme="https"):
        code, _, stderr = run_cli("probe", url, "-e", "/fast", *QUICK, "--out", str(tmp_path / "r.json"))
        assert code == ExitCode.TARGET_UNREACHABLE
        assert "--insecure" in stderr
        out = tmp_path / "ok.json"
        code, _, stderr = run_cli("probe", url, "-e", "/fast", *QUICK, "--insecure", "--out", str(out))
        assert code == 0, stderr
    levels = load(out)["endpoints"][0]["levels"]
    assert all(lv["errors"] == 0 and lv["requests"] > 0 for lv in levels)


@pytest.mark.parametrize(
    ("concurrency", "per_worker", "flagged"),
    [
        pytest.param(8, (0.95, 0.02), True, id="one-worker-idles"),
        pytest.param(8, (0.95, 0.90), False, id="both-busy"),
        pytest.param(2, (0.95, 0.0), False, id="too-few-connections-to-load-both"),
        pytest.param(64, (0.05, 0.0), False, id="server-mostly-waiting"),
        pytest.param(64, (0.5,), False, id="one-worker"),
        pytest.param(64, None, False, id="not-observed"),
    ],
)
def test_worker_imbalance(concurrency: int, per_worker: tuple[float, ...] | None, flagged: bool) -> None:
    assert imbalanced(concurrency, per_worker) is flagged


def test_preflight_skips_a_failing_route_with_its_status_and_hint(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, _, stderr = run_cli("probe", server.url, "-e", "/fast", "-e", "/broken", *QUICK, "--out", str(out))
    assert code == 0, stderr
    report = load(out)
    assert [e["path"] for e in report["endpoints"]] == ["/fast"]
    (skipped,) = [s for s in report["skipped"] if s["path"] == "/broken"]
    assert "preflight answered 500" in skipped["reason"]
    assert "the route fails on its own" in skipped["reason"]
