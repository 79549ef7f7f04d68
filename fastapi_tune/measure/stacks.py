"""Sampling the server workers' Python stacks with py-spy, so a verdict can name the line.

This module only measures: it runs py-spy on every worker at once for a window, reads its folded
stacks, and reads each thread's scheduler clock over the same window (py-spy's raw format drops
its own running/sleeping flag, and that flag is what tells a loop blocked in `time.sleep` from a
loop computing). Deciding what the stacks mean is `stack_attribution.attribute`, a pure function.

Every failure (py-spy missing, no ptrace permission, a worker gone) comes back as an `Unavailable`
value with a way to enable it, never as an exception: stack sampling is extra evidence, and a probe
must go on without it.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from fastapi_tune.measure.appfiles import AppFiles, is_library_path

__all__ = [
    "Frame",
    "StackRecorder",
    "StackSample",
    "ThreadStack",
    "Unavailable",
    "WorkerStacks",
    "find_py_spy",
    "is_user_file",
    "parse_raw",
    "sample_workers",
]

# py-spy prints this line once it has attached and its sampling loop starts: the window opens there.
_STARTED: Final = b"Sampling process"
# Attaching means reading the interpreter's symbols: ~0.1 s here, seconds on a loaded machine.
_ATTACH_TIMEOUT_S: Final = 10.0
# After SIGINT py-spy stops within one sampling interval and writes its file (a few ms here).
_STOP_GRACE_S: Final = 5.0
# py-spy pauses the target for each read unless --nonblocking. benchmarks/stacks_overhead.py on this
# 2-core machine (shared, run-to-run noise ~19%): blocking at 100 Hz cost 25% of a CPU route's
# throughput (beyond noise); nonblocking at 50 Hz stayed within noise and py-spy used ~25 ms of CPU
# per sampled second. Torn nonblocking reads are counted by py-spy as errors, not samples.
NONBLOCKING: Final = True
# CAP_SYS_PTRACE is bit 19 of the capability sets in /proc/self/status.
_CAP_SYS_PTRACE: Final = 19

_ENABLE_INSTALL: Final = "pip install 'fastapi-tune[profile]' (py-spy, a binary wheel)"
_ENABLE_PTRACE: Final = (
    "run fastapi-tune as root or as the server's user with ptrace allowed: "
    "`sysctl kernel.yama.ptrace_scope=0` (or sudo); in a container add the SYS_PTRACE capability "
    "(docker run --cap-add SYS_PTRACE; Kubernetes securityContext.capabilities.add: [SYS_PTRACE])"
)


@dataclass(frozen=True)
class Unavailable:
    """Why the stacks could not be sampled, and what would make it possible."""

    reason: str
    how_to_enable: str


@dataclass(frozen=True)
class Frame:
    function: str  # as py-spy names it: `Class.method`, `func.<locals>.inner`, `<module>`
    file: str  # absolute path (py-spy --full-filenames), or `<frozen runpy>`
    line: int  # 0 when py-spy could not tell


@dataclass(frozen=True)
class ThreadStack:
    """One distinct stack of one thread and how many samples found it there."""

    tid: str  # the OS thread id py-spy printed (decimal), or its pthread id in hex
    thread_name: str  # "" when py-spy could not read it
    frames: tuple[Frame, ...]  # outermost first, the running frame last
    count: int


@dataclass(frozen=True)
class WorkerStacks:
    pid: int
    stacks: tuple[ThreadStack, ...]
    # Per thread id: seconds the thread was on a CPU or runnable (waiting for one) in the window.
    # A thread whose samples sit in app code but that was neither was blocked there.
    thread_active_s: Mapping[str, float]
    raw: str = ""  # py-spy's output verbatim, kept for saving and for tests' fixtures
    # Per thread id: of thread_active_s, the seconds it was runnable but waiting for a CPU. A thread
    # woken in its selector on a starved host waits there, its stack still showing the selector.
    thread_wait_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StackSample:
    """What py-spy saw in every worker over one window, plus the source lines of the app's frames."""

    seconds: float  # the window, as timed here between py-spy's start and our SIGINT
    rate_hz: int
    workers: tuple[WorkerStacks, ...]
    sources: Mapping[str, str]  # "file:line" -> that line's text, for the user frames seen
    skipped: tuple[tuple[int, str], ...] = ()  # (pid, reason) of workers that could not be sampled


