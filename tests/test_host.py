"""Host facts: fake cgroup trees for what differs per machine, real processes for affinity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.host import (
    CgroupLimits,
    decide_cpu,
    decide_memory,
    parse_cpu_list,
    parse_memory_override,
    read_cgroup_limits,
    read_host,
)

V1_UNLIMITED = "9223372036854771712"


def lay_out(root: Path, files: dict[str, str]) -> Path:
    """Write a fake filesystem: {relative path: content}."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    return root


V1_SELF = "4:memory:/process_api/abc\n3:cpuset:/\n2:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/\n0::/"


@pytest.mark.parametrize(
    ("files", "quota", "cpuset", "memory", "version"),
    [
        pytest.param(
            {
                "proc/self/cgroup": "0::/",
                "sys/fs/cgroup/cgroup.controllers": "cpu memory",
                "sys/fs/cgroup/cpu.max": "max 100000",
                "sys/fs/cgroup/memory.max": "max",
            },
            None,
            None,
            None,
            2,
            id="v2-unlimited",
        ),
        pytest.param(
            {
                "proc/self/cgroup": "0::/",
                "sys/fs/cgroup/cgroup.controllers": "cpu memory",
                "sys/fs/cgroup/cpu.max": "150000 100000",
                "sys/fs/cgroup/memory.max": "536870912",
                "sys/fs/cgroup/cpuset.cpus.effective": "0-1",
            },
            1.5,
            2,
            536870912,
            2,
            id="v2-fractional-quota",
        ),
        pytest.param(
            {
                "proc/self/cgroup": "0::/system.slice/app.service",
                "sys/fs/cgroup/cgroup.controllers": "cpu memory",
                "sys/fs/cgroup/cpu.max": "max 100000",
                "sys/fs/cgroup/system.slice/cpu.max": "200000 100000",
                "sys/fs/cgroup/system.slice/app.service/cpu.max": "max 100000",
                "sys/fs/cgroup/system.slice/app.service/memory.max": "1073741824",
                "sys/fs/cgroup/system.slice/app.service/cpuset.cpus.effective": "0-3,8",
            },
            2.0,
            5,
            1073741824,
            2,
            id="v2-nested-parent-quota-binds",
        ),
        pytest.param(
            {
                "proc/self/cgroup": V1_SELF,
                "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us": "-1",
                "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_period_us": "100000",
                "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": V1_UNLIMITED,
                "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
            },
            None,
            None,
            None,
            1,
            id="v1-unlimited-nested",
        ),
        pytest.param(
            {
                "proc/self/cgroup": V1_SELF,
                "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us": "50000",
                "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_period_us": "100000",
                "sys/fs/cgroup/cpuset/cpuset.cpus": "0-7",
                "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "536870912",
            },
            0.5,
            8,
            536870912,
            1,
            id="v1-nested-quota-and-limit",
        ),
        pytest.param(
            {
                # Inside a container with a private cgroup namespace: '/' but the files at the
                # mount point are the container's own.
                "proc/self/cgroup": "2:cpu:/\n1:memory:/",
                "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000",
                "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
                "sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456",
            },
            1.0,
            None,
            268435456,
            1,
            id="v1-namespace-root",
        ),
        pytest.param({"proc/self/cgroup": ""}, None, None, None, None, id="no-cgroups"),
    ],
)
def test_read_cgroup_limits(
    tmp_path: Path,
    files: dict[str, str],
    quota: float | None,
    cpuset: int | None,
    memory: int | None,
    version: int | None,
) -> None:
    limits = read_cgroup_limits(lay_out(tmp_path, files))
    assert limits == CgroupLimits(version=version, cpu_quota=quota, cpuset=cpuset, memory_limit=memory)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        pytest.param("0", 1, id="one"),
        pytest.param("0-3,8,10-11", 7, id="ranges"),
        pytest.param("", 0, id="empty"),
    ],
)
def test_parse_cpu_list(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count


def _limits(quota: float | None = None, cpuset: int | None = None) -> CgroupLimits:
    return CgroupLimits(version=1, cpu_quota=quota, cpuset=cpuset, memory_limit=None)


@pytest.mark.parametrize(
    ("logical", "affinity", "limits", "override", "effective", "source"),
    [
        pytest.param(64, 64, _limits(), None, 64, "logical", id="bare-metal"),
        pytest.param(64, 64, _limits(quota=1.0), None, 1, "quota", id="1-cpu-pod-on-64-cores"),
        pytest.param(8, 8, _limits(quota=1.5), None, 1.5, "quota", id="fractional-kept"),
        pytest.param(8, 2, _limits(quota=4.0), None, 2, "affinity", id="taskset"),
        pytest.param(8, 8, _limits(cpuset=3), None, 3, "cpuset", id="cpuset"),
        pytest.param(8, 8, _limits(quota=1.0), 3.0, 3, "override", id="override-wins"),
    ],
)
def test_decide_cpu(
    logical: int, affinity: int, limits: CgroupLimits, override: float | None, effective: float, source: str
) -> None:
    cpu = decide_cpu(logical, logical, affinity, limits, override)
    assert (cpu.effective, cpu.source) == (effective, source)
    assert isinstance(cpu.effective, int) == float(effective).is_integer()


def test_decide_memory() -> None:
    gib = 1 << 30
    assert decide_memory(24 * gib, 20 * gib, None, None).source == "total"
    m = decide_memory(24 * gib, 20 * gib, 512 << 20, None)
    assert (m.effective_bytes, m.source, m.available_bytes) == (536870912, "cgroup", 536870912)
    assert decide_memory(24 * gib, 20 * gib, 512 << 20, gib).effective_bytes == gib


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("512M", 512 << 20, id="M"),
        pytest.param("2GiB", 2 << 30, id="GiB"),
        pytest.param("33554432", 32 << 20, id="bytes"),
    ],
)
def test_parse_memory_override(text: str, value: int) -> None:
    assert parse_memory_override(text) == value


