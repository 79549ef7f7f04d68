"""CPU demand over a window: how much the server ran, how much it waited for a CPU, and who else ran.

A worker that waits for a CPU and a worker that sleeps in a blocking call both show low CPU use; only
the scheduler's own counters tell them apart. Per thread, Linux keeps ns on CPU and ns runnable but
waiting (/proc/PID/task/TID/schedstat); host-wide, /proc/pressure/cpu (PSI) counts the time some task
waited, /proc/stat the idle time, and /proc/PID/stat every process's CPU ticks. Two snapshots around
a probe level, and the pure `demand_between`, give the level's demand.

Measurement only: the one judgement here, `LevelDemand.starved` (and `HostBusy.busy` for the warning
before a probe), is a documented threshold; what to do with it belongs to classify.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi_tune.core.jsonread import JsonReader

__all__ = [
    "BUSY_OTHERS_CORES",
    "BUSY_PRESSURE",
    "STARVED_IDLE_CORES",
    "STARVED_WAIT_CORES",
    "TOP_OTHERS",
    "TOP_OTHERS_FLOOR_CORES",
    "Consumer",
    "DemandWatcher",
    "HostBusy",
    "LevelDemand",
    "Snapshot",
    "WorkerDemand",
    "demand_between",
    "demand_from_json",
    "demand_to_json",
    "host_busy_now",
    "supported",
]

# A level is starved when the host had less than a tenth of a core idle while the server's threads
# spent at least a tenth of a core runnable but not running: the CPU the server asked for went to
# someone else, so its CPU use understates what it wanted. 0.1 core is above the wake-up latency a
# sleeping worker shows on a quiet host (a loop-blocking route measured ~0.01 core of wait here) and
# below what one busy worker loses beside one busy-loop per core (~0.5 core).
STARVED_IDLE_CORES: Final = 0.1
STARVED_WAIT_CORES: Final = 0.1
# Before a probe: other processes using a quarter of a core, or tasks waiting for a CPU 10% of the
# time, already take a visible share of a small host (on 2 cores a quarter core is ~12%) and will
# bend the curves the classifier reads; the probe should say so.
BUSY_OTHERS_CORES: Final = 0.25
BUSY_PRESSURE: Final = 0.10
# The consumers worth naming: /proc/PID/stat counts in 10 ms ticks, so over a 0.5 s window one tick
# is 0.02 core; 0.05 core is clear of that rounding. Three names are enough to point at the culprit.
TOP_OTHERS_FLOOR_CORES: Final = 0.05
TOP_OTHERS: Final = 3

_NS: Final = 1e9
_US: Final = 1e6


# ---------------------------------------------------------------------------------------
# What is read from /proc, and the pure parsers for it.


@dataclass(frozen=True)
class SchedStat:
    """One thread's scheduler counters: /proc/PID/task/TID/schedstat."""

    on_cpu_ns: int
    wait_ns: int  # runnable, on a run queue, not running
    timeslices: int


@dataclass(frozen=True)
class ProcStat:
    """One process's name and CPU from /proc/PID/stat (all its threads, dead ones included)."""

    name: str
    cpu_ticks: int  # utime + stime, in clock ticks
    start_ticks: int  # start time after boot, in clock ticks: tells a reused pid from the old one


@dataclass(frozen=True)
class HostCpu:
    """The `cpu` line of /proc/stat, in clock ticks summed over all CPUs."""

    idle_ticks: int  # idle + iowait: a CPU waiting on a disk is free to run anything
    steal_ticks: int  # taken by the hypervisor for other guests
    total_ticks: int
    cpus: int


def parse_schedstat(text: str) -> SchedStat:
    """'ON_CPU_NS WAIT_NS TIMESLICES' -> SchedStat."""
    on_cpu, wait, slices = text.split()[:3]
    return SchedStat(int(on_cpu), int(wait), int(slices))


