"""`fastapi-tune report FILE`: a saved report shown again, or as an offline HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.cli.base import command, err
from fastapi_tune.cli.options import read_json_object
from fastapi_tune.core.fileio import atomic_write
from fastapi_tune.render.html import render_html


@command
def report(
    path: Annotated[Path, typer.Argument(help="A saved probe report (fastapi-tune-probe.json).")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the HTML report.")],
    plan: Annotated[Path | None, typer.Option("--plan", help="`recommend --json` output to include.")] = None,
    verify_json: Annotated[
        Path | None, typer.Option("--verify", help="`verify --json` output to include.")
    ] = None,
) -> None:
    """Render a saved probe report (and optionally a plan and a verify run) as one HTML page.

    The page is self-contained: inline SVG charts, no scripts, nothing fetched when it opens.
    """
    data = read_json_object(path)
    plan_data = read_json_object(plan) if plan else None
    verify_data = read_json_object(verify_json) if verify_json else None
    atomic_write(html, render_html(data, plan_data, verify_data))
    err.print(f"HTML report saved to [bold]{html}[/]")