@pytest.mark.parametrize("bad", ["lots", "-1G", "0", "1k", "nan", "inf", "100T"])
def test_bad_memory_override_names_the_variable(bad: str) -> None:
    with pytest.raises(UsageError, match="FASTAPI_TUNE_MEMORY"):
        parse_memory_override(bad)


def test_env_override_is_the_source(tmp_path: Path) -> None:
    root = lay_out(tmp_path, {"proc/self/cgroup": ""})
    facts = read_host(root, env={"FASTAPI_TUNE_CPUS": "1.5", "FASTAPI_TUNE_MEMORY": "1G"})
    assert (facts.cpu.effective, facts.cpu.source) == (1.5, "override")
    assert (facts.memory.effective_bytes, facts.memory.source) == (1 << 30, "override")


def test_cli_json_is_one_object_with_the_documented_names() -> None:
    result = CliRunner().invoke(app, ["host", "--json"], env={"FASTAPI_TUNE_CPUS": "1"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("logical", "physical", "affinity", "quota", "effective", "source"):
        assert key in data["cpu"]
    for key in ("total_bytes", "available_bytes", "cgroup_limit_bytes", "effective_bytes", "source"):
        assert key in data["memory"]
    assert data["cpu"]["source"] == "override"
    assert "load_average" in data
    assert data["versions"]["python"]


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_real_affinity_is_seen() -> None:
    """A real process pinned to one CPU: effective is 1, decided by affinity (unless 1 CPU total)."""
    proc = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "fastapi_tune", "host", "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "FASTAPI_TUNE_CPUS": ""},
    )
    cpu = json.loads(proc.stdout)["cpu"]
    assert cpu["affinity"] == 1
    assert cpu["effective"] == 1


def _make_v1_cgroup(controller: str) -> Path | None:
    base = Path("/sys/fs/cgroup") / controller
    if not base.is_dir() or not os.access(base, os.W_OK):
        return None
    d = base / f"fastapi-tune-test-{uuid.uuid4().hex[:8]}"
    try:
        d.mkdir()
    except OSError:
        return None
    return d


def test_real_cgroup_v1_quota_and_memory_limit() -> None:
    """Inside real cgroup v1 groups with a 1.5-CPU quota and a 512 MiB limit (needs root)."""
    cpu = _make_v1_cgroup("cpu")
    mem = _make_v1_cgroup("memory")
    if cpu is None or mem is None:
        pytest.skip("cannot create cgroup v1 groups here (not root, or cgroup v2)")
    try:
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text("150000")
        (mem / "memory.limit_in_bytes").write_text(str(512 << 20))
        script = (
            f"echo $$ > {cpu}/cgroup.procs && echo $$ > {mem}/cgroup.procs && "
            f"exec {sys.executable} -m fastapi_tune host --json"
        )
        proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
        data = json.loads(proc.stdout)
        assert (data["cpu"]["effective"], data["cpu"]["source"]) == (1.5, "quota")
        assert data["memory"]["effective_bytes"] == 536870912
        assert data["memory"]["source"] == "cgroup"
    finally:
        for d in (cpu, mem):
            d.rmdir()
