"""A plan as command lines: gunicorn (every setting as a flag), uvicorn, Granian and `fastapi run`.

Rendering only: the values are the plan's settings; the flags are each tool's spelling of them.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from fastapi_tune.plan.model import Plan
from fastapi_tune.plan.server_model import UVICORN_FLAG_SINCE, dotted, server_argv, uvicorn_accepts
from fastapi_tune.plan.servers import gunicorn_plan, uvicorn_plan

__all__ = [
    "command_notes",
    "fastapi_argv",
    "flag_per_line",
    "gunicorn_argv",
    "one_line",
    "server_argv",
    "uvicorn_accepts",
    "uvicorn_argv",
    "wrapped",
]


def _host_port(plan: Plan) -> tuple[str, str]:
    host, _, port = str(plan.setting("bind").value).rpartition(":")
    return host, port


def gunicorn_argv(plan: Plan) -> tuple[str, ...]:
    """gunicorn APP followed by one flag per setting that has one."""
    return server_argv(gunicorn_plan(plan))


def uvicorn_argv(plan: Plan) -> tuple[str, ...]:
    """uvicorn's own process manager with the plan's workers, keep-alive, backlog, shutdown and recycling,
    in the flags the app's uvicorn has (the same command as `recommend --server uvicorn`, without the
    probe's concurrency cap)."""
    sp = uvicorn_plan(plan)
    return server_argv(sp if plan.admission is None else replace(sp, app=_served(plan)))


def _served(plan: Plan) -> str:
    """What uvicorn and `fastapi run` serve: the app, or the admission module that wraps it (the cap)."""
    return plan.app if plan.admission is None else f"{plan.admission.module}:app"


def _admission_notes(plan: Plan) -> list[str]:
    cap = plan.admission
    if cap is None:
        return []
    return [
        f"uvicorn and `fastapi run` serve {cap.module}:app, the cap of {cap.limit} in flight per worker"
        f" around {plan.app} (gunicorn wraps it in post_worker_init). uvicorn's own --limit-concurrency"
        " counts open connections as well as requests and answers 503 at once, so idle keep-alive"
        " clients turn into 503s (measured: 160 -> 106 req/s at c=64); the module queues instead",
        f"Granian: `granian --interface asgi --workers {plan.workers} {cap.module}:app`; its --backpressure"
        " caps connections per worker, not requests in flight (`recommend --server granian` sets it"
        " from the collapse point too)",
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
        notes += [
            f"uvicorn {stack.uvicorn} has no {nf.missing_flag} (added in"
            f" {dotted(UVICORN_FLAG_SINCE[nf.missing_flag])}): left out of the uvicorn command"
            for nf in uvicorn_plan(plan).not_flags
            if nf.missing_flag is not None
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
