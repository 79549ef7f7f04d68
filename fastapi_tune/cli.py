"""The command line: each command reads options, calls one function, hands the result to a renderer."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from fastapi_tune import __version__
from fastapi_tune.errors import ExitCode, FastapiTuneError
from fastapi_tune.host import host_to_json, read_host
from fastapi_tune.render_host import print_host

app = typer.Typer(
    name="fastapi-tune",
    help=(
        "Measure a FastAPI app, then size its gunicorn/uvicorn deployment from the evidence.\n\n"
        "The usual order: `host` (what this machine allows), `probe URL` (how each endpoint scales),"
        " `recommend` (a gunicorn command and gunicorn.conf.py), `verify` (prove it against the"
        " alternatives). `demo` runs the whole loop on a bundled sample app."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Results go to stdout; progress, warnings and errors go to stderr, so `--json | jq` works.
out = Console()
err = Console(stderr=True, soft_wrap=True)

_state: dict[str, bool] = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"fastapi-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


def print_json(data: Any) -> None:
    """One JSON document on stdout and nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


@app.command()
def host(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")] = False,
) -> None:
    """Show the CPUs and memory a server on this machine can really use.

    Reads cgroup v1/v2 CPU quota, cpuset and memory limit (which os.cpu_count(), psutil and
    gunicorn ignore) and the CPU affinity. Override with FASTAPI_TUNE_CPUS=1.5 or
    FASTAPI_TUNE_MEMORY=512M when you know better.
    """
    facts = read_host()
    if as_json:
        print_json(host_to_json(facts))
    else:
        print_host(out, facts)


def main() -> None:
    """Entry point: run the app, turning our errors into one red line and an exit code.

    typer (its vendored click) handles usage errors itself (exit 2) and lets other
    exceptions through; ours carry the exit code the README lists.
    """
    try:
        app()
    except FastapiTuneError as e:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(int(e.exit_code))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as e:  # anything else is a bug: one line, the traceback with --debug
        if _state["debug"]:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e} (run with --debug for the traceback)",
            highlight=False,
        )
        sys.exit(int(ExitCode.ERROR))