def parse_pid_stat(text: str) -> ProcStat:
    """/proc/PID/stat -> name, utime + stime, start time.

    The name sits in parentheses and may itself hold spaces and parentheses, so the fields are
    counted from the last ')'.
    """
    open_at, close_at = text.index("("), text.rindex(")")
    rest = text[close_at + 2 :].split()
    # rest[0] is field 3 (state): utime, stime and starttime are fields 14, 15 and 22 (proc(5)).
    return ProcStat(
        name=text[open_at + 1 : close_at],
        cpu_ticks=int(rest[11]) + int(rest[12]),
        start_ticks=int(rest[19]),
    )


def parse_proc_stat(text: str) -> HostCpu:
    """/proc/stat -> the host's idle, steal and total ticks, and the number of CPUs online."""
    total_line = ""
    cpus = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            total_line = line
        elif line.startswith("cpu"):
            cpus += 1
    if not total_line:
        raise ValueError("no 'cpu' line in /proc/stat")
    ticks = [int(x) for x in total_line.split()[1:]]
    ticks += [0] * (8 - len(ticks))  # old kernels end the line before steal
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    # guest and guest_nice (columns 9-10) are already inside user and nice.
    return HostCpu(
        idle_ticks=idle + iowait,
        steal_ticks=steal,
        total_ticks=user + nice + system + idle + iowait + irq + softirq + steal,
        cpus=max(cpus, 1),
    )


def parse_psi_some_total(text: str) -> int | None:
    """/proc/pressure/cpu -> the `some` line's total= (microseconds some task waited), or None."""
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                if field.startswith("total="):
                    return int(field[len("total=") :])
    return None


def parse_uptime(text: str) -> float:
    """/proc/uptime -> seconds since boot."""
    return float(text.split(maxsplit=1)[0])


# ---------------------------------------------------------------------------------------
# A snapshot: everything read at one instant. I/O is confined to the readers below.


@dataclass(frozen=True)
class Snapshot:
    """Counters read at one instant; two of them make a LevelDemand."""

    at: float  # time.perf_counter(), the clock loadgen's window_start/window_end use
    uptime_s: float | None  # seconds since boot: tells a process born in the window from one missed
    ticks_per_s: int
    worker_pids: tuple[int, ...]
    excluded: frozenset[int]  # the workers, the caller's exclusions and this process
    threads: Mapping[int, Mapping[int, SchedStat]]  # worker pid -> tid -> counters; unreadable: absent
    procs: Mapping[int, ProcStat]  # every readable process, excluded ones too
    host: HostCpu | None
    psi_some_us: int | None  # None: PSI disabled or absent


def _read(path: str) -> str | None:
    """A small /proc file, or None when it is gone or unreadable (os.open: ~3 µs a file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 8192).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_threads(proc: str, pid: int) -> dict[int, SchedStat] | None:
    """Counters of every thread of a process, or None when the process is gone."""
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return None
    out: dict[int, SchedStat] = {}
    for tid in tids:
        text = _read(f"{proc}/{pid}/task/{tid}/schedstat")
        if text is not None:  # a thread that ended between the listing and the read
            try:
                out[int(tid)] = parse_schedstat(text)
            except (ValueError, IndexError):
                continue
    return out or None


def _read_procs(proc: str) -> dict[int, ProcStat]:
    """/proc/PID/stat of every process: ~5 µs each, so 200 processes cost ~1 ms."""
    out: dict[int, ProcStat] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        text = _read(f"{proc}/{name}/stat")
        if text is None:
            continue
        try:
            out[int(name)] = parse_pid_stat(text)
        except (ValueError, IndexError):
            continue
    return out


def _read_host(proc: str) -> tuple[HostCpu | None, int | None, float | None]:
    stat, psi, uptime = _read(f"{proc}/stat"), _read(f"{proc}/pressure/cpu"), _read(f"{proc}/uptime")
    try:
        host = parse_proc_stat(stat) if stat is not None else None
    except ValueError:
        host = None
    try:
        some = parse_psi_some_total(psi) if psi is not None else None
    except ValueError:
        some = None
    try:
        up = parse_uptime(uptime) if uptime is not None else None
    except (ValueError, IndexError):
        up = None
    return host, some, up


def supported(proc: Path = Path("/proc")) -> bool:
    """Whether this system exposes per-thread scheduler counters (Linux with schedstat)."""
    return _read(f"{proc}/self/schedstat") is not None and _read(f"{proc}/stat") is not None


def take_snapshot(
    worker_pids: Sequence[int], exclude_pids: Sequence[int] = (), proc: Path = Path("/proc")
) -> Snapshot:
    """Read every counter once; the workers' threads first, they matter most."""
    root = str(proc)
    at = time.perf_counter()
    threads = {pid: t for pid in worker_pids if (t := _read_threads(root, pid)) is not None}
    procs = _read_procs(root)
    host, psi, uptime = _read_host(root)
    return Snapshot(
        at=at,
        uptime_s=uptime,
        ticks_per_s=os.sysconf("SC_CLK_TCK"),
        worker_pids=tuple(worker_pids),
        excluded=frozenset((*worker_pids, *exclude_pids, os.getpid())),
        threads=threads,
        procs=procs,
        host=host,
        psi_some_us=psi,
    )


