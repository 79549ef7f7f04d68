"""Rendering host facts for people (rich). JSON comes from host.host_to_json."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fastapi_tune.core.rules import rule_of_thumb_workers
from fastapi_tune.measure.host import HostFacts

_CPU_SOURCE_WHY = {
    "logical": "no limit below the machine's logical CPUs",
    "affinity": "this process may run on fewer CPUs (taskset / sched_setaffinity)",
    "cpuset": "the cgroup's cpuset allows fewer CPUs",
    "quota": "the cgroup CPU quota allows less CPU time than the CPUs present",
    "override": "set by FASTAPI_TUNE_CPUS",
}
_MEM_SOURCE_WHY = {
    "total": "no cgroup memory limit below the machine's RAM",
    "cgroup": "the cgroup memory limit is below the machine's RAM",
    "override": "set by FASTAPI_TUNE_MEMORY",
}


def fmt_bytes(n: int | None) -> str:
    """Binary units, one decimal: 536870912 -> '512.0 MiB'."""
    if n is None:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def print_host(console: Console, h: HostFacts) -> None:
    """The `host` command's summary: what a server here can use, and what decided it."""
    t = Table(title="What a server on this machine can use", title_justify="left", show_header=True)
    t.add_column("fact")
    t.add_column("value", justify="right")
    t.add_column("note")
    t.add_row("[bold]CPUs, effective[/]", f"[bold]{h.cpu.effective}[/]", _CPU_SOURCE_WHY[h.cpu.source])
    t.add_row("logical CPUs", str(h.cpu.logical), "what os.cpu_count() and (2 x cores) + 1 see")
    t.add_row("physical cores", str(h.cpu.physical) if h.cpu.physical else "unknown", "")
    t.add_row("affinity", str(h.cpu.affinity), "CPUs this process may run on")
    t.add_row(
        "cgroup CPU quota", "none" if h.cpu.quota is None else f"{h.cpu.quota:g}", "CPUs of time per period"
    )
    t.add_row("cgroup cpuset", "none" if h.cpu.cpuset is None else str(h.cpu.cpuset), "")
    t.add_row(
        "[bold]memory, effective[/]",
        f"[bold]{fmt_bytes(h.memory.effective_bytes)}[/]",
        _MEM_SOURCE_WHY[h.memory.source],
    )
    t.add_row("memory total", fmt_bytes(h.memory.total_bytes), "")
    t.add_row("memory available", fmt_bytes(h.memory.available_bytes), "")
    t.add_row("cgroup memory limit", fmt_bytes(h.memory.cgroup_limit_bytes), "")
    t.add_row("cgroup version", str(h.cgroup_version) if h.cgroup_version else "none found", "")
    if h.load_average is not None:
        t.add_row("load average", " ".join(f"{x:.2f}" for x in h.load_average), "1, 5, 15 minutes")
    t.add_row("/dev/shm", "yes" if h.dev_shm else "no", "tmpfs for gunicorn's worker heartbeat")
    for name, ver in h.versions.items():
        t.add_row(name, ver or "not installed", "")
    console.print(t)
    rule = rule_of_thumb_workers(h.cpu.logical)
    if h.cpu.effective < h.cpu.logical:
        console.print(
            f"[yellow]The (2 x cores) + 1 rule sees {h.cpu.logical} CPUs and would start {rule} workers;"
            f" this machine lets a server use {h.cpu.effective}.[/]"
        )
