"""`fastapi-tune tune APP`: start the app, probe it, plan, write the files, stop it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, err, flag, out, print_json, raise_outcome_error
from fastapi_tune.cli.options import (
    DEPLOY_HELP,
    HEALTH_HELP,
    AppDir,
    AppPython,
    Endpoints,
    Excludes,
    Headers,
    NoOverload,
    Overload,
    Params,
    Verbose,
)
from fastapi_tune.cli.prompts import ask_profile, interactive, refuse_early, target_facts
from fastapi_tune.cli.traffic import AccessLog, say_defaults
from fastapi_tune.core.errors import (
    Interrupted,
)
from fastapi_tune.core.rules import OVERLOAD_PER_WORKER
from fastapi_tune.flows.workflow import (
    TuneOptions,
    TuneResult,
    run_tune,
)
from fastapi_tune.measure.host import (
    read_host,
)
from fastapi_tune.measure.probe_options import ProbeOptions
from fastapi_tune.measure.schedule import DEFAULT_BUDGET_S, ROUTE_S
from fastapi_tune.plan.model import ADMISSION_MODULE, Choices
from fastapi_tune.plan.profiles import DEFAULT_PROFILE, load_profile
from fastapi_tune.render.conf import DEFAULT_CONF
from fastapi_tune.render.tune import TuneProgress, print_files, print_tune, tune_to_json


@command
def tune(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[str, typer.Argument(help="Your app, as module:attribute (e.g. main:app).")],
    python: AppPython = sys.executable,
    app_dir: AppDir = Path(),
    profile: Annotated[
        str | None,
        typer.Option(help="Deployment profile: vm, container, kubernetes, small-memory, or a .yaml path."),
    ] = None,
    cpus: Annotated[
        str | None, typer.Option(help="CPU limit where it will run (container/pod), e.g. 1 or 0.5.")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory limit where it will run (container/pod), e.g. 512M.")
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Requests/s to size replicas for (kubernetes profile).")
    ] = None,
    bind: Annotated[str | None, typer.Option(help="Address to listen on (default: the profile's).")] = None,
    worker_class: Annotated[
        str | None, typer.Option(help="uvicorn-worker (default) or asgi (gunicorn's native worker, >= 24).")
    ] = None,
    preload: Annotated[bool, flag(help="Agree to preload_app (saves memory with several workers).")] = False,
    output: Annotated[
        Path, typer.Option("-o", "--out", help="Where to write the gunicorn config.")
    ] = DEFAULT_CONF,
    out_path: Annotated[Path, typer.Option("--report", help="Where the probe report is saved.")] = Path(
        "fastapi-tune-probe.json"
    ),
    deploy: Annotated[Path | None, typer.Option(help=DEPLOY_HELP)] = None,
    health_path: Annotated[str | None, typer.Option(help=HEALTH_HELP)] = None,
    endpoint: Endpoints = None,
    exclude: Excludes = None,
    header: Headers = None,
    param: Params = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help=f"Time budget for the probe (default: {DEFAULT_BUDGET_S:.0f} s, or {ROUTE_S:g} s per route"
            f" past {DEFAULT_BUDGET_S / ROUTE_S:.0f} routes).",
            show_default=False,
        ),
    ] = None,
    overload: Overload = OVERLOAD_PER_WORKER,
    no_overload: NoOverload = False,
    verify_it: Annotated[
        bool,
        flag("--verify", help="Then measure the config against the rule of thumb and one worker."),
    ] = False,
    yes: Annotated[
        bool,
        flag("--yes", "-y", help="Take the defaults, never prompt; replace files (kept as .bak)."),
    ] = False,
    as_json: Annotated[bool, flag("--json", help="Print report, plan and files as one JSON object.")] = False,
    access_log: AccessLog = None,
    verbose: Verbose = False,
) -> None:
    """Your own app in one command: start it, probe it, recommend, write the config, stop it.

    Serves APP with one uvicorn worker from the app's environment (--python, --app-dir) on a free
    loopback port, probes and classifies every endpoint, plans for where it will run (--profile,
    --cpus, --memory), writes gunicorn.conf.py (and with --deploy a Dockerfile and Kubernetes
    files), and with --verify proves the config. The app is stopped whatever happens.
    """
    ask = interactive(yes, as_json)
    chosen = ask_profile() if ask and profile is None else load_profile(profile or DEFAULT_PROFILE)
    target = target_facts(chosen, cpus, memory, ask)
    paths = [output, output.parent / f"{ADMISSION_MODULE}.py"]  # the cap's module, when the app needs one
    paths += [deploy / n for n in ("Dockerfile", "deployment.yaml", "hpa.yaml")] if deploy else []
    consent = refuse_early(paths, yes, ask)
    options = TuneOptions(
        app=app_module,
        profile=chosen,
        choices=Choices(
            app=app_module, bind=bind, worker_class=worker_class, preload=preload, target_rps=target_rps
        ),
        probe=ProbeOptions(
            url="",
            endpoints=tuple(endpoint or ()),
            excludes=tuple(exclude or ()),
            headers=tuple(header or ()),
            params=tuple(param or ()),
            max_seconds=max_seconds,
            overload=None if no_overload else overload,
        ),
        python=python,
        app_dir=app_dir,
        report_path=out_path,
        conf_path=output,
        deploy_dir=deploy,
        health_path=health_path,
        replace=consent,
        verify=verify_it,
        access_logs=tuple(access_log or ()),
    )
    if deploy is not None:
        deploy.mkdir(parents=True, exist_ok=True)
    result = run_tune(options, read_host(), target, TuneProgress(err, verbose))
    _show_tune(result, out_path, as_json, verbose)


def _show_tune(result: TuneResult, out_path: Path, as_json: bool, verbose: bool) -> None:
    """Print the run, say where its files went, and raise for a dead app or an interruption."""
    if as_json:
        r = result
        print_json(tune_to_json(r.app_env, r.outcome.report, r.plan, r.written, r.deploy, r.verify))
    else:
        print_tune(out, result.outcome.report, result.plan, result.verify, verbose)
    err.print(f"Report saved to [bold]{out_path}[/]")
    outcome = result.outcome
    if outcome.error is not None:
        raise_outcome_error(outcome.error, out_path)
    if outcome.report.interrupted:
        raise Interrupted(f"interrupted: what was measured is in {out_path}; the app was stopped")
    if result.traffic is not None:
        say_defaults(result.traffic)
    print_files(err, result.written)
    if result.verify is not None and result.verify.interrupted:
        raise Interrupted("interrupted during --verify; every server started was stopped")
