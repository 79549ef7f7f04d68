"""Starting and always stopping the servers fastapi-tune runs itself (demo, verify)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import httpx
import psutil

from fastapi_tune.core.errors import ServerFailedError
from fastapi_tune.core.signals import STOP_SIGNALS
from fastapi_tune.measure.observe import worker_children

_STDERR_TAIL: Final = 1500


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Running:
    url: str
    port: int
    pid: int
    boot_s: float = 0.0  # from the start of the process until it answered with every worker up
    # Start the same server again on the same port (after a wedge); None where that is not ours to do.
    restart: Callable[[], Running] | None = field(default=None, compare=False, repr=False)


# What helps after a failed boot, by the root cause's exception: the usual cause is the environment.
_BOOT_HINTS: Final = (
    (
        ("ModuleNotFoundError", "ImportError"),
        "the app does not import from here: pass --app-dir DIR (where `import MODULE` works) or"
        " --python PATH (the interpreter of the app's environment)",
    ),
    (("Failed to find attribute", "AttributeError"), "check APP as MODULE:ATTRIBUTE, e.g. main:app"),
    (("SyntaxError",), "the app's code does not compile: see the file and line above"),
    (("Address already in use",), "another process took the port: try again"),
)
# Lines of the server's own output shown after the cause: enough to explain, not a traceback.
_OWN_LINES: Final = 6


def _tail(path: Path) -> str:
    """The root cause of a failed boot on one line, a hint, then the server's last few own lines."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = text.splitlines()
    # gunicorn's HaltServer traceback buries the real error (ModuleNotFoundError, SyntaxError ...)
    # that a worker logged before it.
    causes = [
        line.strip()
        for line in lines
        if ("Error" in line or "Exception" in line or "Failed to find" in line)
        and ":" in line
        and "HaltServer" not in line
        and not line.lstrip().startswith(("File ", "Traceback", "During handling"))
    ]
    cause = causes[-1] if causes else ""
    hint = next((h for keys, h in _BOOT_HINTS if any(k in cause for k in keys)), "")
    own = [
        line
        for line in lines
        if line.strip() and not line.startswith((" ", "\t", "Traceback", "During handling", "The above"))
    ][-_OWN_LINES:]
    head = [cause] if cause else []
    if hint:
        head.append(f"hint: {hint}")
    return "\n".join([*head, *("  " + line[:_STDERR_TAIL] for line in own if line.strip() != cause)])


def _spawn(
    argv: Sequence[str], cwd: Path | None, env: Mapping[str, str] | None, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C at the terminal reaches us, not the server: we stop it
    )


def _wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    ready_path: str,
    workers: int,
    boot_timeout_s: float,
    name: str,
    log_path: Path,
) -> None:
    """Until the server answers with every worker up; ServerFailedError when it exits or never does."""
    deadline = time.monotonic() + boot_timeout_s
    while True:
        if proc.poll() is not None:
            raise ServerFailedError(
                f"{name} exited with code {proc.returncode} before answering:\n{_tail(log_path)}"
            )
        answered = False
        with contextlib.suppress(httpx.HTTPError):
            # verify=False: a server we started ourselves on loopback, maybe with a test certificate.
            answered = httpx.get(url + ready_path, timeout=1.0, verify=False).status_code < 500
        if answered and (workers <= 1 or len(worker_children(proc.pid)) >= workers):
            if workers > 1:
                # One worker answered; the others may still import the app. Load sent now would pin
                # its keep-alive connections on the ready ones (and Granian's late workers have no
                # socket yet), measuring fewer workers than the config has.
                _wait_settled(proc.pid, min(deadline, time.monotonic() + _SETTLE_MAX_S))
            return
        if time.monotonic() > deadline:
            raise ServerFailedError(
                f"{name} did not answer on {url} within {boot_timeout_s:g} s:\n{_tail(log_path)}"
            )
        time.sleep(0.1)


@contextmanager
def run_server(
    argv: Sequence[str],
    port: int,
    *,
    ready_path: str = "/openapi.json",
    scheme: str = "http",
    workers: int = 0,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    boot_timeout_s: float = 60.0,
    name: str = "server",
) -> Iterator[Running]:
    """Start argv in its own process group, wait until it answers (and `workers` children are up),
    yield, then stop the whole group whatever happened (error, Ctrl-C).

    A server that exits or never answers raises ServerFailedError with the end of its stderr,
    so a config that fails to boot shows gunicorn's own words, not a traceback. The Running it
    yields can restart the server on the same port (`Running.restart`): a wedged server is killed
    at once, not stopped gracefully (its loop may never run the shutdown).
    """
    log = tempfile.NamedTemporaryFile(prefix="fastapi-tune-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log.name)
    url = f"{scheme}://127.0.0.1:{port}"
    started = time.monotonic()
    procs = [_spawn(argv, cwd, env, log)]

    def restart() -> Running:
        kill_group(procs[-1])
        again = time.monotonic()
        procs.append(_spawn(argv, cwd, env, log))
        _wait_ready(procs[-1], url, ready_path, workers, boot_timeout_s, name, log_path)
        return Running(
            url=url, port=port, pid=procs[-1].pid, boot_s=time.monotonic() - again, restart=restart
        )

    try:
        _wait_ready(procs[-1], url, ready_path, workers, boot_timeout_s, name, log_path)
        boot_s = time.monotonic() - started
        yield Running(url=url, port=port, pid=procs[-1].pid, boot_s=boot_s, restart=restart)
    finally:
        stop_group(procs[-1])
        log.close()
        log_path.unlink(missing_ok=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's whole process group and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# A worker whose main thread sleeps (in accept or its event loop's poll) at this many looks in a row,
# SETTLE_INTERVAL_S apart, has finished starting; an importing one runs or waits for a CPU.
_SETTLE_LOOKS: Final = 3
_SETTLE_INTERVAL_S: Final = 0.1
# An app whose main thread keeps computing at idle never settles: load starts after this long anyway.
_SETTLE_MAX_S: Final = 20.0


def _wait_settled(pid: int, deadline: float) -> None:
    """Until every worker's main thread has slept for a few looks in a row (or the boot deadline)."""
    calm = 0
    while calm < _SETTLE_LOOKS and time.monotonic() < deadline:
        states = []
        for w in worker_children(pid):
            with contextlib.suppress(psutil.Error):
                states.append(w.status())
        calm = calm + 1 if states and all(s == psutil.STATUS_SLEEPING for s in states) else 0
        time.sleep(_SETTLE_INTERVAL_S)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers.

    Stop signals are held back meanwhile (delivered after): a second Ctrl-C or SIGTERM in the
    middle would otherwise abandon the stop and leave the server running.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if main else None
    try:
        _stop_group(proc)
    finally:
        if before is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    else:
        # The leader is gone; make sure no orphaned worker of its group survives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
