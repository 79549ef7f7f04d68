"""What `check` and `compare` hand to CI besides their output: a JUnit file, GitHub annotations and
the job's Markdown summary, and the exit code the comparison earns. Shared by the two commands."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from fastapi_tune.core.errors import BadInputError, NotJudgedError, RegressedError
from fastapi_tune.core.fileio import atomic_write
from fastapi_tune.judge.compare import BaselineComparison, CompareOutcome, RouteStatus
from fastapi_tune.render.compare import Locate, github_annotations, junit_xml, markdown_summary

Junit = Annotated[
    Path | None,
    typer.Option(
        "--junit", help="Also write JUnit XML here: one testcase per route, a failure per regression."
    ),
]


def locator(app_dir: Path, env: Mapping[str, str]) -> Locate:
    """Map a file the stacks named (relative to the app's directory) to its path in the repository
    GitHub annotates ($GITHUB_WORKSPACE, else here); None for a file outside it."""
    root = Path(env.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()
    base = app_dir.resolve()

    def locate(file: str) -> str | None:
        path = (base / file).resolve()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else None

    return locate


def write_ci_outputs(
    c: BaselineComparison,
    junit: Path | None,
    suite: str,
    app_dir: Path,
    as_json: bool,
    env: Mapping[str, str],
) -> None:
    """JUnit to --junit; on GitHub Actions annotations (on stderr when stdout carries --json: the runner
    reads workflow commands from both) and the Markdown summary appended to $GITHUB_STEP_SUMMARY."""
    if junit is not None:
        atomic_write(junit, junit_xml(c, suite))
    if env.get("GITHUB_ACTIONS") == "true":
        stream = sys.stderr if as_json else sys.stdout
        for line in github_annotations(c, locator(app_dir, env)):
            stream.write(line + "\n")
        stream.flush()
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(markdown_summary(c, suite) + "\n")
        except OSError as e:
            raise BadInputError(
                f"$GITHUB_STEP_SUMMARY {summary}: cannot append to it ({e.strerror or e})"
            ) from None


def raise_for(c: BaselineComparison) -> None:
    """Exit 9 naming the regressed routes, 10 when nothing could be judged, else return (exit 0)."""
    if c.outcome is CompareOutcome.REGRESSED:
        names = [r.key for r in c.routes if r.status is RouteStatus.REGRESSED]
        raise RegressedError(f"{len(names)} route(s) regressed against the baseline: {', '.join(names)}")
    if c.outcome is CompareOutcome.NOT_JUDGED:
        raise NotJudgedError(
            "no route could be judged: the runner was too busy (see the note above); not a regression,"
            " run it again on a quieter runner"
        )