# ---------------------------------------------------------------------------------------
# The demand of one window: pure arithmetic on two snapshots.


@dataclass(frozen=True)
class WorkerDemand:
    """One worker over the window, summed over all its threads, in cores."""

    pid: int
    on_cpu_cores: float
    wait_cores: float  # runnable but not running: the CPU it wanted and did not get
    timeslices: int

    @property
    def demand_cores(self) -> float:
        """What the worker asked for: running plus waiting to run."""
        return self.on_cpu_cores + self.wait_cores


@dataclass(frozen=True)
class Consumer:
    """Another process on the host and the cores it used over the window."""

    name: str
    pid: int
    cores: float


@dataclass(frozen=True)
class LevelDemand:
    """CPU demand of the server and the host over one window (a probe level)."""

    window_s: float
    workers: tuple[WorkerDemand, ...]
    missing_pids: tuple[int, ...]  # workers gone, replaced or unreadable at either end of the window
    host_cpus: int
    host_idle_cores: float | None  # None: /proc/stat unreadable
    host_steal_cores: float | None
    host_cpu_pressure: float | None  # share of the window some task waited for a CPU; None without PSI
    others_cores: float  # processes other than the server's and this one (its threads included)
    top_others: tuple[Consumer, ...]  # the biggest of them, at most TOP_OTHERS, above the floor

    @property
    def on_cpu_cores(self) -> float:
        """All workers' CPU use."""
        return sum(w.on_cpu_cores for w in self.workers)

    @property
    def wait_cores(self) -> float:
        """All workers' time runnable but waiting for a CPU."""
        return sum(w.wait_cores for w in self.workers)

    @property
    def demand_cores(self) -> float:
        """What the server asked for: on CPU plus waiting for one."""
        return self.on_cpu_cores + self.wait_cores

    @property
    def starved(self) -> bool:
        """The host had no CPU to spare while the server waited for one (see STARVED_*)."""
        return (
            self.host_idle_cores is not None
            and self.host_idle_cores < STARVED_IDLE_CORES
            and self.wait_cores >= STARVED_WAIT_CORES
        )


def _thread_delta(before: Mapping[int, SchedStat], after: Mapping[int, SchedStat]) -> tuple[int, int, int]:
    """(on-CPU ns, wait ns, timeslices) the threads accrued between two reads.

    A thread born in the window started from zero, so all of its counters belong to the window; a
    thread that ended took its counters with it (an undercount, never a negative; _on_cpu_ns makes
    up the CPU part). A counter that went down means the tid was reused by a new thread: that one is
    counted from zero too.
    """
    on_cpu = wait = slices = 0
    for tid, b in after.items():
        a = before.get(tid)
        if a is None or b.on_cpu_ns < a.on_cpu_ns or b.wait_ns < a.wait_ns or b.timeslices < a.timeslices:
            a = SchedStat(0, 0, 0)
        on_cpu += b.on_cpu_ns - a.on_cpu_ns
        wait += b.wait_ns - a.wait_ns
        slices += b.timeslices - a.timeslices
    return on_cpu, wait, slices


