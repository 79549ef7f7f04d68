"""`fastapi-tune export` and `import`: the probe's load as Locust or k6 scripts, and their results back."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import HELP_SETTINGS, PlainHelpGroup, err, flag, subcommand
from fastapi_tune.cli.options import parse_levels
from fastapi_tune.cli.probe import save_and_show
from fastapi_tune.core.errors import (
    BadInputError,
    UsageError,
)
from fastapi_tune.core.fileio import write_output
from fastapi_tune.discover.openapi import parse_header
from fastapi_tune.judge.classify import classify_report
from fastapi_tune.measure.import_load import import_k6
from fastapi_tune.measure.import_locust import import_locust
from fastapi_tune.measure.probe_options import ProbeOutcome
from fastapi_tune.measure.report import DEFAULT_REPORT, ProbeReport, load_report
from fastapi_tune.render.export_load import (
    parse_mix,
    parse_objective,
    render_k6,
    spec_from_report,
)
from fastapi_tune.render.locustfile import render_locust

_EXPORT_REPORT = typer.Option(
    "--report",
    help="The probe report whose endpoints and levels to reproduce (default: ./fastapi-tune-probe.json).",
)


export_app = typer.Typer(
    help="Write the probe's load as a Locust or k6 script, for load beyond one machine.",
    no_args_is_help=True,
    context_settings=HELP_SETTINGS,
    cls=PlainHelpGroup,
)


import_app = typer.Typer(
    help="Read Locust or k6 results back as a probe report that `recommend` plans from.",
    no_args_is_help=True,
    context_settings=HELP_SETTINGS,
    cls=PlainHelpGroup,
)


def _export(
    kind: str,
    report_path: Path | None,
    out_path: Path,
    mix: str | None,
    levels: str | None,
    seconds: float,
    together: bool,
    rate: float | None,
    slo: str | None,
    header: list[str] | None,
) -> None:
    report = load_report(report_path or DEFAULT_REPORT)
    if report is None:
        raise BadInputError(
            f"{report_path or DEFAULT_REPORT}: no probe report; run `fastapi-tune probe URL` first"
        )
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise UsageError("--rate: expected a positive number of requests per second")
    if not (math.isfinite(seconds) and 1 <= seconds <= 3600):
        raise UsageError("--seconds: expected seconds per step from 1 to 3600")
    spec = spec_from_report(
        report,
        parse_mix(mix) if mix else None,
        levels=parse_levels(levels),
        seconds=seconds,
        isolate=not together,
        rate=rate,
        objective=parse_objective(slo) if slo else None,
        header_names=[parse_header(h)[0] for h in header or ()],
    )
    text = render_locust(spec) if kind == "locust" else render_k6(spec)
    written = write_output(out_path, text, consent=True)
    saved = f" (previous version kept as {written.backup})" if written.backup else ""
    err.print(f"Wrote [bold]{out_path}[/]{saved}; how to run it is at its top.")


_ExportMix = Annotated[
    str | None, typer.Option("--mix", help="Route weights, e.g. 'GET /a=70,POST /b=30' (default: equal).")
]


_ExportLevels = Annotated[
    str | None,
    typer.Option("--levels", help="Concurrency ladder, e.g. 1,8,64 (default: the probe's levels)."),
]


_ExportSeconds = Annotated[
    float, typer.Option("--seconds", help="Seconds per ladder step (Locust: 20-30 s).")
]


_ExportTogether = Annotated[
    bool,
    flag("--together", help="Drive the routes mixed in every step (default: one route at a time)."),
]


_ExportRate = Annotated[
    float | None, typer.Option("--rate", help="An arrival rate (req/s) instead of a ladder; needs --slo.")
]


_ExportSlo = Annotated[
    str | None, typer.Option("--slo", help="The objective as thresholds, e.g. 'p99<300ms,errors<1%'.")
]


_ExportHeader = Annotated[
    list[str] | None,
    typer.Option(
        "-H",
        "--header",
        help="'Name: value': only the NAME goes in the file; the value is read from"
        " an environment variable at run time.",
    ),
]


_ExportOut = Annotated[Path, typer.Option("-o", "--out", help="Where to write the script.")]


@subcommand(export_app, "locust")
def export_locust(
    out_path: _ExportOut = Path("locustfile.py"),
    report_path: Annotated[Path | None, _EXPORT_REPORT] = None,
    mix: _ExportMix = None,
    levels: _ExportLevels = None,
    seconds: _ExportSeconds = 20.0,
    together: _ExportTogether = False,
    rate: _ExportRate = None,
    slo: _ExportSlo = None,
    header: _ExportHeader = None,
) -> None:
    """A locustfile that reproduces the probe (a LoadTestShape ladder, or a rate with its objective)."""
    _export("locust", report_path, out_path, mix, levels, seconds, together, rate, slo, header)


@subcommand(export_app, "k6")
def export_k6(
    out_path: _ExportOut = Path("load.js"),
    report_path: Annotated[Path | None, _EXPORT_REPORT] = None,
    mix: _ExportMix = None,
    levels: _ExportLevels = None,
    seconds: _ExportSeconds = 10.0,
    together: _ExportTogether = False,
    rate: _ExportRate = None,
    slo: _ExportSlo = None,
    header: _ExportHeader = None,
) -> None:
    """A k6 script that reproduces the probe (stages, or constant-arrival-rate with thresholds)."""
    _export("k6", report_path, out_path, mix, levels, seconds, together, rate, slo, header)


def _with_workers(report: ProbeReport, workers: int | None) -> ProbeReport:
    """--workers when given, else the count the script was exported with (the probe's)."""
    if workers is None:
        return report
    return replace(report, server=replace(report.server, workers=workers))


def _imported(report: ProbeReport, out_path: Path, as_json: bool) -> None:
    outcome = ProbeOutcome(report=classify_report(report))
    save_and_show(outcome, out_path, as_json)


_ImportOut = Annotated[Path, typer.Option("-o", "--out", help="Where the probe report is saved.")]


_ImportJson = Annotated[bool, flag("--json", help="Also print the report as JSON on stdout.")]


_ImportWorkers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Worker processes the measured server ran (for the knees); default: the probe's, as the"
        " exported script recorded it.",
    ),
]


@subcommand(import_app, "locust")
def import_locust_cmd(
    prefix: Annotated[Path, typer.Argument(help="The --csv PREFIX of the run (or one of its files).")],
    out_path: _ImportOut = DEFAULT_REPORT,
    workers: _ImportWorkers = None,
    as_json: _ImportJson = False,
) -> None:
    """Turn Locust's CSV history into a probe report: levels per route and user count, classified."""
    _imported(_with_workers(import_locust(prefix), workers), out_path, as_json)


@subcommand(import_app, "k6")
def import_k6_cmd(
    files: Annotated[list[Path], typer.Argument(help="`k6 run --out json=FILE` output (one per instance).")],
    out_path: _ImportOut = DEFAULT_REPORT,
    workers: _ImportWorkers = None,
    as_json: _ImportJson = False,
) -> None:
    """Turn k6's JSON output into a probe report: levels per route and stage, classified."""
    _imported(_with_workers(import_k6(*files), workers), out_path, as_json)
