"""Real servers for tests: uvicorn or gunicorn on a free loopback port, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


def _command(app: str, port: int, server: str, workers: int, extra: Sequence[str]) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning", "--workers", str(workers), *extra,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", str(workers),
        "-k", "uvicorn_worker.UvicornWorker", "--log-level", "warning", *extra,
    ]  # fmt: skip


@contextmanager
def serve(
    app: str,
    server: str = "uvicorn",
    workers: int = 1,
    extra: Sequence[str] = (),
    ready_path: str = "/openapi.json",
) -> Iterator[Server]:
    """Start a real server for `app` ('module:attr', importable from the repo root), wait, stop."""
    port = free_port()
    proc = subprocess.Popen(
        _command(app, port, server, workers, extra),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{server} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if httpx.get(url + ready_path, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not answer on {url} within 30 s")
            time.sleep(0.1)
        if server == "gunicorn" or workers > 1:
            _wait_for_workers(proc.pid, workers)
        yield Server(url=url, port=port, proc=proc)
    finally:
        stop(proc)


def _wait_for_workers(pid: int, workers: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kids = [c for c in psutil.Process(pid).children() if "resource_tracker" not in " ".join(c.cmdline())]
        if len(kids) >= workers:
            time.sleep(0.5)  # let each worker finish importing the app
            return
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()
