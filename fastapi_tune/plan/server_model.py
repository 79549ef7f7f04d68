"""A server's plan as data: the options with their reasons, what it lacks, what it needs installed.

Shared by the deciders (plan_servers.py) and the renderers (render_servers.py); pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.appenv import AppEnv, version_tuple
from fastapi_tune.plan.model import Advice, Plan


class Server(StrEnum):
    """A server that runs the app: `recommend --server`, `verify --servers`."""

    GUNICORN = "gunicorn"
    UVICORN = "uvicorn"
    GRANIAN = "granian"


# uvicorn flags younger than the uvicorns still in use, with the release that added each (uvicorn's
# changelog: 0.22.0 --timeout-graceful-shutdown, 0.37.0 --timeout-worker-healthcheck, 0.41.0
# --limit-max-requests-jitter). An older uvicorn exits with "No such option" (measured: 0.18 and 0.40
# on the jitter).
UVICORN_FLAG_SINCE: Final = {
    "--timeout-graceful-shutdown": (0, 22),
    "--timeout-worker-healthcheck": (0, 37),
    "--limit-max-requests-jitter": (0, 41),
}
# Granian flags and the release that added each (granian's git history: the tag that first holds the
# option in granian/cli.py).
GRANIAN_FLAG_SINCE: Final = {
    "--runtime-threads": (2, 0),
    "--runtime-mode": (2, 0),
    "--http1-header-read-timeout": (2, 0),
    "--workers-max-rss": (2, 5),
    "--rss-samples": (2, 6),
}


@dataclass(frozen=True)
class ServerOption:
    """One command-line option: its flag, its value (None: a switch) and why."""

    flag: str
    value: str | None
    why: str
    carries: str | None = None  # the Plan setting it carries ("bind", "keepalive" ...), if any
    recycles: bool = False  # restarts workers on its own: verify turns it off while measuring


@dataclass(frozen=True)
class NotFlag:
    """A plan setting this server is not given as a flag: what it lacks or does instead."""

    setting: str
    text: str
    missing_flag: str | None = None  # the flag this release lacks (a newer one has it), if that is why


@dataclass(frozen=True)
class ServerPlan:
    """The plan as one server runs it."""

    server: Server
    app: str
    version: str | None  # installed in the app's environment; None: not installed or not read
    installed: bool | None  # None: the app's environment was not read
    workers: int
    options: tuple[ServerOption, ...]
    not_flags: tuple[NotFlag, ...]
    notes: tuple[str, ...]  # what to know before running it (install, limits of the server)
    advice: tuple[Advice, ...]  # the plan's advice that concerns this server
    pins: tuple[str, ...]  # name==version of what the server needs, as measured

    def option(self, flag: str) -> ServerOption:
        """The option spelled `flag` (KeyError when the plan has none)."""
        for o in self.options:
            if o.flag == flag:
                return o
        raise KeyError(flag)


# ---------------------------------------------------------------------------------------
# Shared pieces


def server_argv(sp: ServerPlan, program: Sequence[str] | None = None) -> tuple[str, ...]:
    """PROGRAM APP followed by every option (`program` defaults to the server's own command)."""
    argv = [*(program or (sp.server.value,)), sp.app]
    for o in sp.options:
        argv.append(o.flag)
        if o.value is not None:
            argv.append(o.value)
    return tuple(argv)


def accepts(flag: str, version: str | None, since: Mapping[str, tuple[int, int]]) -> bool:
    """Whether that release knows `flag`; an unknown version is taken as a current one."""
    first = since.get(flag)
    found = version_tuple(version)
    return first is None or found is None or found >= first


def uvicorn_accepts(flag: str, version: str | None) -> bool:
    """Whether that uvicorn knows `flag`; an unknown version is taken as a current one."""
    return accepts(flag, version, UVICORN_FLAG_SINCE)


def dotted(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))