def _same_process(a: Snapshot, b: Snapshot, pid: int) -> bool:
    pa, pb = a.procs.get(pid), b.procs.get(pid)
    return pa is None or pb is None or pa.start_ticks == pb.start_ticks


def _workers(a: Snapshot, b: Snapshot, window_s: float) -> tuple[tuple[WorkerDemand, ...], tuple[int, ...]]:
    workers: list[WorkerDemand] = []
    missing: list[int] = []
    for pid in a.worker_pids:
        before, after = a.threads.get(pid), b.threads.get(pid)
        if before is None or after is None or not _same_process(a, b, pid):
            missing.append(pid)
            continue
        on_cpu, wait, slices = _thread_delta(before, after)
        on_cpu = _on_cpu_ns(a, b, pid, on_cpu)
        workers.append(WorkerDemand(pid, on_cpu / _NS / window_s, wait / _NS / window_s, slices))
    return tuple(workers), tuple(missing)


def _on_cpu_ns(a: Snapshot, b: Snapshot, pid: int, threads_ns: int) -> int:
    """The threads' CPU time, or the process's own count when threads that ended took more with them.

    /proc/PID/stat keeps the CPU time of ended threads but counts in clock ticks, so it is preferred
    only when it exceeds the threads' sum by more than its own rounding (two ticks). The wait of
    ended threads has no such record: it stays an undercount.
    """
    pa, pb = a.procs.get(pid), b.procs.get(pid)
    if pa is None or pb is None:
        return threads_ns
    process_ns = (pb.cpu_ticks - pa.cpu_ticks) * _NS / b.ticks_per_s
    return int(process_ns) if process_ns > threads_ns + 2 * _NS / b.ticks_per_s else threads_ns


def _others(a: Snapshot, b: Snapshot, window_s: float) -> list[Consumer]:
    """Cores each other process used in the window; ones that ended in it are lost (undercount)."""
    hz = b.ticks_per_s
    out: list[Consumer] = []
    for pid, pb in b.procs.items():
        if pid in b.excluded or pid in a.excluded:
            continue
        pa = a.procs.get(pid)
        if pa is None or pa.start_ticks != pb.start_ticks:
            # Not there before: count it from zero only if it was born inside the window, so a
            # process missed by the first read never lends its lifetime CPU to one window.
            if a.uptime_s is None or pb.start_ticks / hz < a.uptime_s - 1 / hz:
                continue
            ticks = pb.cpu_ticks
        else:
            ticks = pb.cpu_ticks - pa.cpu_ticks
        if ticks > 0:
            out.append(Consumer(pb.name, pid, ticks / hz / window_s))
    return out


def _host(a: Snapshot, b: Snapshot, window_s: float) -> tuple[int, float | None, float | None, float | None]:
    """(CPUs, idle cores, steal cores, CPU pressure) of the host over the window."""
    cpus = (b.host or a.host or HostCpu(0, 0, 0, os.cpu_count() or 1)).cpus
    idle = steal = None
    if a.host is not None and b.host is not None and b.host.total_ticks > a.host.total_ticks:
        # Shares of the ticks that went by, times the CPUs: immune to the tick rounding of the window.
        total = b.host.total_ticks - a.host.total_ticks
        idle = max(0, b.host.idle_ticks - a.host.idle_ticks) / total * cpus
        steal = max(0, b.host.steal_ticks - a.host.steal_ticks) / total * cpus
    pressure = None
    if a.psi_some_us is not None and b.psi_some_us is not None:
        pressure = min(1.0, max(0, b.psi_some_us - a.psi_some_us) / _US / window_s)
    return cpus, idle, steal, pressure


def demand_between(a: Snapshot, b: Snapshot, top: int = TOP_OTHERS) -> LevelDemand:
    """The demand between two snapshots of the same watcher, a taken before b; `top` others named."""
    window_s = b.at - a.at
    if window_s <= 0:
        raise ValueError("the second snapshot must be taken after the first")
    workers, missing = _workers(a, b, window_s)
    others = _others(a, b, window_s)
    cpus, idle, steal, pressure = _host(a, b, window_s)
    biggest = sorted((c for c in others if c.cores >= TOP_OTHERS_FLOOR_CORES), key=lambda c: -c.cores)
    return LevelDemand(
        window_s=window_s,
        workers=workers,
        missing_pids=missing,
        host_cpus=cpus,
        host_idle_cores=idle,
        host_steal_cores=steal,
        host_cpu_pressure=pressure,
        others_cores=sum(c.cores for c in others),
        top_others=tuple(biggest[:top]),
    )


