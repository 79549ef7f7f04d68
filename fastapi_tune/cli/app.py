"""The command line: each command reads options, calls one function, hands the result to a renderer.

One module per command beside this one; they are registered here, in the order `--help` lists them.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from fastapi_tune.cli import (
    check,
    compare,
    demo,
    host,
    loadtools,
    probe,
    recommend,
    report,
    traffic,
    tune,
    verify,
)
from fastapi_tune.cli.base import PlainHelpCommand, app, err, report_error, state
from fastapi_tune.core.errors import ExitCode, FastapiTuneError
from fastapi_tune.core.redact import redact_text

__all__ = ["app", "main"]

for _command in (
    host.host,
    probe.probe,
    recommend.recommend,
    traffic.traffic,
    demo.demo,
    tune.tune,
    verify.verify,
    check.check,
    compare.compare,
    report.report,
):
    app.command(cls=PlainHelpCommand)(_command)
app.add_typer(loadtools.export_app, name="export")
app.add_typer(loadtools.import_app, name="import")


def main() -> None:
    """Entry point: run the app, turning our errors into one red line and an exit code.

    typer (its vendored click) handles usage errors itself (exit 2) and lets other
    exceptions through; ours carry the exit code the README lists.
    """
    try:
        app()
    except FastapiTuneError as e:
        sys.exit(report_error(e))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as e:  # anything else is a bug: one line, the traceback with --debug
        if state["debug"]:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {escape(redact_text(str(e)))}"
            " (run with --debug for the traceback)",
            highlight=False,
        )
        sys.exit(int(ExitCode.ERROR))
