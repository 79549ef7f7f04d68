"""Render a Plan as gunicorn.conf.py text and as a shell command. Formatting only: no decisions.

The file is plain Python a reader can follow: one commented block per setting saying what was
measured and why this value. No timestamps, so the same inputs give the same bytes (diffable,
golden-testable).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Final

from fastapi_tune.plan.model import Plan, Setting, Value
from fastapi_tune.render.admission import conf_hook
from fastapi_tune.render.commands import (
    command_notes,
    fastapi_argv,
    flag_per_line,
    gunicorn_argv,
    uvicorn_argv,
    wrapped,
)

_WIDTH: Final = 100
# Where recommend writes and verify looks: gunicorn reads this name from the working directory itself.
DEFAULT_CONF: Final = Path("gunicorn.conf.py")

# Environment variables the file reads at start-up, and what each overrides.
ENV_OVERRIDES: Final = (
    ("WEB_CONCURRENCY", "number of workers (the convention gunicorn, Heroku and the tiangolo images share)"),
    ("BIND", "the full address, e.g. 127.0.0.1:9000 or unix:/run/app.sock"),
    ("PORT", "the port only; the planned host is kept, so a loopback plan stays on loopback"),
)


_CPU_CAP_NOTE: Final = (
    "At start-up the planned count is checked against the CPUs this process really gets (the cgroup"
    " quota of its container, the CPU affinity): never more than {per_cpu:g} worker(s) per CPU, so the"
    " same file in a container with fewer CPUs than planned starts fewer workers, not too many."
    " WEB_CONCURRENCY, when set, is taken as given."
)


def _comment(text: str, indent: str = "") -> list[str]:
    """`text` as comment lines of at most _WIDTH characters; continuation lines indented."""
    return textwrap.wrap(
        text,
        width=_WIDTH,
        initial_indent=f"# {indent}",
        subsequent_indent=f"# {indent}  ",
        break_on_hyphens=False,
    )


def _py(value: Value) -> str:
    """A Python literal; strings with double quotes, as ruff format would write them."""
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


# Standalone (the file must not need fastapi-tune where it runs): the CPU limit this process gets,
# read when gunicorn starts, the way fastapi_tune/measure/host.py reads it.
_CPU_LIMIT_CODE: Final = '''

def _read_words(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def _cgroup_quotas(root: str, line: str) -> list[float]:
    """CPU quotas along one /proc/self/cgroup entry's path: its own folder and every parent."""
    parts = line.strip().split(":", 2)
    if len(parts) != 3:
        return []
    hierarchy, path = parts[1], [p for p in parts[2].split("/") if p]
    base = os.path.join(root, "sys", "fs", "cgroup")
    if hierarchy == "":  # cgroup v2: cpu.max holds "QUOTA PERIOD" or "max PERIOD"
        mounts, v2 = [base], True
    elif "cpu" in hierarchy.split(","):  # cgroup v1: cpu.cfs_quota_us (-1: none) / cpu.cfs_period_us
        mounts, v2 = [os.path.join(base, hierarchy), os.path.join(base, "cpu")], False
    else:
        return []
    quotas = []
    for mount in mounts:
        for depth in range(len(path), -1, -1):
            folder = os.path.join(mount, *path[:depth])
            if v2:
                quota, period = ([*_read_words(os.path.join(folder, "cpu.max")), "max", "0"])[:2]
            else:
                quota = ([*_read_words(os.path.join(folder, "cpu.cfs_quota_us")), "-1"])[0]
                period = ([*_read_words(os.path.join(folder, "cpu.cfs_period_us")), "0"])[0]
            if quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
                quotas.append(int(quota) / int(period))
    return quotas


def cpu_limit(root: str = "/") -> float | None:
    """CPUs this process may use: the cgroup CPU quota (v1 or v2, a parent's included) and the CPU
    affinity, whichever is lower; None when neither is known. os.cpu_count() and gunicorn see the
    host's CPUs instead, inside a container too."""
    found = []
    if hasattr(os, "sched_getaffinity"):  # Linux; other systems have no affinity call
        found.append(float(len(os.sched_getaffinity(0))))
    # One word per line: "ID:CONTROLLERS:PATH" has no spaces.
    for line in _read_words(os.path.join(root, "proc", "self", "cgroup")):
        found += _cgroup_quotas(root, line)
    return min(found) if found else None