class DemandWatcher:
    """Two snapshots around a window: `start()` before the level, `stop()` after it."""

    def __init__(
        self, worker_pids: Sequence[int], exclude_pids: Sequence[int] = (), proc: Path = Path("/proc")
    ) -> None:
        self.worker_pids = tuple(worker_pids)
        self.exclude_pids = tuple(exclude_pids)
        self._proc = proc
        self._start: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        """Read every counter now (~1-2 ms with 200 processes)."""
        return take_snapshot(self.worker_pids, self.exclude_pids, self._proc)

    def start(self) -> Snapshot:
        """Open a window; also returned, for callers that pair snapshots themselves."""
        self._start = self.snapshot()
        return self._start

    def stop(self) -> LevelDemand:
        """Close the window opened by start() and measure it."""
        if self._start is None:
            raise RuntimeError("stop() without start()")
        start, self._start = self._start, None
        return demand_between(start, self.snapshot())


# ---------------------------------------------------------------------------------------
# The host before a probe.


@dataclass(frozen=True)
class HostBusy:
    """How busy the host is with other work, sampled before a probe."""

    sample_s: float
    cpus: int
    load_average: tuple[float, float, float] | None
    cpu_pressure: float | None  # share of the sample some task waited for a CPU; None without PSI
    idle_cores: float | None
    others_cores: float  # every process but this one (and exclude_pids)
    top_others: tuple[Consumer, ...]

    @property
    def busy(self) -> bool:
        """Other work takes enough CPU to bend the probe's curves (see BUSY_*)."""
        pressured = self.cpu_pressure is not None and self.cpu_pressure >= BUSY_PRESSURE
        return pressured or self.others_cores >= BUSY_OTHERS_CORES


def host_busy_now(
    sample_s: float = 0.5, exclude_pids: Sequence[int] = (), proc: Path = Path("/proc"), top: int = TOP_OTHERS
) -> HostBusy:
    """Sample the host for `sample_s` seconds: who else is using the CPU right now."""
    start = take_snapshot((), exclude_pids, proc)
    time.sleep(sample_s)
    d = demand_between(start, take_snapshot((), exclude_pids, proc), top)
    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    return HostBusy(
        sample_s=d.window_s,
        cpus=d.host_cpus,
        load_average=load,
        cpu_pressure=d.host_cpu_pressure,
        idle_cores=d.host_idle_cores,
        others_cores=d.others_cores,
        top_others=d.top_others,
    )


# ---------------------------------------------------------------------------------------
# JSON: what a probe report keeps per level.


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def demand_to_json(d: LevelDemand) -> dict[str, Any]:
    """The JSON object a level's `demand` holds; totals and `starved` are written for readers."""
    return {
        "window_s": round(d.window_s, 4),
        "workers": [
            {
                "pid": w.pid,
                "on_cpu_cores": round(w.on_cpu_cores, 4),
                "wait_cores": round(w.wait_cores, 4),
                "timeslices": w.timeslices,
            }
            for w in d.workers
        ],
        "missing_pids": list(d.missing_pids),
        "on_cpu_cores": round(d.on_cpu_cores, 4),
        "wait_cores": round(d.wait_cores, 4),
        "starved": d.starved,
        "host_cpus": d.host_cpus,
        "host_idle_cores": _round(d.host_idle_cores),
        "host_steal_cores": _round(d.host_steal_cores),
        "host_cpu_pressure": _round(d.host_cpu_pressure),
        "others_cores": round(d.others_cores, 4),
        "top_others": [{"name": c.name, "pid": c.pid, "cores": round(c.cores, 4)} for c in d.top_others],
    }


