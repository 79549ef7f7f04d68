"""Connections a server worker holds open to a database: the pool's real size, read from outside.

During a collapse a client-side pool is fully checked out, so the connections a worker has open to
its database then are the pool's size + overflow (SQLAlchemy), or its max (asyncpg, psycopg_pool):
the figure the app's code sets and nothing else exposes. Read from /proc (database files opened
more than once: SQLite connections) and the worker's outgoing TCP connections (psutil). Measurement
only; an unreadable process gives None.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import psutil

from fastapi_tune.measure.overload_report import HeldConnections

# Files a SQLite connection opens (the database itself; its -wal/-journal only while writing).
_DB_SUFFIXES: Final = (".sqlite", ".sqlite3", ".db", ".db3")


def _files(pid: int) -> Counter[str]:
    """Database files the process has open, with how many times each is open (one per connection)."""
    opened: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("/") and target.endswith(_DB_SUFFIXES):
                    opened[target] += 1
    return opened


def _peers(pid: int, server_port: int) -> Counter[str]:
    """Outgoing TCP connections by peer: a database pool shows as many to one host:port."""
    peers: Counter[str] = Counter()
    with contextlib.suppress(psutil.Error):
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if not conn.raddr or conn.status != psutil.CONN_ESTABLISHED:
                continue
            if conn.laddr and conn.laddr.port == server_port:
                continue  # a client of the server (the load generator), not a connection it made
            peers[f"{conn.raddr.ip}:{conn.raddr.port}"] += 1
    return peers


def held_connections(pids: Sequence[int], server_port: int) -> HeldConnections | None:
    """The largest group of connections one worker holds to one database; None when none is seen."""
    best: tuple[int, str] | None = None
    for pid in pids:
        groups = _files(pid) + _peers(pid, server_port)
        for target, count in groups.items():
            name = Path(target).name if target.startswith("/") else target
            if count >= 2 and (best is None or count > best[0]):
                best = (count, name)
    return None if best is None else HeldConnections(count=best[0], target=best[1])
