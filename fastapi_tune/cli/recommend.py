"""`fastapi-tune recommend`: gunicorn.conf.py and commands from host + probe report + profile."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, flag, out, print_json
from fastapi_tune.cli.options import DEPLOY_HELP, HEALTH_HELP, Cpus, Memory
from fastapi_tune.cli.prompts import (
    app_spec,
    ask_profile,
    ask_value,
    bind_spec,
    interactive,
    show_and_write_file,
    target_facts,
)
from fastapi_tune.cli.traffic import AccessLog, planning_traffic, say_defaults
from fastapi_tune.core import checks
from fastapi_tune.core.errors import (
    UsageError,
)
from fastapi_tune.core.fileio import check_writable
from fastapi_tune.measure.appenv import read_app_env
from fastapi_tune.measure.report import load_report
from fastapi_tune.plan.deploy import decide_deploy
from fastapi_tune.plan.model import Choices, Plan
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import DEFAULT_PROFILE, load_profile
from fastapi_tune.plan.server_evidence import server_evidence
from fastapi_tune.plan.server_model import Server, ServerPlan
from fastapi_tune.plan.servers import plan_server
from fastapi_tune.plan.slo import parse_slo
from fastapi_tune.plan.traffic import traffic_defaults, with_traffic_input
from fastapi_tune.render.admission import admission_files
from fastapi_tune.render.conf import DEFAULT_CONF, render_gunicorn_conf
from fastapi_tune.render.deploy import deploy_files
from fastapi_tune.render.export_load import (
    parse_mix,
)
from fastapi_tune.render.plan import plan_to_json, print_brief, print_plan
from fastapi_tune.render.servers import (
    SCRIPT_NAMES,
    print_server_plan,
    render_run_script,
    server_plan_to_json,
)


@command
def recommend(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[
        str | None, typer.Option("--app", help="The app to serve, as module:attribute (default: main:app).")
    ] = None,
    probe_path: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Probe report to plan from (default: ./fastapi-tune-probe.json if present)."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Deployment profile: vm, container, kubernetes, small-memory, or a path to a .yaml."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            help="Where to write the gunicorn config (default gunicorn.conf.py), or with --server uvicorn"
            " or granian the script that runs it (default run-uvicorn.sh, run-granian.sh).",
        ),
    ] = None,
    bind: Annotated[str | None, typer.Option(help="Address to listen on (default: the profile's).")] = None,
    server: Annotated[
        Server,
        typer.Option(
            "--server",
            help="The server to plan for: gunicorn (default; gunicorn.conf.py), uvicorn (its own process"
            " manager) or granian; the same plan, each value as that server spells it, what it lacks said.",
        ),
    ] = Server.GUNICORN,
    worker_class: Annotated[
        str | None, typer.Option(help="uvicorn-worker (default) or asgi (gunicorn's native worker, >= 24).")
    ] = None,
    preload: Annotated[bool, flag(help="Agree to preload_app (saves memory with several workers).")] = False,
    target_rps: Annotated[
        float | None,
        typer.Option(
            help="Requests/s to plan for: with --slo, the fewest workers predicted to meet the objective"
            " at this rate; on kubernetes, the replicas."
        ),
    ] = None,
    slo: Annotated[
        str | None,
        typer.Option(
            "--slo",
            help="Objective to size for, e.g. 'p99<300ms' or 'p50<50ms,p99.9<1s,errors<0.5%'"
            " (p50/p90/p95/p99/p99.9; errors default to <1%).",
        ),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix", help="Traffic shares of the probed routes, e.g. 'GET /a=70,POST /b=30' (default: equal)."
        ),
    ] = None,
    db_max_connections: Annotated[
        int | None,
        typer.Option(help="The database's max_connections: caps workers (and replicas) so their pools fit."),
    ] = None,
    db_pool_size: Annotated[
        int | None,
        typer.Option(help="Connections one worker's pool may open (pool_size + max_overflow)."),
    ] = None,
    cpus: Cpus = None,
    memory: Memory = None,
    yes: Annotated[
        bool,
        flag("--yes", "-y", help="Take the defaults, never prompt; replace --out (kept as .bak)."),
    ] = False,
    as_json: Annotated[bool, flag("--json", help="Print the plan as JSON on stdout.")] = False,
    brief: Annotated[
        bool,
        flag(
            "--brief", help="The plan on one screen: workers, key settings, the command (the file has all)."
        ),
    ] = False,
    python: Annotated[
        str, typer.Option(help="Python of the app's environment: the printed commands match its versions.")
    ] = sys.executable,
    deploy: Annotated[Path | None, typer.Option(help=DEPLOY_HELP)] = None,
    health_path: Annotated[str | None, typer.Option(help=HEALTH_HELP)] = None,
    access_log: AccessLog = None,
) -> None:
    """Turn host facts + the probe report + a profile into gunicorn.conf.py and a command.

    Every number comes with what was measured and why (no (2 x cores) + 1). At a terminal it asks
    for what it cannot know (app module, deployment profile, bind, overwrite); with --yes or
    without a terminal it takes the defaults and never replaces an existing file unless --yes.
    With --server uvicorn or granian it writes a script that runs that server with the same plan.
    """
    output = output or (DEFAULT_CONF if server is Server.GUNICORN else Path(SCRIPT_NAMES[server]))
    check_writable(output, "--out")
    if target_rps is not None:
        checks.number(target_rps, "--target-rps", 1e-3, checks.MAX_RPS, " requests/s")
    _check_db_options(db_max_connections, db_pool_size)
    if target_rps is not None and not (math.isfinite(target_rps) and target_rps > 0):
        raise UsageError("--target-rps: expected a positive number of requests per second")
    report = load_report(probe_path)
    traffic = planning_traffic(report, access_log)
    ask = interactive(yes, as_json)
    if ask:
        app_module = app_module or ask_value("App to serve (module:attribute)", "main:app", app_spec)
    chosen = ask_profile() if ask and profile is None else load_profile(profile or DEFAULT_PROFILE)
    if ask and bind is None:
        bind = ask_value("Bind address", chosen.bind, bind_spec)
    facts = target_facts(chosen, cpus, memory, ask)
    stack = read_app_env(python)
    choices = Choices(
        app=app_module or "main:app",
        bind=bind,
        worker_class=worker_class,
        preload=preload,
        target_rps=target_rps,
        gunicorn_version=stack.gunicorn,
        stack=stack,
        db_max_connections=db_max_connections,
        db_pool_size=db_pool_size,
        objective=parse_slo(slo) if slo else None,
        mix=parse_mix(mix) if mix else None,
    )
    defaults = None if traffic is None else traffic_defaults(choices, traffic, report)
    plan = make_plan(facts, report, chosen, defaults.choices if defaults else choices)
    if defaults is not None:
        plan = with_traffic_input(plan, defaults)
        say_defaults(defaults)
    sp = None
    if server is Server.GUNICORN:
        show_and_write(plan, output, consent=yes, ask=ask, as_json=as_json, brief=brief)
    else:
        sp = plan_server(server, plan, server_evidence(facts, report, chosen))
        _show_server_and_write(plan, sp, output, consent=yes, ask=ask, as_json=as_json, brief=brief)
    if deploy is not None:
        spec = decide_deploy(plan, report, chosen, facts, Path.cwd().name, health_path, output.name, sp)
        for name, text in deploy_files(spec):
            show_and_write_file(deploy / name, text, consent=yes, ask=ask)


def _check_db_options(max_connections: int | None, pool_size: int | None) -> None:
    if (max_connections is None) != (pool_size is None):
        raise UsageError("--db-max-connections and --db-pool-size go together: the cap needs both")
    if max_connections is not None and not 1 <= max_connections <= 1_000_000:
        raise UsageError("--db-max-connections: expected a number of connections from 1 to 1000000")
    if pool_size is not None and not 1 <= pool_size <= 100_000:
        raise UsageError("--db-pool-size: expected connections per worker from 1 to 100000")


def show_and_write(
    plan: Plan, output: Path, consent: bool, ask: bool, as_json: bool, brief: bool = False
) -> None:
    """Print the plan, then write gunicorn.conf.py without ever replacing a file silently."""
    text = render_gunicorn_conf(plan)
    if as_json:
        print_json(plan_to_json(plan))
    elif brief:
        print_brief(out, plan)
    else:
        print_plan(out, plan)
    show_and_write_file(output, text, consent, ask)
    for path, module in admission_files(plan, output):  # the cap's module, which the config imports
        show_and_write_file(path, module, consent, ask)


def _show_server_and_write(
    plan: Plan, sp: ServerPlan, output: Path, consent: bool, ask: bool, as_json: bool, brief: bool
) -> None:
    """Print the plan as uvicorn or Granian runs it, then write the script that runs it."""
    if as_json:
        print_json({**plan_to_json(plan), "server": server_plan_to_json(sp)})
    else:
        print_server_plan(out, plan, sp, brief=brief)
    show_and_write_file(output, render_run_script(sp, plan), consent, ask, executable=True)
