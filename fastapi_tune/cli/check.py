"""`fastapi-tune check APP --baseline FILE`: catch a regression before it ships (CI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, err, flag, out, print_json
from fastapi_tune.cli.ci import Junit, raise_for, write_ci_outputs
from fastapi_tune.cli.options import (
    AppDir,
    AppPython,
    Endpoints,
    Excludes,
    Headers,
    NoOverload,
    Overload,
    Params,
    parse_levels,
)
from fastapi_tune.core.errors import Interrupted
from fastapi_tune.core.fileio import check_writable
from fastapi_tune.core.rules import OVERLOAD_PER_WORKER
from fastapi_tune.flows.check import THIS_RUN, CheckOptions, CheckResult, run_check
from fastapi_tune.judge.compare import all_new
from fastapi_tune.measure.host import read_host
from fastapi_tune.measure.probe_options import ProbeOptions
from fastapi_tune.render.compare import comparison_to_json, print_baseline_saved, print_comparison
from fastapi_tune.render.tune import TuneProgress

# A CI job's budget for a small app: the probe's ladder for a handful of routes, plus the app's start.
CHECK_MAX_SECONDS = 60.0


@command
def check(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[str, typer.Argument(help="Your app, as module:attribute (e.g. main:app).")],
    baseline: Annotated[
        Path,
        typer.Option(
            "--baseline",
            "-b",
            help="The baseline probe report (commit it). Missing: this run is saved there and passes.",
        ),
    ],
    update: Annotated[
        bool, flag("--update", help="Compare, then replace the baseline with this run (exit 0).")
    ] = False,
    python: AppPython = sys.executable,
    app_dir: AppDir = Path(),
    endpoint: Endpoints = None,
    exclude: Excludes = None,
    header: Headers = None,
    param: Params = None,
    levels: Annotated[
        str | None, typer.Option(help="Fixed concurrency levels, e.g. 1,8,64 (default: the baseline's).")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="Highest level of the ladder (default: the baseline's).")
    ] = None,
    max_seconds: Annotated[
        float, typer.Option(help="Time budget for the probe (the app's start comes on top).")
    ] = CHECK_MAX_SECONDS,
    no_profile: Annotated[
        bool, flag("--no-profile", help="Do not sample stacks (then no file:line in annotations).")
    ] = False,
    overload: Overload = OVERLOAD_PER_WORKER,
    no_overload: NoOverload = False,
    out_path: Annotated[
        Path | None, typer.Option("-o", "--out", help="Also save this run's report here (for `compare`).")
    ] = None,
    junit: Junit = None,
    as_json: Annotated[bool, flag("--json", help="Print the comparison as JSON on stdout.")] = False,
) -> None:
    """Probe the app and judge it against a saved baseline: exit 9 when a route regressed.

    Serves APP like `tune` (one uvicorn worker from --python, importing from --app-dir), probes it
    with the baseline's ladder, and compares route by route: a class that got worse (io-bound ->
    loop-blocking, ...), or CPU per request, p50 or peak throughput worse beyond the measured noise.
    With no baseline yet (or --update) the run is saved as the baseline. On GitHub Actions it
    annotates the app line the stacks name and writes the job summary; --junit for other CIs.
    """
    written = baseline if update or not baseline.exists() else None
    for path, name in ((out_path, "--out"), (junit, "--junit"), (written, "--baseline")):
        if path is not None:
            check_writable(path, name)  # never measure into a path that cannot be written
    options = CheckOptions(
        app=app_module,
        baseline=baseline,
        probe=ProbeOptions(
            url="",
            endpoints=tuple(endpoint or ()),
            excludes=tuple(exclude or ()),
            headers=tuple(header or ()),
            params=tuple(param or ()),
            levels=parse_levels(levels),
            max_concurrency=max_concurrency,
            max_seconds=max_seconds,
            profile=not no_profile,
            overload=None if no_overload else overload,
        ),
        python=python,
        app_dir=app_dir,
        update=update,
        out=out_path,
    )
    result = run_check(options, read_host(), TuneProgress(err))
    _show_check(result, options, junit, as_json)


def _show_check(result: CheckResult, options: CheckOptions, junit: Path | None, as_json: bool) -> None:
    """Print the comparison (or the new baseline), write the CI outputs, raise for the exit code."""
    outcome, baseline = result.served.outcome, options.baseline
    if outcome.error is not None:
        raise type(outcome.error)(f"{outcome.error}; nothing was compared (the app was stopped)")
    if result.report.interrupted:
        raise Interrupted("interrupted: nothing was compared; the app was stopped")
    c = result.comparison
    if as_json:
        print_json(
            {
                "app": options.app,
                "baseline": str(baseline),
                "baseline_saved": result.saved_baseline,
                "not_compared": result.not_compared,
                "comparison": None if c is None else comparison_to_json(c),
            }
        )
    elif c is not None:
        print_comparison(out, c, str(baseline), THIS_RUN)
    if result.not_compared:
        err.print(f"[yellow]not compared:[/] {result.not_compared}", highlight=False)
    if result.saved_baseline:
        if not as_json:
            print_baseline_saved(out, result.report, str(baseline), replaced=result.baseline is not None)
        else:
            err.print(f"Baseline saved to [bold]{baseline}[/]")
    if c is None and result.baseline is None:
        # A first run: every route is new, which CI can still show (and the JUnit file exists).
        c = all_new(result.report)
        if c.busy:
            err.print(
                f"[yellow]note:[/] {c.busy}. This baseline's classes may be off: take it again on a quieter"
                " runner (--update); until then class changes against it are judged only where the stacks"
                " show them",
                highlight=False,
            )
    if c is None:
        return
    write_ci_outputs(c, junit, f"fastapi-tune check {options.app}", options.app_dir, as_json, os.environ)
    if not options.update:
        raise_for(c)
