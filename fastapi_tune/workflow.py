"""The commands' flows: measuring, judging and planning chained in the one-way order.

host + probe report + profile -> plan -> renderers. The CLI calls one of these and renders what it
returns; none of them prints.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi_tune.classify import classify_report
from fastapi_tune.demo import SAMPLE_APP, sample_server
from fastapi_tune.errors import BadInputError
from fastapi_tune.fileio import atomic_write
from fastapi_tune.host import HostFacts
from fastapi_tune.plan import Choices, Plan, make_plan
from fastapi_tune.probe import ProbeEvents, ProbeOptions, ProbeOutcome, run_probe
from fastapi_tune.profiles import DEFAULT_PROFILE, load_profile
from fastapi_tune.report import ProbeReport, report_to_json


def probe_and_classify(options: ProbeOptions, host: HostFacts, events: ProbeEvents) -> ProbeOutcome:
    """Measure, then judge every endpoint from what was measured."""
    outcome = run_probe(options, host, events)
    return replace(outcome, report=classify_report(outcome.report))


def save_report(report: ProbeReport, path: Path) -> None:
    """The report as its versioned JSON, written atomically."""
    atomic_write(path, json.dumps(report_to_json(report), indent=2) + "\n")


def save_report_somewhere(report: ProbeReport, path: Path) -> tuple[Path | None, BadInputError | None]:
    """Save to `path`; when that write fails (full disk), to a fresh file in the temp directory.

    Measured results are not thrown away for a full disk: returns where the report went (None:
    nowhere) and the failure at `path`, if any.
    """
    try:
        save_report(report, path)
        return path, None
    except BadInputError as e:
        failure = e
    try:
        fd, name = tempfile.mkstemp(prefix="fastapi-tune-probe-", suffix=".json")
    except OSError:
        return None, failure
    os.close(fd)
    spare = Path(name)
    try:
        save_report(report, spare)
    except BadInputError:
        spare.unlink(missing_ok=True)
        return None, failure
    return spare, failure


@dataclass(frozen=True)
class DemoResult:
    outcome: ProbeOutcome
    plan: Plan
    url: str


def run_demo(host: HostFacts, max_seconds: float, events: ProbeEvents) -> DemoResult:
    """Serve the sample app, probe and judge it, stop it, and plan from the report."""
    with sample_server() as running:
        outcome = probe_and_classify(ProbeOptions(url=running.url, max_seconds=max_seconds), host, events)
    plan = make_plan(
        host,
        outcome.report,
        load_profile(DEFAULT_PROFILE),
        Choices(app=SAMPLE_APP, gunicorn_version=host.versions.get("gunicorn")),
    )
    return DemoResult(outcome=outcome, plan=plan, url=running.url)
