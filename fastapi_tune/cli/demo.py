"""`fastapi-tune demo`: the whole loop on the bundled sample app."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, err, flag, out, print_json
from fastapi_tune.cli.options import Verbose
from fastapi_tune.cli.probe import save_and_show
from fastapi_tune.cli.recommend import show_and_write
from fastapi_tune.core import checks
from fastapi_tune.core.errors import (
    BadInputError,
)
from fastapi_tune.core.fileio import check_writable, write_output
from fastapi_tune.flows.demo import SAMPLE_APP
from fastapi_tune.flows.workflow import (
    run_demo,
    save_report,
)
from fastapi_tune.measure.host import (
    read_host,
)
from fastapi_tune.measure.report import report_to_json
from fastapi_tune.render.admission import admission_files
from fastapi_tune.render.conf import render_gunicorn_conf
from fastapi_tune.render.plan import plan_to_json
from fastapi_tune.render.probe import LiveProgress


@command
def demo(
    output: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Directory for the probe report and gunicorn.conf.py (default: a temp dir)."
        ),
    ] = None,
    max_seconds: Annotated[float, typer.Option(help="Time budget for the probe.")] = 45.0,
    as_json: Annotated[
        bool, flag("--json", help="Print the probe report and the plan as one JSON object on stdout.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts) here.")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run the whole loop on a bundled sample app: start it, probe, classify, recommend, stop it.

    The sample app (fastapi_tune.sample_app) has one route of each kind: async I/O, a `def` route
    doing blocking I/O, a blocking call inside `async def`, and CPU-heavy work. It is served by one
    uvicorn worker on a free loopback port, and stopped whatever happens (Ctrl-C included).
    """
    max_seconds = checks.number(max_seconds, "--max-seconds", checks.MIN_BUDGET_S, checks.MAX_SECONDS)
    facts = read_host()
    directory = output or Path(tempfile.mkdtemp(prefix="fastapi-tune-demo-"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"--dir {directory}: cannot create the directory ({e.strerror or e})") from None
    report_path = directory / "fastapi-tune-probe.json"
    check_writable(report_path, "--dir")
    check_writable(directory / "gunicorn.conf.py", "--dir")
    err.print(f"[bold]Sample app[/] {SAMPLE_APP} under 1 uvicorn worker on a free loopback port")
    with LiveProgress(err) as progress:
        result = run_demo(facts, max_seconds, progress)
    conf = directory / "gunicorn.conf.py"
    if as_json:
        save_report(result.outcome.report, report_path)
        print_json({"report": report_to_json(result.outcome.report), "plan": plan_to_json(result.plan)})
        write_output(conf, render_gunicorn_conf(result.plan), consent=True)
        for path, module in admission_files(result.plan, conf):
            write_output(path, module, consent=True)
    else:
        save_and_show(result.outcome, report_path, False, html, verbose)
        out.rule("Recommendation")
        show_and_write(result.plan, conf, consent=True, ask=False, as_json=False)
    err.print(f"Demo files are in [bold]{directory}[/]. Prove the recommendation against the alternatives:")
    err.print(f"  fastapi-tune verify {SAMPLE_APP} -c {conf} --probe {report_path} --sweep", soft_wrap=True)