# ---------------------------------------------------------------------------------------
# Parsing py-spy's raw (folded) format. One line per distinct stack:
#   thread (6735): MainThread;_run_module_as_main (<frozen runpy>:198);...;loop_route (/app/main.py:32) 99
# With --threads the first element names the thread; frames are `function (file:line)`.

_THREAD_RE: Final = re.compile(r"^thread \((?P<tid>[0-9a-fA-Fx]+)\)(?:: (?P<name>.*))?$")
_FRAME_RE: Final = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _parse_frame(text: str) -> Frame:
    m = _FRAME_RE.match(text)
    if m is None:
        return Frame(function=text, file="", line=0)
    return Frame(function=m["function"], file=m["file"], line=int(m["line"] or 0))


def parse_raw(text: str) -> tuple[ThreadStack, ...]:
    """The folded stacks of py-spy's `--format raw --threads` output; malformed lines are skipped."""
    stacks: list[ThreadStack] = []
    for raw in text.splitlines():
        head, _, count = raw.rstrip().rpartition(" ")
        if not head or not count.isdigit():
            continue
        parts = head.split(";")
        thread = _THREAD_RE.match(parts[0])
        tid, name = (thread["tid"], thread["name"] or "") if thread else ("", "")
        frames = tuple(_parse_frame(p) for p in (parts[1:] if thread else parts))
        stacks.append(ThreadStack(tid=tid, thread_name=name, frames=frames, count=int(count)))
    return tuple(stacks)


def is_user_file(file: str, app_files: AppFiles | None) -> bool:
    """Is this frame's file the app's own code (as the server found it; else not stdlib or installed)?

    A library directory inside one of the app's roots (a venv in the project) is not the app's;
    the app's own package is, even when it was installed into site-packages (the demo's sample app).
    """
    if not file.endswith(".py"):
        return False  # <frozen runpy>, <string>, a console script (.venv/bin/uvicorn): not the app's
    if app_files is None:
        return not is_library_path(file)
    root = app_files.root_of(file)
    return root is not None and (is_library_path(root.path) or not is_library_path(file))


# ---------------------------------------------------------------------------------------
# Running py-spy (the I/O edge).


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (the same venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def _ptrace_blocked() -> Unavailable | None:
    """What the kernel's ptrace policy says before trying (Yama; absent on many kernels)."""
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return None
    if scope == "3":
        return Unavailable(
            "the kernel forbids attaching to processes (kernel.yama.ptrace_scope = 3, until reboot)",
            "boot with a lower kernel.yama.ptrace_scope to sample stacks",
        )
    if scope in ("1", "2") and not _has_cap_sys_ptrace():
        return Unavailable(
            f"kernel.yama.ptrace_scope = {scope} and this process lacks CAP_SYS_PTRACE", _ENABLE_PTRACE
        )
    return None


def _has_cap_sys_ptrace() -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return os.geteuid() == 0
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", status, re.MULTILINE)
    return m is not None and bool(int(m[1], 16) >> _CAP_SYS_PTRACE & 1)


def _failure(pid: int, stderr: str) -> Unavailable:
    """Turn py-spy's stderr into a reason a user can act on."""
    text = stderr.lower()
    first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "no output")
    if "permission denied" in text or "operation not permitted" in text:
        return Unavailable(f"not allowed to read process {pid}'s memory (ptrace): {first}", _ENABLE_PTRACE)
    if (
        "no such file" in text
        or "check that the process is running" in text
        or not Path(f"/proc/{pid}").exists()
    ):
        return Unavailable(f"process {pid} is gone: {first}", "sample while the server is running")
    return Unavailable(f"py-spy failed on process {pid}: {first}", "run `py-spy dump --pid PID` to see why")


def _active_seconds(pid: int) -> dict[str, tuple[float, float]]:
    """Per thread of pid: (seconds on a CPU or waiting for one, seconds waiting), from schedstat."""
    out: dict[str, tuple[float, float]] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # schedstat: ns on CPU, ns runnable on a run queue, timeslices.
                run_ns, wait_ns, *_ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
                out[tid] = ((int(run_ns) + int(wait_ns)) / 1e9, int(wait_ns) / 1e9)
    return out


@dataclass
class _Run:
    pid: int
    proc: subprocess.Popen[bytes]
    out: Path
    started: bool = False
    active_start: dict[str, tuple[float, float]] = field(default_factory=dict)
    active_end: dict[str, tuple[float, float]] = field(default_factory=dict)


