"""Show a `tune` run: its progress on stderr, then the report, the plan, the files and the verdict."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from fastapi_tune.probe import ProbeEvents
from fastapi_tune.render_plan import plan_to_json, print_plan
from fastapi_tune.render_probe import LiveProgress, print_report
from fastapi_tune.render_verify import VerifyProgress, print_verify, verify_to_json
from fastapi_tune.report import report_to_json
from fastapi_tune.verify import VerifyEvents
from fastapi_tune.workflow import TuneResult


class TuneProgress:
    """TuneEvents on stderr: one line per step, the probe's and verify's own progress displays."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, text: str) -> None:
        self.console.print(f"[bold]{escape(text)}[/]", highlight=False)

    @contextmanager
    def probing(self) -> Iterator[ProbeEvents]:
        with LiveProgress(self.console) as progress:
            yield progress

    @contextmanager
    def verifying(self) -> Iterator[VerifyEvents]:
        with VerifyProgress(self.console) as progress:
            yield progress


def print_files(console: Console, result: TuneResult) -> None:
    """Which files were written, replaced (with the backup's name) or already up to date."""
    for w in result.written:
        if w.unchanged:
            console.print(f"  {escape(str(w.path))}: already up to date")
        elif w.backup is not None:
            console.print(f"  {escape(str(w.path))}: replaced (previous kept as {escape(str(w.backup))})")
        else:
            console.print(f"  {escape(str(w.path))}: written")


def print_tune(out: Console, result: TuneResult) -> None:
    """The probe report, the plan and, after --verify, the comparison."""
    print_report(out, result.outcome.report)
    if result.plan is None:
        return
    out.rule("Recommendation")
    print_plan(out, result.plan)
    if result.verify is not None:
        out.rule("Verification")
        print_verify(out, result.verify)


def tune_to_json(result: TuneResult) -> dict[str, Any]:
    """The whole run as one JSON object: report, plan, files and verify (null when not run)."""
    kube = result.deploy.kubernetes if result.deploy is not None else None
    return {
        "app_env": {
            "python": result.app_env.python,
            "python_version": result.app_env.python_version,
            "gunicorn": result.app_env.gunicorn,
            "uvicorn": result.app_env.uvicorn,
            "uvicorn_worker": result.app_env.uvicorn_worker,
            "fastapi": result.app_env.fastapi,
            "fastapi_cli": result.app_env.fastapi_cli,
        },
        "report": report_to_json(result.outcome.report),
        "plan": plan_to_json(result.plan) if result.plan is not None else None,
        "files": [
            {"path": str(w.path), "backup": str(w.backup) if w.backup else None, "unchanged": w.unchanged}
            for w in result.written
        ],
        "deploy": None
        if result.deploy is None
        else {
            "name": result.deploy.name,
            "health_path": result.deploy.health.path,
            "replicas": kube.replicas if kube is not None else None,
        },
        "verify": verify_to_json(result.verify) if result.verify is not None else None,
    }
