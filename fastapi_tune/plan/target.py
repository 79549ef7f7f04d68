"""Where the app will run: the deployment target's CPUs and memory, and what is unknown about them.

A plan for a container is only as good as the container's limits it was sized for. Measured on a
laptop with no cgroup limit, the `container` profile would otherwise size workers for the
laptop's CPUs and memory; these pure functions say when that happens so the CLI can ask or warn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fastapi_tune.measure.host import CPUS_ENV, MEMORY_ENV, HostFacts
from fastapi_tune.plan.profiles import Profile

# Sources (host.py) that mean a CPU or memory figure is a limit someone set, not the whole machine.
_CPU_LIMITS: Final = ("quota", "cpuset", "override")
_MEMORY_LIMITS: Final = ("cgroup", "override")


def runs_in_container(profile: Profile) -> bool:
    """Profiles whose server is stopped by an orchestrator's SIGKILL after a grace period
    (Docker's 10 s, the kubelet's 30 s) run in a container; vm-like profiles have none."""
    return profile.stop_grace_period is not None


def cpu_is_limited(facts: HostFacts) -> bool:
    """The effective CPUs come from a quota, a cpuset or --cpus: a limit, not the machine's cores."""
    return facts.cpu.source in _CPU_LIMITS


def memory_is_limited(facts: HostFacts) -> bool:
    """The effective memory comes from a cgroup limit or --memory, not the machine's RAM."""
    return facts.memory.source in _MEMORY_LIMITS


def with_overrides(env: Mapping[str, str], cpus: str | None, memory: str | None) -> dict[str, str]:
    """The environment read_host sees, with --cpus / --memory as its overrides."""
    out = dict(env)
    if cpus is not None:
        out[CPUS_ENV] = cpus
    if memory is not None:
        out[MEMORY_ENV] = memory
    return out


def sizing_warning(profile: Profile, target: HostFacts) -> str | None:
    """A container profile sized from a machine without limits: say what was used and how to fix it."""
    if not runs_in_container(profile):
        return None
    missing: list[tuple[str, str]] = []
    if not cpu_is_limited(target):
        missing.append((f"{target.cpu.effective:g} CPUs", "--cpus 1"))
    if not memory_is_limited(target):
        missing.append((f"{target.memory.effective_bytes / (1 << 30):.1f} GiB of memory", "--memory 512M"))
    if not missing:
        return None
    return (
        f"profile {profile.name} sizes a container, but this host has no cgroup limit, so the plan uses"
        f" the whole machine's {' and '.join(m for m, _ in missing)}: pass the container's limits, e.g."
        f" {' '.join(flag for _, flag in missing)}"
    )
