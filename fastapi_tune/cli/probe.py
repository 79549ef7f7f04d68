"""`fastapi-tune probe URL`: how each route of a running app scales, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, err, flag, out, print_json, raise_outcome_error
from fastapi_tune.cli.options import NoOverload, Overload, Verbose, parse_levels
from fastapi_tune.cli.traffic import AccessLog, read_logs
from fastapi_tune.core.errors import (
    BadInputError,
    Interrupted,
    WedgedError,
)
from fastapi_tune.core.fileio import atomic_write, check_writable
from fastapi_tune.core.redact import redact_url
from fastapi_tune.core.rules import OVERLOAD_PER_WORKER
from fastapi_tune.flows.workflow import (
    probe_and_classify,
    read_traffic,
    save_report_somewhere,
)
from fastapi_tune.measure.host import (
    HostFacts,
    read_host,
)
from fastapi_tune.measure.probe_options import DEFAULT_MAX_CONCURRENCY, ProbeOptions, ProbeOutcome
from fastapi_tune.measure.report import ProbeReport, report_to_json
from fastapi_tune.measure.schedule import DEFAULT_BUDGET_S, ROUTE_S
from fastapi_tune.measure.traffic import TrafficProfile
from fastapi_tune.render.export_load import parse_mix
from fastapi_tune.render.html import render_html
from fastapi_tune.render.probe import LiveProgress, print_report


@command
def probe(  # long mostly in its signature: one typer parameter per option
    url: Annotated[str, typer.Argument(help="The running app, e.g. http://127.0.0.1:8000 (loopback only).")],
    endpoint: Annotated[
        list[str] | None,
        typer.Option("-e", "--endpoint", help="Probe exactly this 'METHOD /path' (repeatable); any method."),
    ] = None,
    openapi: Annotated[
        str | None, typer.Option(help="Where the OpenAPI document is (URL or path on the app).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip paths matching this glob, e.g. '/admin/*' (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "-H", "--header", help="'Name: value' sent with every request (repeatable); secrets are redacted."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", help="NAME=VALUE for a path or query parameter, e.g. --param item_id=42 (repeatable)."
        ),
    ] = None,
    body: Annotated[
        list[str] | None,
        typer.Option(
            "--body",
            help="'METHOD /path=@file.json' or inline JSON: the body for one operation (repeatable);"
            " otherwise one is generated from the document's schema.",
        ),
    ] = None,
    unsafe: Annotated[
        bool,
        flag(
            "--unsafe",
            help="Also drive POST, PUT, PATCH and DELETE from the document (each is sent thousands of"
            " times: only against data you can lose).",
        ),
    ] = False,
    no_preflight: Annotated[
        bool,
        flag("--no-preflight", help="Load every endpoint, even one whose first request fails."),
    ] = False,
    no_profile: Annotated[
        bool,
        flag(
            "--no-profile",
            help="Do not sample the server's stacks with py-spy (the line that limits a route).",
        ),
    ] = False,
    overload: Overload = OVERLOAD_PER_WORKER,
    no_overload: NoOverload = False,
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix",
            help="Traffic shares, e.g. 'GET /a=70,GET /b=30': the routes that carry the traffic are"
            " measured first and get their full ladder sooner (default: equal; --access-log wins).",
        ),
    ] = None,
    levels: Annotated[
        str | None,
        typer.Option(
            help="Fixed concurrency levels for every route, e.g. 1,8,64 (no triage, no adaptive stop)."
        ),
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            help=f"Highest level of the ladder (default: {DEFAULT_MAX_CONCURRENCY}, more if still flat)."
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Counted seconds per level (default: adaptive, 0.5 s or more).")
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help=f"Time budget for the whole probe (default: {DEFAULT_BUDGET_S:.0f} s, or {ROUTE_S:g} s per"
            f" route past {DEFAULT_BUDGET_S / ROUTE_S:.0f} routes).",
            show_default=False,
        ),
    ] = None,
    max_requests: Annotated[int, typer.Option(help="Request budget for the whole probe.")] = 500_000,
    timeout: Annotated[float, typer.Option(help="Seconds before a request counts as a timeout.")] = 10.0,
    insecure: Annotated[bool, flag("--insecure", help="Accept a self-signed TLS certificate.")] = False,
    allow_remote: Annotated[
        bool,
        flag("--allow-remote", help="Allow a target that is not on this machine (a server you own)."),
    ] = False,
    out_path: Annotated[Path, typer.Option("-o", "--out", help="Where the report is saved (always).")] = Path(
        "fastapi-tune-probe.json"
    ),
    as_json: Annotated[bool, flag("--json", help="Also print the report as JSON on stdout.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts) here.")
    ] = None,
    access_log: AccessLog = None,
    verbose: Verbose = False,
) -> None:
    """Measure how each endpoint of a running app scales, and classify it.

    Finds the endpoints in the app's OpenAPI document (or takes them from -e), triages every one
    with three short closed-loop levels (c=1, 4 per worker with its stacks sampled, past the
    thread limiter), then gives the budget left to full ladders (1, 2, 4 ... 128) for the routes
    that need them most, and says up front how the time will go. It watches the server's CPU and
    memory when it runs on this machine, and tells each endpoint's class: io-bound, cpu-bound,
    loop-blocking, threadpool-bound (or serialized / inconclusive), with the evidence, how sure it
    is, and the fix. Then it loads the whole mix far past the knee (--overload, 64 in flight per
    worker) and says whether the app holds, degrades, collapses or wedges, why, and where (exit 11
    when it left the server unable to answer: restart it). The report is saved to --out for
    `fastapi-tune recommend`.
    """
    options = ProbeOptions(
        url=url,
        openapi=openapi,
        endpoints=tuple(endpoint or ()),
        excludes=tuple(exclude or ()),
        headers=tuple(header or ()),
        params=tuple(param or ()),
        bodies=tuple(body or ()),
        unsafe=unsafe,
        preflight=not no_preflight,
        profile=not no_profile,
        overload=None if no_overload else overload,
        levels=parse_levels(levels),
        max_concurrency=max_concurrency,
        duration_s=duration,
        max_seconds=max_seconds,
        max_requests=max_requests,
        timeout_s=timeout,
        verify_tls=not insecure,
        allow_remote=allow_remote,
        route_weights=parse_mix(mix) if mix else None,
    )
    check_writable(out_path, "--out")  # never measure into a path that cannot be written
    if html is not None:
        check_writable(html, "--html")
    traffic = read_logs(lambda p: read_traffic(options, access_log, p)) if access_log else None
    _probe_and_save(options, read_host(), out_path, as_json, html, traffic, verbose)


def _probe_and_save(
    options: ProbeOptions,
    facts: HostFacts,
    out_path: Path,
    as_json: bool,
    html: Path | None = None,
    traffic: TrafficProfile | None = None,
    verbose: bool = False,
) -> ProbeReport:
    """Run a probe with live progress, save the report always, show it, and raise on a bad end."""
    with LiveProgress(err) as progress:
        outcome = probe_and_classify(options, facts, progress, traffic)
    return save_and_show(outcome, out_path, as_json, html, verbose)


def save_and_show(
    outcome: ProbeOutcome, out_path: Path, as_json: bool, html: Path | None = None, verbose: bool = False
) -> ProbeReport:
    """Save the report always, show it, and raise for a dead server or an interruption."""
    report = outcome.report
    saved, failure = save_report_somewhere(report, out_path)
    if html is not None and failure is None:
        atomic_write(html, render_html(report_to_json(report)))
        err.print(f"HTML report saved to [bold]{html}[/]")
    if as_json:
        print_json(report_to_json(report))
    else:
        print_report(out, report, verbose)
    if failure is not None:  # measured, then the disk filled: say where the results are
        where = f"the report was saved to {saved} instead" if saved else "the report is shown above only"
        raise BadInputError(f"{failure}; {where}")
    err.print(f"Report saved to [bold]{out_path}[/]")
    if outcome.error is not None:
        raise_outcome_error(outcome.error, out_path)
    if report.interrupted:
        levels_kept = sum(len(e.levels) for e in report.endpoints)
        raise Interrupted(f"interrupted: {levels_kept} level(s) measured before Ctrl-C are in {out_path}")
    if report.overload is not None and report.overload.wedged_left:
        raise WedgedError(
            f"the overload step wedged the server at {redact_url(report.target)}: it still does not answer;"
            f" restart it. Why it fell over, and the cap that keeps it up, are in {out_path}"
        )
    return report