def bind_options(plan: Plan) -> tuple[ServerOption, ...]:
    """--host/--port (or --uds for a unix socket), as uvicorn and Granian spell the bind address."""
    bind = plan.setting("bind")
    address = str(bind.value)
    if address.startswith("unix:"):
        return (ServerOption("--uds", address.removeprefix("unix:"), bind.why, "bind"),)
    host, _, port = address.rpartition(":")
    return (
        ServerOption("--host", host.strip("[]") or "0.0.0.0", bind.why, "bind"),
        ServerOption("--port", port, bind.why, "bind"),
    )


def install_state(server: Server, stack: AppEnv | None) -> tuple[bool | None, tuple[str, ...]]:
    if stack is None:
        return None, ()
    version = {Server.GUNICORN: stack.gunicorn, Server.UVICORN: stack.uvicorn, Server.GRANIAN: stack.granian}
    if version[server] is not None:
        return True, ()
    return False, (install_hint(server, stack.python),)


def install_hint(server: Server, python: str) -> str:
    """One line: how to put the server into the app's environment."""
    package = {
        Server.GUNICORN: "gunicorn uvicorn-worker",
        Server.UVICORN: "uvicorn",
        Server.GRANIAN: "'granian>=2.8'",
    }[server]
    extra = "demo" if server is not Server.GRANIAN else "granian"
    return (
        f"{server} is not installed for {python}: {python} -m pip install {package}"
        f" (or pip install 'fastapi-tune[{extra}]' where the app runs in fastapi-tune's environment)"
    )


def advice_for(plan: Plan, server: Server) -> tuple[Advice, ...]:
    """The plan's advice that concerns this server (the app's, and the server's own)."""
    return tuple(a for a in plan.advice if a.only_for in (None, server.value))


def gated(
    options: list[ServerOption], version: str | None, since: Mapping[str, tuple[int, int]], server: Server
) -> tuple[tuple[ServerOption, ...], tuple[NotFlag, ...]]:
    """The options this release accepts; each one it does not is said, with the release that added it."""
    kept: list[ServerOption] = []
    said: list[NotFlag] = []
    for o in options:
        if accepts(o.flag, version, since):
            kept.append(o)
        else:
            shown = f"{o.flag} {o.value}" if o.value is not None else o.flag
            said.append(
                NotFlag(
                    o.carries or o.flag,
                    f"{server} {version} has no {o.flag} (added in {dotted(since[o.flag])}): left out;"
                    f" upgrade {server} to set it ({shown})",
                    o.flag,
                )
            )
    return tuple(kept), tuple(said)


def parse_servers(text: str) -> tuple[Server, ...]:
    """'gunicorn,granian' -> the servers in that order, each once; a one-line error for an unknown name."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    known = {s.value: s for s in Server}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(
            f"--servers {text!r}: expected names from {', '.join(known)}, comma-separated"
            + (f" ({', '.join(unknown)} unknown)" if unknown else "")
        )
    return tuple(dict.fromkeys(known[n] for n in names))


def for_measuring(sp: ServerPlan, port: int) -> tuple[ServerPlan, tuple[str, ...]]:
    """The plan on a loopback port, without the options that restart workers on their own (a restart
    mid-run shows as errors, a vanished worker, negative CPU), and those options, as `flag value`."""
    why = "verify: a free loopback port"
    if sp.server is Server.GUNICORN:
        bind: tuple[ServerOption, ...] = (ServerOption("--bind", f"127.0.0.1:{port}", why, "bind"),)
    else:
        bind = (
            ServerOption("--host", "127.0.0.1", why, "bind"),
            ServerOption("--port", str(port), why, "bind"),
        )
    kept = tuple(o for o in sp.options if o.carries != "bind" and not o.recycles)
    dropped = tuple(f"{o.flag} {o.value}" if o.value else o.flag for o in sp.options if o.recycles)
    return replace(sp, options=(*bind, *kept)), dropped
