"""Real servers for tests: uvicorn or gunicorn on a free loopback port, always stopped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from fastapi_tune.measure.launch import free_port, run_server

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "Server", "free_port", "serve"]


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    pid: int


def _command(app: str, port: int, server: str, workers: int, extra: Sequence[str]) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning", "--workers", str(workers), *extra,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", str(workers),
        "-k", "uvicorn_worker.UvicornWorker", "--log-level", "warning", "--no-control-socket", *extra,
    ]  # fmt: skip


@contextmanager
def serve(app: str, server: str = "uvicorn", workers: int = 1, extra: Sequence[str] = ()) -> Iterator[Server]:
    """Start a real server for `app` ('module:attr', importable from the repo root), wait, stop."""
    port = free_port()
    with run_server(
        _command(app, port, server, workers, extra),
        port,
        workers=workers if (server == "gunicorn" or workers > 1) else 0,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        name=server,
    ) as running:
        yield Server(url=running.url, port=running.port, pid=running.pid)


def command_line(p: psutil.Process) -> str:
    """A process's command line, or "" once it is gone or a zombie (its parent has not reaped it yet).

    A zombie's cmdline() raises; tests that scan process trees must read it as gone, not fail.
    """
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""
