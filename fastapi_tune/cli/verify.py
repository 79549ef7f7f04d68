"""`fastapi-tune verify APP -c CONF`: the plan measured against the alternatives."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fastapi_tune.cli.base import command, err, flag, out, print_json
from fastapi_tune.core.errors import (
    Interrupted,
    RunErrorsError,
    SloMissedError,
    UsageError,
)
from fastapi_tune.core.fileio import atomic_write, check_writable
from fastapi_tune.measure.appenv import read_app_env
from fastapi_tune.measure.host import (
    HostFacts,
    read_host,
)
from fastapi_tune.measure.report import ProbeReport, load_report, report_to_json
from fastapi_tune.plan.model import Choices
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import DEFAULT_PROFILE, load_profile
from fastapi_tune.plan.server_evidence import server_evidence
from fastapi_tune.plan.server_model import Server, parse_servers
from fastapi_tune.plan.servers import plan_server
from fastapi_tune.plan.slo import parse_slo
from fastapi_tune.render.conf import DEFAULT_CONF
from fastapi_tune.render.export_load import (
    parse_mix,
)
from fastapi_tune.render.html import render_html
from fastapi_tune.render.verify import VerifyProgress, note_lines, print_verify, verify_to_json
from fastapi_tune.render.verify_servers import print_servers, servers_to_json
from fastapi_tune.verify.run import (
    DEFAULT_MAX_IN_FLIGHT,
    VerifyOptions,
    VerifyResult,
    run_verify,
    verify_notes,
)
from fastapi_tune.verify.servers import run_servers


@command
def verify(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[str, typer.Argument(help="The app, as module:attribute (e.g. main:app).")],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The gunicorn.conf.py to verify.")
    ] = DEFAULT_CONF,
    probe_path: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Report whose endpoints make the load (default: ./fastapi-tune-probe.json)."
        ),
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option("-e", "--endpoint", help="Drive this 'GET /path' instead (repeatable)."),
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("-H", "--header", help="'Name: value' sent with every request.")
    ] = None,
    python: Annotated[
        str, typer.Option(help="Python of the environment where the app imports.")
    ] = sys.executable,
    app_dir: Annotated[Path, typer.Option(help="Directory the app imports from.")] = Path(),
    concurrency: Annotated[int, typer.Option(help="Concurrent connections for every run.")] = 64,
    duration: Annotated[float, typer.Option(help="Counted seconds per run (after 1 s warm-up).")] = 3.0,
    repeat: Annotated[
        int, typer.Option(help="Rounds through every configuration; the table shows medians.")
    ] = 3,
    sweep: Annotated[
        bool,
        flag("--sweep", help="Also try 1 .. 2 x effective CPUs workers and show which was best."),
    ] = False,
    slo: Annotated[
        str | None,
        typer.Option(
            "--slo",
            help="Objective, e.g. 'p99<300ms,errors<1%': judged at --rate (exit 7 when the recommended"
            " config misses it) and by --capacity.",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", help="Also drive every configuration at this arrival rate (req/s, open loop)."
        ),
    ] = None,
    capacity: Annotated[
        bool,
        flag("--capacity", help="Find each configuration's highest arrival rate meeting --slo (~15 s each)."),
    ] = False,
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight",
            help="The open loop's bound on requests in flight (like k6's maxVUs): a start that finds it"
            " reached is dropped and counted as failed, never queued by the generator.",
        ),
    ] = DEFAULT_MAX_IN_FLIGHT,
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix", help="Traffic shares of the routes driven, e.g. 'GET /a=70,GET /b=30' (default: equal)."
        ),
    ] = None,
    overload: Annotated[
        int | None,
        typer.Option(
            help="Also load the config at C in flight per worker past its knee (by default when the config"
            " carries an admission cap: 64, beside the same config uncapped)."
        ),
    ] = None,
    no_overload: Annotated[bool, flag("--no-overload", help="Skip the overload step.")] = False,
    servers: Annotated[
        str | None,
        typer.Option(
            "--servers",
            help="Compare servers instead, e.g. gunicorn,uvicorn,granian: each started with the plan"
            " `recommend --server NAME` makes (from --probe, this host and --profile; -c is not read).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(help="With --servers: the profile the servers' plan is made for (default vm)."),
    ] = None,
    as_json: Annotated[bool, flag("--json", help="Print runs[] and the verdict as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts) here.")
    ] = None,
    verbose: Annotated[
        bool,
        flag("--verbose", "-v", help="Print each run as it ends, and name every endpoint driven."),
    ] = False,
) -> None:
    """Prove a recommendation: run it against the rule of thumb and a single worker on the real app.

    Starts gunicorn with --config on a free loopback port (only --bind, and --workers for the
    baselines, are overridden; WEB_CONCURRENCY, BIND and PORT are ignored), drives it with the
    same load (every connection sends the probe report's endpoints in turn), stops it, and moves
    to the next: recommended, rule-of-thumb (2 x cores + 1), single-worker, and with --sweep every
    count from 1 to 2 x effective CPUs. --repeat interleaved rounds; the table shows medians.
    With --servers: gunicorn, uvicorn's own manager and Granian side by side, and which serves the app
    best (throughput; with --slo, the rate meeting it per MiB), or a tie within the noise.
    """
    if html is not None:
        check_writable(html, "--html")
    facts = read_host()
    report = None if endpoint else load_report(probe_path)
    options = VerifyOptions(
        app=app_module,
        config=config,
        python=python,
        app_dir=app_dir,
        endpoints=tuple(endpoint or ()),
        headers=tuple(header or ()),
        concurrency=concurrency,
        duration_s=duration,
        repeat=repeat,
        sweep=sweep,
        mix=parse_mix(mix) if mix else None,
        objective=parse_slo(slo) if slo else None,
        rate_rps=rate,
        capacity=capacity,
        overload=overload,
        no_overload=no_overload,
        max_in_flight=max_in_flight,
    )
    for note in note_lines(verify_notes(options, report), every=verbose):
        err.print(f"[yellow]note:[/] {escape(note)}")
    if servers is not None:
        _verify_servers(options, parse_servers(servers), facts, report, profile, as_json, html)
        return
    with VerifyProgress(err, verbose) as progress:
        result = run_verify(options, facts, report, progress)
    if as_json:
        print_json(verify_to_json(result))
    else:
        print_verify(out, result, verbose)
    if html is not None:
        atomic_write(
            html, render_html(report_to_json(report) if report else {}, None, verify_to_json(result))
        )
        err.print(f"HTML report saved to [bold]{html}[/]")
    if result.interrupted:
        raise Interrupted(f"interrupted after {len(result.runs)} run(s); every server started was stopped")
    _verify_exit(result)


def _verify_servers(
    options: VerifyOptions,
    names: tuple[Server, ...],
    facts: HostFacts,
    report: ProbeReport | None,
    profile: str | None,
    as_json: bool,
    html: Path | None,
) -> None:
    """verify --servers: the plan for this host, each server started with its values, one table."""
    if html is not None:
        raise UsageError("--html draws a config's runs; with --servers use --json")
    chosen = load_profile(profile or DEFAULT_PROFILE)
    stack = read_app_env(options.python, options.app_dir)
    plan = make_plan(
        facts, report, chosen, Choices(app=options.app, gunicorn_version=stack.gunicorn, stack=stack)
    )
    evidence = server_evidence(facts, report, chosen)
    plans = tuple(plan_server(name, plan, evidence) for name in names)
    with VerifyProgress(err) as progress:
        result = run_servers(options, plans, report, progress)
    if as_json:
        print_json(servers_to_json(result))
    else:
        print_servers(out, result)
    if result.interrupted:
        raise Interrupted(f"interrupted after {len(result.runs)} server(s); every server started was stopped")
    v = result.verdict
    if v is not None and v.slo_met is False:
        raise SloMissedError(v.line)
    if v is None or v.not_comparable:
        raise RunErrorsError("runs not comparable: " + "; ".join(v.not_comparable if v else ["no run"]))


def _verify_exit(result: VerifyResult) -> None:
    """The exit code CI gates on: the objective missed (7) first, then runs with errors (8)."""
    if result.slo_met is False and result.slo_line is not None:
        raise SloMissedError(result.slo_line)
    out_of_play = result.verdict.not_comparable if result.verdict else tuple(r.names for r in result.runs)
    if out_of_play:
        raise RunErrorsError("runs not comparable: " + "; ".join(out_of_play))
