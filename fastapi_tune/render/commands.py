"""A plan as command lines: gunicorn (every setting as a flag), uvicorn and `fastapi run`.

Rendering only: the values are the plan's settings; the flags are each tool's spelling of them.
"""

from __future__ import annotations

import shlex
from typing import Final

from fastapi_tune.measure.appenv import version_tuple
from fastapi_tune.plan.model import Plan

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


# uvicorn flags younger than the uvicorns still in use, with the release that added each (uvicorn's
# changelog: 0.22.0 "Add --timeout-graceful-shutdown", 0.41.0 "Add --limit-max-requests-jitter").
# An older uvicorn exits with "No such option" on them (measured: 0.18 and 0.40 on the jitter).
UVICORN_FLAG_SINCE: Final = {
    "--timeout-graceful-shutdown": (0, 22),
    "--limit-max-requests-jitter": (0, 41),
}


def uvicorn_accepts(flag: str, version: str | None) -> bool:
    """Whether that uvicorn knows `flag`; an unknown version is taken as a current one."""
    since = UVICORN_FLAG_SINCE.get(flag)
    found = version_tuple(version)
    return since is None or found is None or found >= since


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


def _served(plan: Plan) -> str:
    """What uvicorn and Granian serve: the app, or the admission module that wraps it (the cap)."""
    return plan.app if plan.admission is None else f"{plan.admission.module}:app"


def uvicorn_argv(plan: Plan) -> tuple[str, ...]:
    """uvicorn's own process manager with the same workers, keep-alive, backlog and recycling."""
    host, port = _host_port(plan)
    argv = [
        "uvicorn", _served(plan), "--host", host, "--port", port, "--workers", str(plan.workers),
        "--timeout-keep-alive", _value(plan, "keepalive"), "--backlog", _value(plan, "backlog"),
        "--timeout-graceful-shutdown", _value(plan, "graceful_timeout"),
    ]  # fmt: skip
    max_requests = plan.setting("max_requests").value
    if max_requests:
        argv += ["--limit-max-requests", str(max_requests)]
        argv += ["--limit-max-requests-jitter", _value(plan, "max_requests_jitter")]
    if plan.setting("accesslog").value is None:
        argv.append("--no-access-log")
    return _only_accepted(tuple(argv), _uvicorn_version(plan))


def _uvicorn_version(plan: Plan) -> str | None:
    return plan.stack.uvicorn if plan.stack is not None else None


def _only_accepted(argv: tuple[str, ...], version: str | None) -> tuple[str, ...]:
    """argv without the flags (and their values) that this uvicorn does not know."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word.startswith("--") and not uvicorn_accepts(word, version):
            skip = True  # every gated flag takes a value
        else:
            out.append(word)
    return tuple(out)


def _admission_notes(plan: Plan) -> list[str]:
    cap = plan.admission
    if cap is None:
        return []
    return [
        f"uvicorn and `fastapi run` serve {cap.module}:app, the cap of {cap.limit} in flight per worker"
        f" around {plan.app} (gunicorn wraps it in post_worker_init). uvicorn's own --limit-concurrency does"
        " not fit: it counts open connections as well as requests and answers 503 at once, so idle"
        " keep-alive clients turn into 503s (measured: 160 -> 106 req/s at c=64)",
        f"Granian: `granian --interface asgi --workers {plan.workers} {cap.module}:app`; its --backpressure"
        " caps connections per worker, not requests in flight, so it is no substitute for the cap",
    ]


def command_notes(plan: Plan) -> tuple[str, ...]:
    """What the printed uvicorn and `fastapi run` commands need from the app's environment."""
    stack = plan.stack
    if stack is None:
        return tuple(_admission_notes(plan))
    notes: list[str] = _admission_notes(plan)
    if stack.uvicorn is None:
        notes.append("uvicorn is not installed in the app's environment: pip install uvicorn")
    else:
        dropped = [f for f in UVICORN_FLAG_SINCE if not uvicorn_accepts(f, stack.uvicorn)]
        notes += [
            f"uvicorn {stack.uvicorn} has no {flag} (added in"
            f" {'.'.join(map(str, UVICORN_FLAG_SINCE[flag]))}): left out of the uvicorn command"
            for flag in dropped
        ]
    if stack.fastapi_cli is None:
        notes.append(
            "`fastapi run` needs fastapi[standard] (fastapi-cli is not installed in the app's"
            " environment): pip install 'fastapi[standard]'"
        )
    return tuple(notes)


def fastapi_argv(plan: Plan) -> tuple[str, ...]:
    """`fastapi run FILE --app ATTR` with the plan's address and workers."""
    module, _, attr = _served(plan).partition(":")
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
