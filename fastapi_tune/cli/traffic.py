"""`fastapi-tune traffic`, and the --access-log option that probe, recommend and tune share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fastapi_tune.cli.base import command, err, flag, out, print_json
from fastapi_tune.cli.options import read_json_object
from fastapi_tune.core.errors import UsageError
from fastapi_tune.discover.openapi import document_routes
from fastapi_tune.measure.accesslog import Progress, read_access_logs
from fastapi_tune.measure.report import ProbeReport, load_report, report_routes
from fastapi_tune.measure.traffic import TrafficProfile, traffic_to_json
from fastapi_tune.plan.traffic import TrafficDefaults
from fastapi_tune.render.traffic import print_traffic, traffic_summary

_LOG_HELP = (
    "Production access log (nginx/gunicorn combined, uvicorn, JSON lines; .gz read directly; - for stdin);"
    " repeatable: several servers' logs add up."
)
AccessLog = Annotated[
    list[str] | None,
    typer.Option(
        "--access-log",
        metavar="FILE",
        help=_LOG_HELP + " Its routes' shares and its busiest 60 s guide the run.",
    ),
]


def read_logs(read: Callable[[Progress], TrafficProfile], say: bool = True) -> TrafficProfile:
    """Read access logs with a progress line on stderr, then say what was found (one line)."""
    with err.status("Reading the access logs") as status:
        traffic = read(lambda n: status.update(f"Reading the access logs: {n:,} lines"))
    if say:
        err.print(escape(traffic_summary(traffic)), highlight=False)
    for note in traffic.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    return traffic


def planning_traffic(report: ProbeReport | None, access_log: list[str] | None) -> TrafficProfile | None:
    """The traffic a plan is for: --access-log matched to the report's routes, else the report's own."""
    if not access_log:
        return None if report is None else report.traffic
    if report is None:
        raise UsageError(
            "--access-log needs the app's routes to match requests to: probe the app first"
            " (`fastapi-tune probe URL`), or pass --probe REPORT"
        )
    return read_logs(lambda p: read_access_logs(access_log, report_routes(report), p))


def say_defaults(defaults: TrafficDefaults) -> None:
    """The one line saying what the logs set in the plan, and what they could not."""
    err.print(escape(defaults.line), highlight=False)
    for note in defaults.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


@command
def traffic(
    access_log: Annotated[list[str], typer.Option("--access-log", metavar="FILE", help=_LOG_HELP)],
    probe_path: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Probe report whose routes to match (default: ./fastapi-tune-probe.json)."
        ),
    ] = None,
    openapi: Annotated[
        Path | None,
        typer.Option("--openapi", help="The app's OpenAPI document as a file (instead of a probe report)."),
    ] = None,
    as_json: Annotated[bool, flag("--json", help="Print the traffic profile as JSON on stdout.")] = False,
) -> None:
    """What production traffic looks like, from access logs: each route's share, the peak rate, statuses.

    Every request is matched to the app's path templates (from --openapi, or the probe report):
    /orders/123 -> GET /orders/{oid}, the most specific template winning. Unmatched paths are counted,
    never guessed. The peak is the highest mean rate over any 60 s. `recommend --access-log` plans
    for this mix and peak; `probe --access-log` measures the busiest routes first.
    """
    if openapi is not None:
        routes = document_routes(read_json_object(openapi), str(openapi))
    else:
        report = load_report(probe_path)
        if report is None:
            raise UsageError(
                "traffic: the app's routes are needed to match requests to: pass --openapi FILE"
                " (the app's /openapi.json) or --probe REPORT (run `fastapi-tune probe URL` first)"
            )
        routes = report_routes(report)
    profile = read_logs(lambda p: read_access_logs(access_log, routes, p), say=as_json)
    if as_json:
        print_json(traffic_to_json(profile))
    else:
        print_traffic(out, profile)
