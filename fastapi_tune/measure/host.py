"""Host facts: the CPUs and memory a server on this machine can really use.

Nothing in the Python stack reads cgroup CPU quotas (not os.cpu_count, psutil or gunicorn), so
inside a 1-CPU container they all see the host's cores. This module reads cgroup v1 and v2
itself, resolving this process's own cgroup through /proc/self/cgroup, as loky does.
Every reader takes a root directory so tests can lay out fake cgroup trees.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil

from fastapi_tune.core.errors import UsageError
from fastapi_tune.core.jsonread import JsonReader

CPUS_ENV: Final = "FASTAPI_TUNE_CPUS"
MEMORY_ENV: Final = "FASTAPI_TUNE_MEMORY"

# The range a CPU count may take, from an override or a saved report: below a tenth of a CPU no
# Python server runs, and beyond 1024 the number is a typo (it would plan thousands of workers).
MIN_CPUS: Final = 0.1
MAX_CPUS: Final = 1024.0
# Memory below 16 MiB cannot hold one Python worker; above 64 TiB the number is a typo.
MIN_MEMORY_BYTES: Final = 16 << 20
MAX_MEMORY_BYTES: Final = 64 << 40

# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is no limit.
_V1_UNLIMITED_FLOOR: Final = 1 << 60


@dataclass(frozen=True)
class CpuFacts:
    logical: int
    physical: int | None
    affinity: int
    quota: float | None  # CPUs the cgroup quota allows; None when unlimited
    cpuset: int | None  # CPUs in the cgroup's cpuset; None when not restricted or unknown
    override: float | None
    effective: float
    source: str  # which of the above decided `effective`


@dataclass(frozen=True)
class MemoryFacts:
    total_bytes: int
    available_bytes: int
    cgroup_limit_bytes: int | None
    override_bytes: int | None
    effective_bytes: int
    source: str


@dataclass(frozen=True)
class HostFacts:
    cpu: CpuFacts
    memory: MemoryFacts
    cgroup_version: int | None  # 1, 2, or None where no cgroup files were found
    load_average: tuple[float, float, float] | None
    dev_shm: bool  # a tmpfs at /dev/shm for gunicorn's heartbeat files
    versions: Mapping[str, str | None]  # python, gunicorn, uvicorn, uvicorn-worker, fastapi


# ---------------------------------------------------------------------------------------
# cgroup discovery


@dataclass(frozen=True)
class CgroupLimits:
    version: int | None
    cpu_quota: float | None
    cpuset: int | None
    memory_limit: int | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def parse_cpu_list(text: str) -> int:
    """Count the CPUs in a cpuset list such as '0-3,8,10-11'."""
    count = 0
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += (int(hi) - int(lo) + 1) if hi else 1
    return count


def _own_cgroups(root: Path) -> tuple[str | None, dict[str, str]]:
    """(v2 path, {v1 controller: path}) from <root>/proc/self/cgroup."""
    text = _read(root / "proc/self/cgroup") or ""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c:
                v1[c] = path
    return v2, v1


def _candidates(mount: Path, path: str) -> list[Path]:
    """The process's own cgroup folder and its ancestors, innermost first.

    A limit set on a parent binds the child too, so each level is read and the tightest
    wins. Inside a container the cgroup namespace often shows '/' while the files at the
    mount point are the container's own: the mount root itself is always included.
    """
    rel = path.strip("/")
    found: list[Path] = []
    parts = rel.split("/") if rel else []
    for i in range(len(parts), -1, -1):
        d = mount.joinpath(*parts[:i]) if i else mount
        if d.is_dir() and d not in found:
            found.append(d)
    return found


def _v1_mount(root: Path, controller: str) -> Path | None:
    base = root / "sys/fs/cgroup"
    for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}", f"{controller},cpuset"):
        if (base / name).is_dir():
            return base / name
    if controller == "cpu":
        for d in sorted(base.glob("*cpu*")) if base.is_dir() else []:
            if "cpu" in d.name.split(",") and d.is_dir():
                return d
    return None


def _tightest(version: int, quotas: list[float], cpusets: list[int], mems: list[int]) -> CgroupLimits:
    """The tightest limit along the cgroup path: a parent's limit binds its children too."""
    return CgroupLimits(
        version=version,
        cpu_quota=min(quotas) if quotas else None,
        cpuset=min(cpusets) if cpusets else None,
        memory_limit=min(mems) if mems else None,
    )


def _v2_limits(base: Path, path: str) -> CgroupLimits:
    quotas: list[float] = []
    cpusets: list[int] = []
    mems: list[int] = []
    for d in _candidates(base, path):
        q, _, p = (_read(d / "cpu.max") or "max").partition(" ")
        if q != "max" and p:
            quotas.append(int(q) / int(p))
        if cs := _read(d / "cpuset.cpus.effective"):
            cpusets.append(parse_cpu_list(cs))
        m = _read(d / "memory.max")
        if m and m != "max":
            mems.append(int(m))
    return _tightest(2, quotas, cpusets, mems)


