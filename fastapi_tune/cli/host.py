"""`fastapi-tune host`: what this machine (or container) lets a server use."""

from __future__ import annotations

from typing import Annotated

from fastapi_tune.cli.base import command, flag, out, print_json
from fastapi_tune.cli.options import Cpus, Memory, host_facts
from fastapi_tune.measure.host import (
    host_to_json,
)
from fastapi_tune.render.host import print_host


@command
def host(
    cpus: Cpus = None,
    memory: Memory = None,
    as_json: Annotated[bool, flag("--json", help="Print one JSON object to stdout.")] = False,
) -> None:
    """Show the CPUs and memory a server on this machine can really use.

    Reads cgroup v1/v2 CPU quota, cpuset and memory limit (which os.cpu_count(), psutil and
    gunicorn ignore) and the CPU affinity. Override with --cpus/--memory (or FASTAPI_TUNE_CPUS=1.5,
    FASTAPI_TUNE_MEMORY=512M) when you know better.
    """
    facts = host_facts(cpus, memory)
    if as_json:
        print_json(host_to_json(facts))
    else:
        print_host(out, facts)
