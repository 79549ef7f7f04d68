"""The typer app, its consoles, and the wrapper that turns each error into one red line and an exit code."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, ParamSpec

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from fastapi_tune import __version__
from fastapi_tune.core.errors import (
    BadInputError,
    ExitCode,
    FastapiTuneError,
    TargetUnreachableError,
)
from fastapi_tune.core.redact import option_secrets, redact_secrets_in


def _plain(option: Any) -> Any:
    if option is not None:
        option.metavar = ""  # as flag() does for ours: typer would show `<bool>` beside -h/--help
    return option


class PlainHelpCommand(TyperCommand):
    """A command whose -h/--help reads as the plain flag it is."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain(super().get_help_option(ctx))


class PlainHelpGroup(TyperGroup):
    """A command group whose -h/--help reads as the plain flag it is."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain(super().get_help_option(ctx))


# Every command and group takes -h as well as --help (click's default is --help alone).
HELP_SETTINGS: Final = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    cls=PlainHelpGroup,
    name="fastapi-tune",
    help=(
        "Measure a FastAPI app, then size its gunicorn/uvicorn deployment from the evidence.\n\n"
        "The usual order: `host` (what this machine allows), `probe URL` (how each endpoint scales),"
        " `recommend` (a gunicorn command and gunicorn.conf.py), `verify` (prove it against the"
        " alternatives). `demo` runs the whole loop on a bundled sample app; `check` judges the app"
        " against a saved baseline in CI."
    ),
    no_args_is_help=True,
    add_completion=False,
    context_settings=HELP_SETTINGS,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# Results go to stdout; progress, warnings and errors go to stderr, so `--json | jq` works.
def _width() -> int | None:
    """Piped output is read later, in wider windows than rich's 80-column fallback: 120 unless COLUMNS."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 120


out = Console(width=_width())


err = Console(stderr=True, soft_wrap=True)


state: dict[str, bool] = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"fastapi-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, flag("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, flag("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    state["debug"] = debug


P = ParamSpec("P")


def flag(*names: str, **kwargs: Any) -> Any:
    """A boolean option shown as a plain flag (typer would print `<bool>`, inviting `--json true`)."""
    return typer.Option(*names, metavar="", **kwargs)


def _guarded(f: Callable[P, None]) -> Callable[P, None]:
    """`f` with its errors turned into one red line and the README's exit code.

    Done per command rather than only in main() so that in-process runs (typer's CliRunner,
    the tests) see the same exit codes as the installed script.
    """

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        secrets = option_secrets(
            kwargs.get("header") or (),  # type: ignore[arg-type]
            kwargs.get("param") or (),  # type: ignore[arg-type]
            kwargs.get("endpoint") or (),  # type: ignore[arg-type]
        )
        try:
            f(*args, **kwargs)
        except FastapiTuneError as e:
            raise typer.Exit(report_error(e, secrets)) from None
        except OSError as e:
            if e.filename is None:
                raise  # not about a file: a bug, shown as an internal error
            failed = BadInputError(f"{e.filename}: {e.strerror or e}")
            raise typer.Exit(report_error(failed, secrets)) from None
        except (typer.Abort, KeyboardInterrupt):
            # Ctrl-C at a prompt (click says "Aborted." and exits 1) or anywhere else: exit 130.
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


def command(f: Callable[P, None]) -> Callable[P, None]:
    """A top-level command (errors handled as _guarded says); cli.app registers it, in --help's order."""
    return _guarded(f)


def subcommand(group: typer.Typer, name: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Register `name` under a command group such as `export` (errors handled as _guarded says)."""

    def register(f: Callable[P, None]) -> Callable[P, None]:
        wrapper = _guarded(f)
        group.command(name, cls=PlainHelpCommand)(wrapper)
        return wrapper

    return register


def report_error(e: FastapiTuneError, secrets: Sequence[str] = ()) -> int:
    """One red line for an error the user is meant to read (re-raised with --debug); its exit code.

    The text passes through redaction: it may quote a URL with a password, a server's output,
    or a value the user passed with -H.
    """
    if state["debug"]:
        raise e
    err.print(f"[bold red]error:[/] {escape(redact_secrets_in(str(e), secrets))}", highlight=False)
    return int(e.exit_code)


def raise_outcome_error(error: FastapiTuneError, report_path: Path) -> None:
    """A probe's ending error, raised once its report is saved, saying where that report is."""
    if isinstance(error, TargetUnreachableError):
        raise type(error)(f"{error}; the levels measured before are in {report_path}")
    raise type(error)(f"{error}; every route's reason is in {report_path}")


def print_json(data: Any) -> None:
    """One JSON document on stdout and nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()
