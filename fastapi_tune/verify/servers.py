"""verify --servers: the same load against gunicorn, uvicorn's own manager and Granian, each started with
its plan's values (plan_servers.py) from the app's Python, in interleaved rounds.

Only the bind (a free loopback port) and the options that restart workers on their own (gunicorn's
max_requests, uvicorn's --limit-max-requests, Granian's --workers-lifetime and --workers-max-rss) differ
from the plan: the result lists them. Each server's whole process tree is measured (the master and its
workers: Granian's workers each listen on their own socket, uvicorn's are spawned, not forked).
The judgement is servers_judge.py's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from fastapi_tune.core.errors import ServerFailedError, UsageError
from fastapi_tune.core.redact import redact_text
from fastapi_tune.core.signals import stop_on_signals
from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.loadgen import LiveCount
from fastapi_tune.measure.observe import worker_children
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.measure.stats import median
from fastapi_tune.plan.server_model import Server, ServerPlan, for_measuring, install_hint, server_argv
from fastapi_tune.verify.judge import Planned, Run, combine
from fastapi_tune.verify.run import (
    VerifyEvents,
    VerifyOptions,
    Watched,
    check_load_options,
    control_socket_flags,
    measure_all,
    request_specs,
)
from fastapi_tune.verify.servers_judge import ServerRun, ServersVerdict, judge_servers

# Environment that would change a server's settings behind the plan's back: gunicorn's, uvicorn's
# (click reads UVICORN_*) and Granian's (GRANIAN_*) own variables, and what the configs honour.
_DROPPED_NAMES: Final = ("WEB_CONCURRENCY", "BIND", "PORT", "GUNICORN_CMD_ARGS")
_DROPPED_PREFIXES: Final = ("UVICORN_", "GRANIAN_")


@dataclass(frozen=True)
class ServersResult:
    runs: tuple[ServerRun, ...]
    verdict: ServersVerdict | None
    endpoints: tuple[str, ...]
    concurrency: int
    duration_s: float
    repeat: int
    interrupted: bool
    rate_rps: float | None
    objective: str | None


def _env(app_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _DROPPED_NAMES and not k.startswith(_DROPPED_PREFIXES)
    }
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _tree(pid: int) -> Watched:
    """Every process of the server (master, workers, helpers) counted; the workers are its children,
    or the process itself when it serves alone (uvicorn with one worker)."""
    try:
        master = psutil.Process(pid)
        tree = [master, *master.children(recursive=True)]
    except psutil.NoSuchProcess:
        return Watched([], [])
    return Watched(worker_children(pid) or [master], tree)


def _check(options: VerifyOptions, plans: Sequence[ServerPlan]) -> None:
    check_load_options(options)
    if options.sweep:
        raise UsageError(
            "--servers compares servers at the plan's values; --sweep compares worker counts of one"
            " gunicorn config: run them apart"
        )
    missing = [sp for sp in plans if sp.installed is False]
    if missing:
        raise ServerFailedError(install_hint(missing[0].server, options.python))


@dataclass
class _Rounds:
    runs: list[Run]
    boots: list[float]
    command: str
    left_out: tuple[str, ...]


def _one_round(
    sp: ServerPlan,
    round_no: int,
    options: VerifyOptions,
    report: ProbeReport | None,
    control: Sequence[str],
    stop: threading.Event,
    events: VerifyEvents,
) -> tuple[Run, float, str, tuple[str, ...]]:
    """Boot the server on a free port with its plan's values, drive it, stop it."""
    app_dir = options.app_dir.resolve()
    port = free_port()
    specs = request_specs(options, report, f"http://127.0.0.1:{port}")
    measuring, left_out = for_measuring(sp, port)
    argv = [*server_argv(measuring, (options.python, "-m", sp.server.value))]
    if sp.server is Server.GUNICORN:
        argv += control
    live = LiveCount()
    events.run_started(sp.server.value, sp.workers, round_no + 1, options.repeat, live.read)
    with run_server(
        argv,
        port,
        ready_path=specs[0].url.split(str(port), 1)[1],
        workers=sp.workers if sp.workers > 1 else 0,
        cwd=app_dir,
        env=_env(app_dir),
        name=f"{sp.server} ({sp.workers} workers)",
    ) as running:
        time.sleep(0.2)
        planned = Planned(sp.server.value, sp.workers)
        run = measure_all(planned, round_no, _tree(running.pid), specs, options, stop, events, live)
    shown = redact_text(" ".join([sp.server.value, *argv[3:]]))
    return run, running.boot_s, shown, left_out


def run_servers(
    options: VerifyOptions, plans: Sequence[ServerPlan], report: ProbeReport | None, events: VerifyEvents
) -> ServersResult:
    """Each server in turn, round after round; Ctrl-C keeps the rounds done so far."""
    _check(options, plans)
    base = "http://127.0.0.1:1"
    specs = request_specs(options, report, base)  # usage errors before any server starts
    endpoints = tuple(dict.fromkeys(f"{s.method} {s.url.removeprefix(base)}" for s in specs))
    app_dir = options.app_dir.resolve()
    control: list[str] = []
    if any(sp.server is Server.GUNICORN for sp in plans):
        control = control_socket_flags(options, _env(app_dir), app_dir)
    stop = threading.Event()
    done: dict[Server, _Rounds] = {}
    with stop_on_signals(stop):
        for round_no in range(options.repeat):
            # Every server once per round, so a drift on the machine touches all of them alike.
            for sp in plans:
                if stop.is_set():
                    break
                run, boot, command, left_out = _one_round(
                    sp, round_no, options, report, control, stop, events
                )
                if stop.is_set():
                    break
                rounds = done.setdefault(sp.server, _Rounds([], [], command, left_out))
                rounds.runs.append(run)
                rounds.boots.append(boot)
                events.run_done(run)
    runs = tuple(
        ServerRun(
            server=server.value,
            run=combine(r.runs),
            boot_s=round(median(r.boots), 2),
            rss_rounds=tuple(x.rss_mib for x in r.runs),
            command=r.command,
            left_out=r.left_out,
        )
        for server, r in done.items()
    )
    return ServersResult(
        runs=runs,
        verdict=judge_servers(runs, options.objective, options.capacity),
        endpoints=endpoints,
        concurrency=options.concurrency,
        duration_s=options.duration_s,
        repeat=options.repeat,
        interrupted=stop.is_set(),
        rate_rps=options.rate_rps,
        objective=options.objective.describe() if options.objective else None,
    )
