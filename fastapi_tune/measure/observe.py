"""Watching the server under test when it runs on this machine: its processes, CPU and memory.

Only local targets are observed; a remote server gets None everywhere, never a guess.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import psutil

from fastapi_tune.core.redact import redact_text
from fastapi_tune.measure.report import ServerInfo

# Sampling often enough to catch a 0.5 s level's window edges without costing the load
# generator measurable CPU (one psutil read of a handful of processes is ~0.1 ms).
_SAMPLE_INTERVAL_S: Final = 0.05


def _listening_inodes(port: int, proc: Path) -> set[str]:
    """Inodes of the sockets listening on a port, from /proc/net/tcp and tcp6."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; column 9 is the inode.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _listening_pids(port: int, proc: Path = Path("/proc")) -> set[int]:
    """Every process holding the listening socket: a master and the workers that inherited it.

    psutil.net_connections names one pid per socket, so a gunicorn master and its workers,
    which share one socket, would show as a single process; the fds in /proc tell them all.
    """
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return set()
    wanted = {f"socket:[{i}]" for i in inodes}
    pids: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    pids.add(int(entry.name))
                    break
        except OSError:  # gone, or not ours to read without root
            continue
    return pids


def _kind(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    for name in ("gunicorn", "uvicorn", "granian", "hypercorn"):
        if name in text:
            return name
    return "uvicorn" if "fastapi" in text else "other"


def find_server(port: int) -> ServerInfo:
    """The process tree listening on a local port: a gunicorn/uvicorn master and its workers."""
    pids = _listening_pids(port)
    if not pids:
        return ServerInfo(local=True)
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            procs[pid] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
    # The root is the listener whose parent does not listen too (a master that forked its
    # workers after binding shares the socket with them).
    roots = [p for p in procs.values() if p.ppid() not in procs]
    if not roots:
        return ServerInfo(local=True)
    master = _reuseport_master(roots)
    if master is not None:
        return _server_info(master, tuple(sorted(p.pid for p in roots)))
    root = min(roots, key=lambda p: p.pid)
    try:
        children = root.children(recursive=False)
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return ServerInfo(local=True, pid=root.pid)
    # Workers are the root's children that share its socket (gunicorn, uvicorn --workers);
    # a lone listener serves requests itself.
    workers = tuple(sorted(c.pid for c in children if c.pid in procs and _is_worker(c))) or (root.pid,)
    return _server_info(root, workers)


def _reuseport_master(listeners: list[psutil.Process]) -> psutil.Process | None:
    """The master of listeners that do not share one socket (Granian: each worker binds its own
    SO_REUSEPORT socket on the port, and the master holds none of them), else None: their one parent,
    when there are several or when it runs the same command (a worker not yet listening beside it)."""
    parents = {p.ppid() for p in listeners}
    if len(parents) != 1:
        return None
    try:
        parent = psutil.Process(parents.pop())
        same = parent.cmdline() == listeners[0].cmdline()
    except psutil.Error:
        return None
    return parent if len(listeners) > 1 or same else None


def _server_info(root: psutil.Process, workers: tuple[int, ...]) -> ServerInfo:
    try:
        cmdline = root.cmdline()
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return ServerInfo(local=True, pid=root.pid)
    return ServerInfo(
        local=True,
        pid=root.pid,
        kind=_kind(cmdline),
        cmdline=redact_text(" ".join(cmdline))[:500],  # -e DB_PASSWORD=... must not reach the report
        workers=len(workers),
        worker_pids=workers,
    )


def worker_children(pid: int) -> list[psutil.Process]:
    """A server process's children that serve requests (gunicorn or uvicorn workers)."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if _is_worker(k)]


def _is_worker(child: psutil.Process) -> bool:
    """Leave out helpers such as multiprocessing's resource tracker."""
    try:
        text = " ".join(child.cmdline())
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False
    return "resource_tracker" not in text and "semaphore_tracker" not in text


def cpu_seconds(procs: Sequence[psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds of each process still alive, by pid."""
    per: dict[int, float] = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        per[p.pid] = t.user + t.system
    return per


class ServerWatcher:
    """Samples the server's total CPU time in the background so a level's window can be cut out.

    The load generator reports its counted window in perf_counter time; `cpu_cores_between`
    interpolates the server's CPU seconds at both edges from the samples around them.
    """

    def __init__(self, info: ServerInfo) -> None:
        self._lock = threading.Lock()
        self._procs: list[psutil.Process] = []
        self._workers: list[psutil.Process] = []
        # (time, (total CPU seconds, worker 1's, worker 2's, ...)), workers in self._workers order
        self._samples: list[tuple[float, tuple[float, ...]]] = []
        self.follow(info)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-watcher", daemon=True)
        self.alive = True

    def __enter__(self) -> ServerWatcher:
        self._thread.start()
        return self

    def follow(self, info: ServerInfo) -> None:
        """Watch these processes from now on (a restarted server); earlier samples are dropped."""
        procs: list[psutil.Process] = []
        for pid in {info.pid, *info.worker_pids} - {None}:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        with self._lock:
            self._procs = procs
            self._workers = [p for p in procs if p.pid in info.worker_pids]
            self._samples = []
        self.alive = True

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _cpu(self) -> tuple[float, ...] | None:
        """(total, per worker) CPU seconds now; a worker that is gone counts 0."""
        per = cpu_seconds(self._procs)
        if not per:
            self.alive = False
            return None
        return (sum(per.values()), *(per.get(w.pid, 0.0) for w in self._workers))

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:  # follow() must not swap the processes between the read and the append
                cpu = self._cpu()
                if cpu is not None:
                    self._samples.append((time.perf_counter(), cpu))
                    if len(self._samples) > 4000:  # keep memory bounded on long probes
                        del self._samples[:2000]
            self._stop.wait(_SAMPLE_INTERVAL_S)

    def _at(self, t: float) -> tuple[float, ...] | None:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return None
        before = [s for s in samples if s[0] <= t]
        after = [s for s in samples if s[0] >= t]
        if not before:
            return after[0][1]
        if not after:
            return before[-1][1]
        (t0, c0), (t1, c1) = before[-1], after[0]
        if t1 == t0:
            return c0
        w = (t - t0) / (t1 - t0)
        return tuple(a + (b - a) * w for a, b in zip(c0, c1, strict=True))

    def cpu_cores_between(self, start: float, end: float) -> tuple[float, tuple[float, ...]] | None:
        """Average cores the server used between two perf_counter times: (total, per worker)."""
        # Give the sampler a chance to take one sample past the window's end.
        deadline = time.perf_counter() + 3 * _SAMPLE_INTERVAL_S
        while time.perf_counter() < deadline:
            with self._lock:
                if self._samples and self._samples[-1][0] >= end:
                    break
            time.sleep(_SAMPLE_INTERVAL_S / 2)
        a, b = self._at(start), self._at(end)
        if a is None or b is None or end <= start:
            return None
        cores = [max(0.0, (y - x) / (end - start)) for x, y in zip(a, b, strict=True)]
        return cores[0], tuple(cores[1:])

    def worker_rss(self) -> tuple[int, ...] | None:
        """RSS of each live worker now."""
        sizes: list[int] = []
        for p in self._workers:
            try:
                sizes.append(p.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return tuple(sizes) if sizes else None