# The one reader of checked JSON (jsonread.py); `where` already names the file and the key path.
_READ: Final = JsonReader("")


def _obj(d: object, where: str) -> Mapping[str, Any]:
    return _READ.obj(d, where)


def _num(d: Mapping[str, Any], key: str, where: str) -> float:
    """A finite, non-negative number: cores, seconds and shares are never below zero."""
    return _READ.num(d.get(key), f"{where}.{key}", 0)


def _opt_num(d: Mapping[str, Any], key: str, where: str) -> float | None:
    return _READ.opt_num(d.get(key), f"{where}.{key}", 0)


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    return _READ.int_(d.get(key), f"{where}.{key}", 0)


def _list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    return _READ.list_(d.get(key), f"{where}.{key}")


def _worker_from_json(raw: object, where: str) -> WorkerDemand:
    d = _obj(raw, where)
    return WorkerDemand(
        pid=_int(d, "pid", where),
        on_cpu_cores=_num(d, "on_cpu_cores", where),
        wait_cores=_num(d, "wait_cores", where),
        timeslices=_int(d, "timeslices", where),
    )


def _consumer_from_json(raw: object, where: str) -> Consumer:
    d = _obj(raw, where)
    name = d.get("name")
    if not isinstance(name, str):
        raise _READ.fail(f"{where}.name", "a string")
    return Consumer(name=name, pid=_int(d, "pid", where), cores=_num(d, "cores", where))


def demand_from_json(raw: object, where: str) -> LevelDemand:
    """Rebuild a LevelDemand saved by demand_to_json; `where` names it in errors (BadInputError).

    The totals and `starved` are derived, so they are recomputed rather than read.
    """
    d = _obj(raw, where)
    missing = _list(d, "missing_pids", where)
    for i, pid in enumerate(missing):
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise _READ.fail(f"{where}.missing_pids[{i}]", "an integer")
    return LevelDemand(
        window_s=_num(d, "window_s", where),
        workers=tuple(
            _worker_from_json(w, f"{where}.workers[{i}]") for i, w in enumerate(_list(d, "workers", where))
        ),
        missing_pids=tuple(missing),
        host_cpus=_int(d, "host_cpus", where),
        host_idle_cores=_opt_num(d, "host_idle_cores", where),
        host_steal_cores=_opt_num(d, "host_steal_cores", where),
        host_cpu_pressure=_opt_num(d, "host_cpu_pressure", where),
        others_cores=_num(d, "others_cores", where),
        top_others=tuple(
            _consumer_from_json(c, f"{where}.top_others[{i}]")
            for i, c in enumerate(_list(d, "top_others", where))
        ),
    )


def host_busy_to_json(h: HostBusy) -> dict[str, Any]:
    """How busy the host was when the probe started, as the report's `host_load`."""
    return {
        "sample_s": _round(h.sample_s),
        "cpus": h.cpus,
        "load_average": list(h.load_average) if h.load_average is not None else None,
        "cpu_pressure": _round(h.cpu_pressure),
        "idle_cores": _round(h.idle_cores),
        "others_cores": _round(h.others_cores),
        "top_others": [{"name": c.name, "pid": c.pid, "cores": _round(c.cores)} for c in h.top_others],
        "busy": h.busy,
    }


def host_busy_from_json(raw: object, where: str) -> HostBusy:
    """Rebuild `host_load`; `busy` is derived, so it is recomputed rather than read."""
    d = _obj(raw, where)
    la = d.get("load_average")
    loads = _list(d, "load_average", where) if la is not None else None
    return HostBusy(
        sample_s=_num(d, "sample_s", where),
        cpus=_int(d, "cpus", where),
        load_average=(float(loads[0]), float(loads[1]), float(loads[2]))
        if loads and len(loads) == 3
        else None,
        cpu_pressure=_opt_num(d, "cpu_pressure", where),
        idle_cores=_opt_num(d, "idle_cores", where),
        others_cores=_num(d, "others_cores", where),
        top_others=tuple(
            _consumer_from_json(c, f"{where}.top_others[{i}]")
            for i, c in enumerate(_list(d, "top_others", where))
        ),
    )
