"""Show a `tune` run: its progress on stderr, then the report, the plan, the files and the verdict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from fastapi_tune.core.fileio import Written
from fastapi_tune.measure.appenv import AppEnv
from fastapi_tune.measure.probe_options import ProbeEvents
from fastapi_tune.measure.report import ProbeReport, report_to_json
from fastapi_tune.plan.deploy import DeploySpec
from fastapi_tune.plan.model import Plan
from fastapi_tune.render.plan import plan_to_json, print_plan
from fastapi_tune.render.probe import LiveProgress, print_report
from fastapi_tune.render.verify import VerifyProgress, print_verify, verify_to_json
from fastapi_tune.verify.run import VerifyEvents, VerifyResult


class TuneProgress:
    """TuneEvents on stderr: one line per step, the probe's and verify's own progress displays."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose

    def step(self, text: str) -> None:
        self.console.print(f"[bold]{escape(text)}[/]", highlight=False)

    @contextmanager
    def probing(self) -> Iterator[ProbeEvents]:
        with LiveProgress(self.console) as progress:
            yield progress

    @contextmanager
    def verifying(self) -> Iterator[VerifyEvents]:
        with VerifyProgress(self.console, self.verbose) as progress:
            yield progress


def print_files(console: Console, written: Sequence[Written]) -> None:
    """Which files were written, replaced (with the backup's name) or already up to date."""
    for w in written:
        if w.unchanged:
            console.print(f"  {escape(str(w.path))}: already up to date")
        elif w.backup is not None:
            console.print(f"  {escape(str(w.path))}: replaced (previous kept as {escape(str(w.backup))})")
        else:
            console.print(f"  {escape(str(w.path))}: written")


def print_tune(
    out: Console, report: ProbeReport, plan: Plan | None, verified: VerifyResult | None, verbose: bool = False
) -> None:
    """The probe report, the plan and, after --verify, the comparison (`verbose`: every panel in full)."""
    print_report(out, report, verbose)
    if plan is None:
        return
    out.rule("Recommendation")
    print_plan(out, plan)
    if verified is not None:
        out.rule("Verification")
        print_verify(out, verified, verbose)


def tune_to_json(  # one argument per part of the run: this renderer sees no flow type
    app_env: AppEnv,
    report: ProbeReport,
    plan: Plan | None,
    written: Sequence[Written],
    deploy: DeploySpec | None,
    verified: VerifyResult | None,
) -> dict[str, Any]:
    """The whole run as one JSON object: report, plan, files and verify (null when not run)."""
    kube = deploy.kubernetes if deploy is not None else None
    return {
        "app_env": {
            "python": app_env.python,
            "python_version": app_env.python_version,
            "gunicorn": app_env.gunicorn,
            "uvicorn": app_env.uvicorn,
            "uvicorn_worker": app_env.uvicorn_worker,
            "fastapi": app_env.fastapi,
            "fastapi_cli": app_env.fastapi_cli,
        },
        "report": report_to_json(report),
        "plan": plan_to_json(plan) if plan is not None else None,
        "files": [
            {"path": str(w.path), "backup": str(w.backup) if w.backup else None, "unchanged": w.unchanged}
            for w in written
        ],
        "deploy": None
        if deploy is None
        else {
            "name": deploy.name,
            "health_path": deploy.health.path,
            "replicas": kube.replicas if kube is not None else None,
        },
        "verify": verify_to_json(verified) if verified is not None else None,
    }