def _v1_values(root: Path, controller: str, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """One value per folder along this process's path in a v1 hierarchy (None values dropped)."""
    mount = _v1_mount(root, controller)
    if mount is None:
        return []
    return [v for d in _candidates(mount, path) if (v := read(d)) is not None]


def _v1_quota(d: Path) -> float | None:
    q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
    return int(q) / int(p) if q and p and int(q) > 0 and int(p) > 0 else None


def _v1_cpuset(d: Path) -> float | None:
    cs = _read(d / "cpuset.effective_cpus") or _read(d / "cpuset.cpus")
    return parse_cpu_list(cs) if cs else None


def _v1_memory(d: Path) -> float | None:
    m = _read(d / "memory.limit_in_bytes")
    return int(m) if m and int(m) < _V1_UNLIMITED_FLOOR else None


def read_cgroup_limits(root: Path = Path("/")) -> CgroupLimits:
    """Read this process's CPU quota, cpuset and memory limit from cgroup v2 or v1."""
    v2_path, v1 = _own_cgroups(root)
    base = root / "sys/fs/cgroup"
    if v2_path is not None and (base / "cgroup.controllers").exists():
        return _v2_limits(base, v2_path)
    if not v1:
        return CgroupLimits(version=None, cpu_quota=None, cpuset=None, memory_limit=None)
    return _tightest(
        1,
        _v1_values(root, "cpu", v1.get("cpu", "/"), _v1_quota),
        [int(x) for x in _v1_values(root, "cpuset", v1.get("cpuset", "/"), _v1_cpuset)],
        [int(x) for x in _v1_values(root, "memory", v1.get("memory", "/"), _v1_memory)],
    )


# ---------------------------------------------------------------------------------------
# Deciding what is effective (pure)


def parse_cpus_override(text: str) -> float:
    """FASTAPI_TUNE_CPUS: a positive number of CPUs, fractions allowed."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{CPUS_ENV}={text!r}: expected a positive number of CPUs, e.g. 2 or 1.5") from None
    if not math.isfinite(value) or not MIN_CPUS <= value <= MAX_CPUS:
        raise UsageError(
            f"{CPUS_ENV}={text!r}: expected a number of CPUs from {MIN_CPUS:g} to {MAX_CPUS:g}, e.g. 2 or 1.5"
        )
    return value


_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_override(text: str) -> int:
    """FASTAPI_TUNE_MEMORY: bytes, or a number with K/M/G/T (binary units), e.g. 512M."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] != "" else ""
    number = t[: -len(unit)] if unit else t
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise UsageError(f"{MEMORY_ENV}={text!r}: expected bytes or a size such as 512M or 2G") from None
    if not math.isfinite(value) or not MIN_MEMORY_BYTES <= value <= MAX_MEMORY_BYTES:
        raise UsageError(
            f"{MEMORY_ENV}={text!r}: expected a size from 16M to 64T, in bytes or such as 512M or 2G"
        )
    return int(value)


def decide_cpu(
    logical: int, physical: int | None, affinity: int, limits: CgroupLimits, override: float | None
) -> CpuFacts:
    """The CPUs a server can use: the minimum of what is there, allowed and asked for."""
    candidates: list[tuple[float, str]] = [(float(logical), "logical"), (float(affinity), "affinity")]
    if limits.cpuset is not None:
        candidates.append((float(limits.cpuset), "cpuset"))
    if limits.cpu_quota is not None:
        candidates.append((limits.cpu_quota, "quota"))
    if override is not None:
        effective, source = override, "override"
    else:
        # min() keeps the first of equal values: logical before affinity before cpuset/quota,
        # so the source names a real limit only when it really bites.
        effective, source = min(candidates, key=lambda c: c[0])
    return CpuFacts(
        logical=logical,
        physical=physical,
        affinity=affinity,
        quota=limits.cpu_quota,
        cpuset=limits.cpuset,
        override=override,
        effective=int(effective) if float(effective).is_integer() else round(effective, 3),
        source=source,
    )


def decide_memory(total: int, available: int, limit: int | None, override: int | None) -> MemoryFacts:
    """The memory a server can use: the smaller of RAM and the cgroup limit, unless overridden."""
    if override is not None:
        effective, source = override, "override"
    elif limit is not None and limit < total:
        effective, source = limit, "cgroup"
    else:
        effective, source = total, "total"
    return MemoryFacts(
        total_bytes=total,
        available_bytes=min(available, effective),
        cgroup_limit_bytes=limit,
        override_bytes=override,
        effective_bytes=effective,
        source=source,
    )


# ---------------------------------------------------------------------------------------
# Reading the real machine


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def read_host(root: Path = Path("/"), env: Mapping[str, str] | None = None) -> HostFacts:
    """Inspect this machine (or a fake tree under `root`) and decide what a server can use."""
    env = os.environ if env is None else env
    limits = read_cgroup_limits(root)
    cpu_override = parse_cpus_override(env[CPUS_ENV]) if env.get(CPUS_ENV) else None
    mem_override = parse_memory_override(env[MEMORY_ENV]) if env.get(MEMORY_ENV) else None
    vm = psutil.virtual_memory()
    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    return HostFacts(
        cpu=decide_cpu(
            logical=psutil.cpu_count(logical=True) or 1,
            physical=psutil.cpu_count(logical=False),
            affinity=_affinity(),
            limits=limits,
            override=cpu_override,
        ),
        memory=decide_memory(vm.total, vm.available, limits.memory_limit, mem_override),
        cgroup_version=limits.version,
        load_average=load,
        dev_shm=os.path.isdir(root / "dev/shm") and os.access(root / "dev/shm", os.W_OK),
        versions={
            "python": platform.python_version(),
            "gunicorn": _version("gunicorn"),
            "uvicorn": _version("uvicorn"),
            "uvicorn-worker": _version("uvicorn-worker"),
            "fastapi": _version("fastapi"),
        },
    )


def host_to_json(h: HostFacts) -> dict[str, Any]:
    """The JSON object `host --json` prints and probe reports embed."""
    return {
        "cpu": {
            "logical": h.cpu.logical,
            "physical": h.cpu.physical,
            "affinity": h.cpu.affinity,
            "quota": h.cpu.quota,
            "cpuset": h.cpu.cpuset,
            "override": h.cpu.override,
            "effective": h.cpu.effective,
            "source": h.cpu.source,
        },
        "memory": {
            "total_bytes": h.memory.total_bytes,
            "available_bytes": h.memory.available_bytes,
            "cgroup_limit_bytes": h.memory.cgroup_limit_bytes,
            "override_bytes": h.memory.override_bytes,
            "effective_bytes": h.memory.effective_bytes,
            "source": h.memory.source,
        },
        "cgroup_version": h.cgroup_version,
        "load_average": list(h.load_average) if h.load_average is not None else None,
        "dev_shm": h.dev_shm,
        "versions": dict(h.versions),
    }


def host_from_json(raw: object, source: str, where: str = "host") -> HostFacts:
    """Rebuild host facts saved in a probe report, every value checked (errors name the key)."""
    r = JsonReader(source)
    d = r.obj(raw, where)
    c, m = r.obj(d.get("cpu"), f"{where}.cpu"), r.obj(d.get("memory"), f"{where}.memory")
    la = d.get("load_average")
    loads = (
        None
        if la is None
        else [r.num(x, f"{where}.load_average", 0) for x in r.list_(la, f"{where}.load_average")]
    )
    versions = r.obj(d.get("versions", {}), f"{where}.versions")
    return HostFacts(
        cpu=CpuFacts(
            logical=r.int_(c.get("logical"), f"{where}.cpu.logical", 1),
            physical=r.opt_int(c.get("physical"), f"{where}.cpu.physical", 1),
            affinity=r.int_(c.get("affinity"), f"{where}.cpu.affinity", 1),
            quota=r.opt_num(c.get("quota"), f"{where}.cpu.quota", 0),
            cpuset=r.opt_int(c.get("cpuset"), f"{where}.cpu.cpuset", 1),
            override=r.opt_num(c.get("override"), f"{where}.cpu.override", 0),
            effective=r.num(c.get("effective"), f"{where}.cpu.effective", MIN_CPUS, MAX_CPUS),
            source=r.str_(c.get("source"), f"{where}.cpu.source"),
        ),
        memory=MemoryFacts(
            total_bytes=r.int_(m.get("total_bytes"), f"{where}.memory.total_bytes", 1),
            available_bytes=r.int_(m.get("available_bytes"), f"{where}.memory.available_bytes", 0),
            cgroup_limit_bytes=r.opt_int(
                m.get("cgroup_limit_bytes"), f"{where}.memory.cgroup_limit_bytes", 1
            ),
            override_bytes=r.opt_int(m.get("override_bytes"), f"{where}.memory.override_bytes", 1),
            effective_bytes=r.int_(m.get("effective_bytes"), f"{where}.memory.effective_bytes", 1),
            source=r.str_(m.get("source"), f"{where}.memory.source"),
        ),
        cgroup_version=r.opt_int(d.get("cgroup_version"), f"{where}.cgroup_version", 1, 2),
        load_average=(loads[0], loads[1], loads[2]) if loads and len(loads) == 3 else None,
        dev_shm=bool(d.get("dev_shm", False)),
        versions={str(k): v if isinstance(v, str) else None for k, v in versions.items()},
    )