def _spawn(exe: str, pid: int, rate_hz: int, out: Path, nonblocking: bool) -> subprocess.Popen[bytes]:
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw", "-o", str(out)]
    # --idle keeps sleeping threads (a loop blocked in time.sleep sleeps), --threads names them,
    # --full-filenames lets us tell the app's files from libraries.
    argv += ["--idle", "--threads", "--full-filenames", "--duration", "unlimited"]
    if nonblocking:
        argv.append("--nonblocking")
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C at the terminal is ours to forward, not py-spy's to take
    )


def _wait_started(runs: Sequence[_Run], deadline: float) -> None:
    """Read each py-spy's stdout until it says it is sampling, one exits, or the deadline."""
    pending = {r.proc.stdout.fileno(): r for r in runs if r.proc.stdout is not None}
    seen: dict[int, bytes] = dict.fromkeys(pending, b"")
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        for fd in ready:
            chunk = os.read(fd, 4096)
            seen[fd] += chunk
            if _STARTED in seen[fd]:
                pending.pop(fd).started = True
            elif not chunk:
                pending.pop(fd)  # py-spy exited before sampling: its stderr says why


def _stop(run: _Run) -> None:
    """SIGINT: py-spy stops within one interval and writes its file (_reap kills it if it overruns)."""
    if run.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            run.proc.send_signal(signal.SIGINT)


def _reap(run: _Run, deadline: float) -> str:
    """Wait for py-spy to exit (killing it at the deadline) and return its stderr."""
    try:
        _, err = run.proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.proc.kill()
        _, err = run.proc.communicate()
        return "py-spy did not stop in time and was killed\n" + err.decode(errors="replace")
    return err.decode(errors="replace")


@contextlib.contextmanager
def _spawned(exe: str, pids: Sequence[int], rate_hz: int, nonblocking: bool) -> Iterator[list[_Run]]:
    """py-spy on every pid; whatever happens, none is left running and the temp files go."""
    with tempfile.TemporaryDirectory(prefix="fastapi-tune-stacks-") as tmp:
        runs: list[_Run] = []
        try:
            for pid in pids:
                out = Path(tmp) / f"{pid}.txt"
                runs.append(_Run(pid, _spawn(exe, pid, rate_hz, out, nonblocking), out))
            yield runs
        finally:
            for run in runs:
                if run.proc.poll() is None:
                    run.proc.kill()
                run.proc.wait()
                for stream in (run.proc.stdout, run.proc.stderr):
                    if stream is not None:
                        stream.close()


def _user_sources(workers: Sequence[WorkerStacks], app_files: AppFiles | None) -> dict[str, str]:
    """The text of every app line seen, read here so the attribution stays pure."""
    sources: dict[str, str] = {}
    for w in workers:
        for s in w.stacks:
            for f in s.frames:
                key = f"{f.file}:{f.line}"
                if key not in sources and f.line > 0 and is_user_file(f.file, app_files):
                    sources[key] = linecache.getline(f.file, f.line).strip()
    return sources


def _cannot_sample(pids: Sequence[int]) -> tuple[str | None, Unavailable | None]:
    """py-spy's path, or why sampling cannot start (no pid, no py-spy, ptrace forbidden)."""
    if not pids:
        return None, Unavailable("no worker process to sample", "sample a local server (its pid is known)")
    exe = find_py_spy()
    if exe is None:
        return None, Unavailable("py-spy is not installed", _ENABLE_INSTALL)
    return exe, _ptrace_blocked()


def _finish(
    runs: Sequence[_Run], t0: float, rate_hz: int, app_files: AppFiles | None
) -> StackSample | Unavailable:
    """Close the window opened at t0: read the threads' clocks, stop every py-spy, read their stacks."""
    window = time.monotonic() - t0
    for run in runs:
        run.active_end = _active_seconds(run.pid)
        _stop(run)
    deadline = time.monotonic() + _STOP_GRACE_S
    return _collect(runs, [_reap(run, deadline) for run in runs], window, rate_hz, app_files)


