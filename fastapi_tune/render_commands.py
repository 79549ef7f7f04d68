"""A plan as command lines: gunicorn (every setting as a flag), uvicorn and `fastapi run`.

Rendering only: the values are the plan's settings; the flags are each tool's spelling of them.
"""

from __future__ import annotations

import shlex
from typing import Final

from fastapi_tune.plan import Plan

# Command-line flags for the settings that have one, in gunicorn's spelling.
_GUNICORN_FLAGS: Final = {
    "worker_class": "--worker-class",
    "workers": "--workers",
    "bind": "--bind",
    "timeout": "--timeout",
    "graceful_timeout": "--graceful-timeout",
    "keepalive": "--keep-alive",
    "max_requests": "--max-requests",
    "max_requests_jitter": "--max-requests-jitter",
    "backlog": "--backlog",
    "worker_tmp_dir": "--worker-tmp-dir",
    "accesslog": "--access-logfile",
}


# Settings that are a flag without a value, given when the setting is true.
_GUNICORN_SWITCHES: Final = {"preload_app": "--preload", "control_socket_disable": "--no-control-socket"}


def _value(plan: Plan, name: str) -> str:
    return str(plan.setting(name).value)


def _host_port(plan: Plan) -> tuple[str, str]:
    host, _, port = _value(plan, "bind").rpartition(":")
    return host, port


def gunicorn_argv(plan: Plan) -> tuple[str, ...]:
    """gunicorn APP followed by one flag per setting that has one."""
    argv = ["gunicorn", plan.app]
    for s in plan.settings:
        if s.name in _GUNICORN_SWITCHES:
            if s.value:
                argv.append(_GUNICORN_SWITCHES[s.name])
        elif s.name in _GUNICORN_FLAGS and s.value is not None:
            argv += [_GUNICORN_FLAGS[s.name], str(s.value)]
    return tuple(argv)


def uvicorn_argv(plan: Plan) -> tuple[str, ...]:
    """uvicorn's own process manager with the same workers, keep-alive, backlog and recycling."""
    host, port = _host_port(plan)
    argv = [
        "uvicorn", plan.app, "--host", host, "--port", port, "--workers", str(plan.workers),
        "--timeout-keep-alive", _value(plan, "keepalive"), "--backlog", _value(plan, "backlog"),
        "--timeout-graceful-shutdown", _value(plan, "graceful_timeout"),
    ]  # fmt: skip
    max_requests = plan.setting("max_requests").value
    if max_requests:
        argv += ["--limit-max-requests", str(max_requests)]
        argv += ["--limit-max-requests-jitter", _value(plan, "max_requests_jitter")]
    if plan.setting("accesslog").value is None:
        argv.append("--no-access-log")
    return tuple(argv)


def fastapi_argv(plan: Plan) -> tuple[str, ...]:
    """`fastapi run FILE --app ATTR` with the plan's address and workers."""
    module, _, attr = plan.app.partition(":")
    host, port = _host_port(plan)
    path = module.replace(".", "/") + ".py"
    return (
        "fastapi",
        "run",
        path,
        "--app",
        attr or "app",
        "--host",
        host,
        "--port",
        port,
        "--workers",
        str(plan.workers),
    )


def one_line(argv: tuple[str, ...]) -> str:
    """A command as one shell line."""
    return shlex.join(argv)


def flag_per_line(argv: tuple[str, ...]) -> str:
    """A command with each flag and its value on a continued line of its own."""
    parts: list[str] = [shlex.join(argv[:2])]
    i = 2
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            parts.append(shlex.join(argv[i : i + 2]))
            i += 2
        else:
            parts.append(shlex.quote(argv[i]))
            i += 1
    return " \\\n    ".join(parts)


def wrapped(argv: tuple[str, ...], width: int = 90) -> list[str]:
    """A long command as continued lines within `width`, never splitting a flag from its value."""
    words: list[str] = []
    for word in shlex.join(argv).split(" "):
        if words and words[-1].startswith("--") and not word.startswith("--") and " " not in words[-1]:
            words[-1] += " " + word
        else:
            words.append(word)
    lines: list[str] = []
    current = ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current + " \\")
            current = "    " + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return lines
