"""fastapi_tune.measure.demand: parsers on fixture text, the window arithmetic on built snapshots, JSON.

/proc differs per machine, so its content is faked here; tests/test_demand_live.py reads the real one.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.measure import demand as dm
from fastapi_tune.measure.demand import (
    Consumer,
    HostCpu,
    LevelDemand,
    ProcStat,
    SchedStat,
    Snapshot,
    WorkerDemand,
    demand_between,
    demand_from_json,
    demand_to_json,
)

# Real shapes, from a 6.x kernel (values edited).
PID_STAT = (
    "4242 (uvicorn) S 1 4242 4242 0 -1 4194560 9001 0 0 0 150 25 0 0 20 0 3 0 27000 "
    "123456789 4000 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0 0 0 0"
)
# A name may hold spaces and parentheses; fields are counted from the last ')'.
PID_STAT_ODD_NAME = (
    "77 (a (b) c) R 1 77 77 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0 500 "
    "1 1 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"
)
PROC_STAT = """cpu  10064 5 2170 29246 93 1 65 51 7 0
cpu0 4827 0 1036 14932 8 0 10 27 0 0
cpu1 5236 5 1134 14313 84 1 54 24 7 0
intr 1234 0 0
ctxt 99
btime 1700000000
"""
PSI = """some avg10=7.57 avg60=1.88 avg300=0.69 total=3073575
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
"""


def test_parse_schedstat() -> None:
    assert dm.parse_schedstat("123456789 5000 42\n") == SchedStat(123456789, 5000, 42)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(PID_STAT, ProcStat("uvicorn", 175, 27000), id="plain"),
        pytest.param(PID_STAT_ODD_NAME, ProcStat("a (b) c", 10, 500), id="parentheses-in-name"),
    ],
)
def test_parse_pid_stat(text: str, expected: ProcStat) -> None:
    assert dm.parse_pid_stat(text) == expected


def test_parse_proc_stat_counts_iowait_idle_and_leaves_guest_out() -> None:
    host = dm.parse_proc_stat(PROC_STAT)
    assert host == HostCpu(
        idle_ticks=29246 + 93, steal_ticks=51, total_ticks=10064 + 5 + 2170 + 29246 + 93 + 1 + 65 + 51, cpus=2
    )


def test_parse_proc_stat_without_cpu_line() -> None:
    with pytest.raises(ValueError, match="cpu"):
        dm.parse_proc_stat("intr 1 2\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(PSI, 3073575, id="kernel-6"),
        pytest.param("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", None, id="no-some-line"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_psi_some_total(text: str, expected: int | None) -> None:
    assert dm.parse_psi_some_total(text) == expected


# ---------------------------------------------------------------------------------------
# demand_between on built snapshots.

HZ = 100
SERVER = 4242
OTHER = 900
NEW_OTHER = 901


def _snap(
    at: float,
    threads: dict[int, dict[int, SchedStat]],
    procs: dict[int, ProcStat],
    *,
    host: HostCpu | None = None,
    psi: int | None = None,
    uptime: float | None = 1000.0,
    workers: tuple[int, ...] = (SERVER,),
) -> Snapshot:
    return Snapshot(
        at=at,
        uptime_s=uptime,
        ticks_per_s=HZ,
        worker_pids=workers,
        excluded=frozenset((*workers, os.getpid())),
        threads=threads,
        procs=procs,
        host=host,
        psi_some_us=psi,
    )


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def test_threads_that_come_and_go_never_give_negative_numbers() -> None:
    server = ProcStat("uvicorn", 100, 27000)
    before = {1: SchedStat(_ns(5), _ns(1), 100), 2: SchedStat(_ns(3), _ns(0.5), 50)}
    # Thread 2 ended in the window, thread 3 was born in it (its counters start at zero), and
    # tid 1 went on running.
    after = {1: SchedStat(_ns(5.4), _ns(1.3), 140), 3: SchedStat(_ns(0.2), _ns(0.1), 9)}
    a = _snap(10.0, {SERVER: before}, {SERVER: server})
    b = _snap(11.0, {SERVER: after}, {SERVER: server})
    d = demand_between(a, b)
    (w,) = d.workers
    assert w.pid == SERVER
    assert w.on_cpu_cores == pytest.approx(0.6)
    assert w.wait_cores == pytest.approx(0.4)
    assert w.timeslices == 49
    assert d.missing_pids == ()


@pytest.mark.parametrize(
    ("process_ticks", "on_cpu"),
    [
        # Threads that ended in the window took 0.3 s of CPU with them; the process kept it.
        pytest.param(90, 0.9, id="ended-threads"),
        # Within two ticks of the threads' precise sum: tick rounding, the threads' sum stands.
        pytest.param(62, 0.6, id="rounding"),
    ],
)
def test_cpu_of_ended_threads_comes_from_the_process_count(process_ticks: int, on_cpu: float) -> None:
    threads_a = {1: SchedStat(_ns(5), _ns(1), 100)}
    threads_b = {1: SchedStat(_ns(5.6), _ns(1.2), 140)}
    a = _snap(0.0, {SERVER: threads_a}, {SERVER: ProcStat("uvicorn", 1000, 27000)})
    b = _snap(1.0, {SERVER: threads_b}, {SERVER: ProcStat("uvicorn", 1000 + process_ticks, 27000)})
    (w,) = demand_between(a, b).workers
    assert w.on_cpu_cores == pytest.approx(on_cpu)
    assert w.wait_cores == pytest.approx(0.2)


def test_a_reused_tid_counts_from_zero() -> None:
    server = ProcStat("uvicorn", 100, 27000)
    a = _snap(0.0, {SERVER: {7: SchedStat(_ns(9), _ns(2), 500)}}, {SERVER: server})
    b = _snap(0.5, {SERVER: {7: SchedStat(_ns(0.1), _ns(0.05), 3)}}, {SERVER: server})
    (w,) = demand_between(a, b).workers
    assert w.on_cpu_cores == pytest.approx(0.2)
    assert w.wait_cores == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("after_threads", "after_procs"),
    [
        pytest.param({}, {}, id="exited"),
        pytest.param({SERVER: {1: SchedStat(1, 1, 1)}}, {SERVER: ProcStat("x", 1, 99999)}, id="pid-reused"),
    ],
)
def test_a_worker_gone_is_reported_missing(
    after_threads: dict[int, dict[int, SchedStat]], after_procs: dict[int, ProcStat]
) -> None:
    live = 4243
    threads = {SERVER: {1: SchedStat(_ns(1), 0, 1)}, live: {5: SchedStat(_ns(1), 0, 1)}}
    procs = {SERVER: ProcStat("uvicorn", 1, 27000), live: ProcStat("uvicorn", 1, 27001)}
    a = _snap(0.0, threads, procs, workers=(SERVER, live))
    b = _snap(
        1.0,
        {**after_threads, live: {5: SchedStat(_ns(1.5), 0, 2)}},
        {**after_procs, live: procs[live]},
        workers=(SERVER, live),
    )
    d = demand_between(a, b)
    assert d.missing_pids == (SERVER,)
    assert [w.pid for w in d.workers] == [live]
    assert d.on_cpu_cores == pytest.approx(0.5)


def test_others_leave_out_the_server_and_this_process() -> None:
    me = os.getpid()
    a_procs = {
        SERVER: ProcStat("uvicorn", 0, 27000),
        me: ProcStat("pytest", 0, 100),
        OTHER: ProcStat("postgres", 1000, 50),
    }
    b_procs = {
        SERVER: ProcStat("uvicorn", 100, 27000),
        me: ProcStat("pytest", 100, 100),
        OTHER: ProcStat("postgres", 1040, 50),
        # Born in the window (start 1000.5 s after boot, the window opened at 1000 s).
        NEW_OTHER: ProcStat("cc1", 20, 100050),
        # Absent from the first read though it started long ago: never lends its lifetime CPU.
        902: ProcStat("missed", 9_999_999, 10),
    }
    d = demand_between(_snap(0.0, {}, a_procs), _snap(1.0, {}, b_procs))
    assert d.others_cores == pytest.approx(0.6)
    assert [(c.name, c.pid) for c in d.top_others] == [("postgres", OTHER), ("cc1", NEW_OTHER)]
    assert [c.cores for c in d.top_others] == pytest.approx([0.4, 0.2])


def test_top_others_are_the_biggest_three_above_the_floor() -> None:
    loads = [0.9, 0.03, 0.5, 0.2, 0.1]  # cores over a 1 s window
    a_procs = {100 + i: ProcStat(f"p{i}", 0, 5) for i in range(len(loads))}
    b_procs = {100 + i: ProcStat(f"p{i}", round(c * HZ), 5) for i, c in enumerate(loads)}
    d = demand_between(_snap(0.0, {}, a_procs), _snap(1.0, {}, b_procs))
    assert [c.name for c in d.top_others] == ["p0", "p2", "p3"]
    assert d.others_cores == pytest.approx(sum(loads))
    tiny = demand_between(_snap(0.0, {}, a_procs), _snap(1.0, {}, {**a_procs, 101: ProcStat("p1", 3, 5)}))
    assert tiny.top_others == ()  # 0.03 core is under TOP_OTHERS_FLOOR_CORES
    assert tiny.others_cores == pytest.approx(0.03)


def test_host_idle_steal_and_pressure_over_the_window() -> None:
    # 2 CPUs, 1 s = 200 ticks: 30 idle, 10 stolen; PSI: some task waited 0.45 s of it.
    a = _snap(0.0, {}, {}, host=HostCpu(1000, 100, 5000, 2), psi=1_000_000)
    b = _snap(1.0, {}, {}, host=HostCpu(1030, 110, 5200, 2), psi=1_450_000)
    d = demand_between(a, b)
    assert d.host_cpus == 2
    assert d.host_idle_cores == pytest.approx(0.3)
    assert d.host_steal_cores == pytest.approx(0.1)
    assert d.host_cpu_pressure == pytest.approx(0.45)


def test_host_without_psi_or_proc_stat_gives_none() -> None:
    d = demand_between(_snap(0.0, {}, {}), _snap(1.0, {}, {}))
    assert d.host_cpu_pressure is None
    assert d.host_idle_cores is None
    assert d.host_steal_cores is None


def test_second_snapshot_must_come_after_the_first() -> None:
    with pytest.raises(ValueError, match="after"):
        demand_between(_snap(1.0, {}, {}), _snap(1.0, {}, {}))


def _level(idle: float | None, wait: float) -> LevelDemand:
    return LevelDemand(
        window_s=1.0,
        workers=(WorkerDemand(SERVER, 0.5, wait, 10),),
        missing_pids=(),
        host_cpus=2,
        host_idle_cores=idle,
        host_steal_cores=0.0,
        host_cpu_pressure=0.5,
        others_cores=1.5,
        top_others=(),
    )


@pytest.mark.parametrize(
    ("idle", "wait", "starved"),
    [
        pytest.param(0.0, 0.5, True, id="no-idle-server-waited"),
        pytest.param(dm.STARVED_IDLE_CORES, 0.5, False, id="idle-at-threshold"),
        pytest.param(0.0, dm.STARVED_WAIT_CORES - 0.01, False, id="server-barely-waited"),
        pytest.param(None, 0.5, False, id="idle-unknown"),
    ],
)
def test_starved(idle: float | None, wait: float, starved: bool) -> None:
    assert _level(idle, wait).starved is starved


@pytest.mark.parametrize(
    ("pressure", "others", "busy"),
    [
        pytest.param(0.0, 0.0, False, id="quiet"),
        pytest.param(dm.BUSY_PRESSURE, 0.0, True, id="pressure"),
        pytest.param(None, dm.BUSY_OTHERS_CORES, True, id="others-without-psi"),
        pytest.param(None, dm.BUSY_OTHERS_CORES - 0.01, False, id="others-below"),
    ],
)
def test_host_busy(pressure: float | None, others: float, busy: bool) -> None:
    h = dm.HostBusy(0.5, 2, (0.1, 0.1, 0.1), pressure, 1.9, others, ())
    assert h.busy is busy


# ---------------------------------------------------------------------------------------
# The fake /proc tree take_snapshot reads.


def _fake_proc(root: Path, *, psi: bool) -> None:
    (root / "stat").write_text(PROC_STAT)
    (root / "uptime").write_text("1000.00 1900.00\n")
    (root / "self").mkdir()
    if psi:
        (root / "pressure").mkdir()
        (root / "pressure" / "cpu").write_text(PSI)
    for pid, stat in ((SERVER, PID_STAT), (77, PID_STAT_ODD_NAME)):
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(stat)
    for tid, counters in ((SERVER, "1000 200 3\n"), (4250, "500 100 2\n")):
        task = root / str(SERVER) / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "schedstat").write_text(counters)
    (root / "78").mkdir()  # a process that ended between the listing and the read


@pytest.mark.parametrize("psi", [pytest.param(True, id="psi"), pytest.param(False, id="psi-disabled")])
def test_take_snapshot_reads_a_proc_tree(tmp_path: Path, psi: bool) -> None:
    _fake_proc(tmp_path, psi=psi)
    snap = dm.take_snapshot([SERVER, 5555], [1], proc=tmp_path)
    assert snap.threads == {SERVER: {SERVER: SchedStat(1000, 200, 3), 4250: SchedStat(500, 100, 2)}}
    assert set(snap.procs) == {SERVER, 77}
    assert snap.procs[77].name == "a (b) c"
    assert snap.host == dm.parse_proc_stat(PROC_STAT)
    assert snap.psi_some_us == (3073575 if psi else None)
    assert snap.uptime_s == 1000.0
    assert snap.excluded == {SERVER, 5555, 1, os.getpid()}
    assert not dm.supported(tmp_path)  # no /proc/self/schedstat: not a kernel with schedstats


# ---------------------------------------------------------------------------------------
# JSON.

SAMPLE = LevelDemand(
    window_s=1.25,
    workers=(WorkerDemand(11, 0.55, 0.4, 120), WorkerDemand(12, 0.02, 0.001, 40)),
    missing_pids=(13,),
    host_cpus=2,
    host_idle_cores=0.01,
    host_steal_cores=0.0,
    host_cpu_pressure=None,
    others_cores=1.3,
    top_others=(Consumer("python3", 99, 0.65), Consumer("pg (main)", 98, 0.6)),
)


def test_json_round_trip() -> None:
    data = demand_to_json(SAMPLE)
    assert data["on_cpu_cores"] == pytest.approx(0.57)
    assert data["wait_cores"] == pytest.approx(0.401)
    assert data["starved"] is True
    assert demand_from_json(data, "levels[0].demand") == SAMPLE


def _broken(path: list[str | int], value: object) -> dict[str, Any]:
    data = demand_to_json(SAMPLE)
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        pytest.param(["window_s"], "1.2", "d.window_s: expected a finite number", id="window"),
        pytest.param(["host_cpus"], 2.0, "d.host_cpus: expected an integer", id="cpus"),
        pytest.param(
            ["host_cpu_pressure"], True, "d.host_cpu_pressure: expected a finite number", id="pressure"
        ),
        pytest.param(["workers"], {}, "d.workers: expected a list", id="workers"),
        pytest.param(
            ["workers", 1, "wait_cores"], None, "d.workers[1].wait_cores: expected a finite number", id="wait"
        ),
        pytest.param(["workers", 0], 3, "d.workers[0]: expected an object", id="worker"),
        pytest.param(["missing_pids", 0], "13", "d.missing_pids[0]: expected an integer", id="missing"),
        pytest.param(["top_others", 1, "name"], 5, "d.top_others[1].name: expected a string", id="name"),
        pytest.param(["others_cores"], float("nan"), "d.others_cores: expected a finite number", id="nan"),
        pytest.param(
            ["window_s"], -1.0, "d.window_s: expected a number from 0 to inf (got -1)", id="negative"
        ),
    ],
)
def test_json_errors_name_the_key(path: list[str | int], value: object, where: str) -> None:
    with pytest.raises(BadInputError, match=rf"^{re.escape(where)}$"):
        demand_from_json(_broken(path, value), "d")


def test_json_not_an_object() -> None:
    with pytest.raises(BadInputError, match="demand: expected an object"):
        demand_from_json([1], "demand")


def test_json_ignores_the_derived_fields() -> None:
    data = {**demand_to_json(SAMPLE), "starved": False, "on_cpu_cores": 99}
    assert demand_from_json(data, "d") == SAMPLE
    assert dataclasses.replace(SAMPLE, host_idle_cores=None).starved is False
