"""Options and parsing more than one command shares."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fastapi_tune.cli.base import flag
from fastapi_tune.core.errors import (
    BadInputError,
    UsageError,
)
from fastapi_tune.measure.host import (
    HostFacts,
    read_host,
)
from fastapi_tune.plan.target import (
    with_overrides,
)

Cpus = Annotated[
    str | None,
    typer.Option("--cpus", help="CPUs of the deployment target if not this machine, e.g. 2 or 1.5."),
]


Memory = Annotated[
    str | None,
    typer.Option("--memory", help="Memory of the deployment target if not this machine, e.g. 512M."),
]


Verbose = Annotated[
    bool,
    flag(
        "--verbose",
        "-v",
        help="Show every route's panel in full (levels, every number of the evidence, advice) and every"
        " skipped route; by default only the routes that matter get one.",
    ),
]


def host_facts(cpus: str | None, memory: str | None) -> HostFacts:
    """This machine's facts, with the target's CPUs and memory where the user named them."""
    return read_host(env=with_overrides(os.environ, cpus, memory))


def parse_levels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--levels {text!r}: expected positive integers such as 1,8,64") from None
    if not levels or min(levels) < 1:
        raise UsageError(f"--levels {text!r}: expected positive integers such as 1,8,64")
    return levels


DEPLOY_HELP = (
    "Also write deployment files into this directory: a Dockerfile (exec-form CMD), and for the kubernetes"
    " profile deployment.yaml (and hpa.yaml with --target-rps)."
)


HEALTH_HELP = "Route for the readiness/liveness probes (default: the fastest io-bound GET route measured)."


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInputError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadInputError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    return data


OVERLOAD_HELP = (
    "Requests in flight per worker for the overload step after the ladders (past the knee, where"
    " apps that deadlock on a pool fall over)."
)


NO_OVERLOAD_HELP = "Skip the overload step (it may wedge an app that deadlocks: see the README)."

# The overload step's two options, as `probe`, `tune` and `check` declare them.
Overload = Annotated[int, typer.Option(help=OVERLOAD_HELP)]
NoOverload = Annotated[bool, flag("--no-overload", help=NO_OVERLOAD_HELP)]


# The options `tune` and `check` share: both serve the app themselves and probe it.
AppPython = Annotated[
    str, typer.Option("--python", help="Python of the app's environment (default: this one).")
]
AppDir = Annotated[Path, typer.Option("--app-dir", help="Directory the app imports from (default: here).")]
Endpoints = Annotated[
    list[str] | None,
    typer.Option("-e", "--endpoint", help="Probe exactly this 'METHOD /path' (repeatable)."),
]
Excludes = Annotated[
    list[str] | None,
    typer.Option("--exclude", help="Skip paths matching this glob, e.g. '/admin/*' (repeatable)."),
]
Headers = Annotated[
    list[str] | None, typer.Option("-H", "--header", help="'Name: value' sent with every request.")
]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", help="NAME=VALUE for a path or query parameter (repeatable)."),
]
