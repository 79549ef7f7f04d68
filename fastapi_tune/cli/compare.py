"""`fastapi-tune compare BASE.json NEW.json`: the judgement `check` makes, over two saved reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, flag, out, print_json
from fastapi_tune.cli.ci import Junit, raise_for, write_ci_outputs
from fastapi_tune.core.fileio import check_writable
from fastapi_tune.flows.check import compare_files
from fastapi_tune.render.compare import comparison_to_json, print_comparison


@command
def compare(
    base: Annotated[Path, typer.Argument(help="The baseline probe report.")],
    new: Annotated[Path, typer.Argument(help="The probe report to judge against it.")],
    app_dir: Annotated[
        Path,
        typer.Option(
            help="The app's directory when it was probed: where annotated files are (default: here)."
        ),
    ] = Path(),
    junit: Junit = None,
    as_json: Annotated[bool, flag("--json", help="Print the comparison as JSON on stdout.")] = False,
) -> None:
    """Judge NEW against BASE route by route, as `check` does: exit 9 when a route regressed.

    Per route: unchanged, improved, regressed, new, gone or inconclusive, with the numbers and the
    noise each was judged against. Reports of two different apps are refused (exit 3).
    """
    if junit is not None:
        check_writable(junit, "--junit")
    c = compare_files(base, new)
    if as_json:
        print_json(comparison_to_json(c))
    else:
        print_comparison(out, c, str(base), str(new))
    write_ci_outputs(c, junit, f"fastapi-tune compare {new.name}", app_dir, as_json, os.environ)
    raise_for(c)