def sample_workers(
    pids: Sequence[int],
    seconds: float,
    rate_hz: int,
    app_files: AppFiles | None,
    *,
    nonblocking: bool = NONBLOCKING,
) -> StackSample | Unavailable:
    """Sample every worker's stacks for `seconds` at `rate_hz`, all at once; never raises for
    py-spy's or the system's reasons, and leaves no py-spy behind (hard deadline, then SIGKILL)."""
    exe, why_not = _cannot_sample(pids)
    if exe is None or why_not is not None:
        assert why_not is not None
        return why_not
    with _spawned(exe, pids, rate_hz, nonblocking) as runs:
        _wait_started(runs, time.monotonic() + _ATTACH_TIMEOUT_S)
        for run in runs:
            run.active_start = _active_seconds(run.pid)
        t0 = time.monotonic()
        if any(run.started for run in runs):
            time.sleep(seconds)
        return _finish(runs, t0, rate_hz, app_files)


class StackRecorder:
    """Sample every worker for as long as the caller's own work runs (a level's burst).

    `start()` spawns py-spy and returns at once: py-spy attaches while the burst opens its
    connections and warms up (~0.1-0.2 s here), and the window opens when every py-spy samples.
    `stop()` closes it. Like sample_workers it never raises for py-spy's reasons and leaves no
    py-spy behind; one still attaching when `stop()` comes gives an Unavailable, not a short sample.
    """

    def __init__(self, pids: Sequence[int], rate_hz: int, app_files: AppFiles | None) -> None:
        self.pids = tuple(pids)
        self.rate_hz = rate_hz
        self.app_files = app_files
        self._stack = contextlib.ExitStack()
        self._runs: list[_Run] = []
        self._t0: float | None = None
        self._why_not: Unavailable | None = None
        self._attach: threading.Thread | None = None

    def start(self) -> None:
        exe, self._why_not = _cannot_sample(self.pids)
        if exe is None or self._why_not is not None:
            return
        self._runs = self._stack.enter_context(_spawned(exe, self.pids, self.rate_hz, NONBLOCKING))
        self._attach = threading.Thread(target=self._wait_attached, name="py-spy attach", daemon=True)
        self._attach.start()

    def _wait_attached(self) -> None:
        _wait_started(self._runs, time.monotonic() + _ATTACH_TIMEOUT_S)
        if all(run.started for run in self._runs):
            for run in self._runs:
                run.active_start = _active_seconds(run.pid)
            self._t0 = time.monotonic()

    def sampled_s(self) -> float:
        """Seconds every py-spy has been sampling (0 while they attach)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def stop(self) -> StackSample | Unavailable:
        """Close the window; every py-spy is gone when this returns."""
        with self._stack:
            if self._why_not is not None:
                return self._why_not
            if self._attach is not None and self._t0 is None:
                for run in self._runs:  # still attaching: its stdout closes and the wait ends
                    if run.proc.poll() is None:
                        run.proc.kill()
            if self._attach is not None:
                self._attach.join(_ATTACH_TIMEOUT_S + 1)
            if self._t0 is None:
                return Unavailable(
                    "py-spy had not attached when the load ended (a busy machine attaches slowly)",
                    "probe again, or give the probe more time with --max-seconds",
                )
            return _finish(self._runs, self._t0, self.rate_hz, self.app_files)


def _collect(
    runs: Sequence[_Run], errors: Sequence[str], window: float, rate_hz: int, app_files: AppFiles | None
) -> StackSample | Unavailable:
    workers: list[WorkerStacks] = []
    skipped: list[tuple[int, str]] = []
    failures: list[Unavailable] = []
    for run, err in zip(runs, errors, strict=True):
        text = run.out.read_text(errors="replace") if run.out.exists() else ""
        stacks = parse_raw(text)
        if not run.started or not stacks:
            failure = _failure(run.pid, err)
            failures.append(failure)
            skipped.append((run.pid, failure.reason))
            continue
        born = (0.0, 0.0)  # a thread born in the window started at 0
        active = {tid: end[0] - run.active_start.get(tid, born)[0] for tid, end in run.active_end.items()}
        wait = {tid: end[1] - run.active_start.get(tid, born)[1] for tid, end in run.active_end.items()}
        workers.append(WorkerStacks(run.pid, stacks, MappingProxyType(active), text, MappingProxyType(wait)))
    if not workers:
        return failures[0]
    sources = MappingProxyType(_user_sources(workers, app_files))
    return StackSample(window, rate_hz, tuple(workers), sources, tuple(skipped))