def workers_for_cpus(planned: int, cpus: float | None, per_cpu: float) -> int:
    """The planned workers, but never more than per_cpu for each CPU this process gets (rounded
    half up, at least 1): a container given 1 CPU must not start the workers planned for 4."""
    if cpus is None:
        return planned
    return min(planned, max(1, math.floor(cpus * per_cpu + 0.5)))
'''


def _assignment(s: Setting, plan: Plan) -> list[str]:
    if s.name == "workers":
        line = f'workers = int(os.environ.get("WEB_CONCURRENCY", "{s.value}"))'
        if plan.workers_per_cpu is None:
            return [line]
        return [
            line,
            'if "WEB_CONCURRENCY" not in os.environ:',
            f"    workers = workers_for_cpus(workers, cpu_limit(), {plan.workers_per_cpu!r})",
        ]
    if s.name == "bind":
        host, _, port = str(s.value).rpartition(":")
        return [
            f'bind = os.environ.get("BIND") or {_py(host)} + ":" + os.environ.get("PORT", {_py(port)})'
            if host and port.isdigit()
            else f'bind = os.environ.get("BIND", {_py(s.value)})'
        ]
    return [f"{s.name} = {_py(s.value)}"]


def render_gunicorn_conf(plan: Plan) -> str:
    """The plan as a gunicorn.conf.py that `gunicorn --check-config` accepts."""
    out: list[str] = [
        f'"""gunicorn settings for {plan.app}, generated by `fastapi-tune recommend`'
        f" (profile {plan.profile}).",
        "",
        "Each setting says what was measured and why it has this value. Regenerate rather than",
        "hand-tune numbers; edit freely otherwise. Start with: gunicorn -c gunicorn.conf.py",
        '"""',
        "",
    ]
    out += _comment(f"Profile: {plan.profile_description}")
    out.append("#")
    out.append("# Computed from:")
    for line in plan.inputs:
        out += _comment(line, indent="  ")
    out.append("#")
    out.append("# Environment overrides, read when gunicorn starts:")
    for name, what in ENV_OVERRIDES:
        out += _comment(f"{name}: {what}", indent="  ")
    out += _comment(
        "GUNICORN_CMD_ARGS: any other flag; gunicorn reads it itself and it wins over this file", indent="  "
    )
    out += ["", "from __future__ import annotations", ""]
    out += ["import math", "import os"] if plan.workers_per_cpu is not None else ["import os"]
    if plan.workers_per_cpu is not None:
        out += _CPU_LIMIT_CODE.rstrip("\n").split("\n")
        out.append("")
    out.append("")
    out += _comment(f"Workers: {plan.worker_formula}")
    out += _comment(f"Rule of thumb: {plan.rule_of_thumb_note}")
    for s in plan.settings:
        out.append("")
        out += _comment(f"{s.name}: {s.why}")
        if s.name == "workers" and plan.workers_per_cpu is not None:
            out += _comment(_CPU_CAP_NOTE.format(per_cpu=plan.workers_per_cpu))
        out += _assignment(s, plan)
    if plan.admission is not None:
        out += ["", ""]
        out += conf_hook(plan.admission)
    if plan.unknowns:
        out += ["", "# Not known when this file was generated:"]
        for u in plan.unknowns:
            out += _comment(f"- {u}")
    if plan.advice:
        out += ["", "# Beyond gunicorn's settings:"]
        for a in plan.advice:
            out.append("#")
            out += _comment(f"- {a.text}")
            out += [f"#       {line}" for line in a.code]
    out += [
        "",
        "# Equivalent commands without this file:",
        *(f"#   {line}" for line in flag_per_line(gunicorn_argv(plan)).splitlines()),
        *(f"#   {line}" for line in wrapped(uvicorn_argv(plan))),
        *(f"#   {line}" for line in wrapped(fastapi_argv(plan))),
    ]
    for note in command_notes(plan):
        out += _comment(f"Note: {note}", indent="  ")
    return "\n".join(out) + "\n"
