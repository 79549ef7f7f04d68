"""The same saved report gives the same report JSON, plan and gunicorn.conf.py, byte for byte.

The files under tests/golden/sample/ were written by the code before the package was split into
layers; a change here is a change of behaviour. When one is meant, regenerate them with
FASTAPI_TUNE_REGOLD=1 and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fastapi_tune.measure.report import ProbeReport, report_from_json, report_to_json
from fastapi_tune.plan.model import Choices
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.render.conf import render_gunicorn_conf
from fastapi_tune.render.plan import plan_to_json
from tests.test_plan import make_host

ROOT = Path(__file__).resolve().parent
GOLDEN = ROOT / "golden" / "sample"


def _report() -> ProbeReport:
    raw = json.loads((ROOT / "data" / "sample_probe.json").read_text())
    raw["schema_version"] = 2  # the file predates schema 2, whose additions are all optional
    return report_from_json(raw, "sample")


def _same(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FASTAPI_TUNE_REGOLD") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed"


def test_report_json_is_unchanged() -> None:
    _same("probe.json", json.dumps(report_to_json(_report()), indent=1, sort_keys=True))


@pytest.mark.parametrize("profile", ["vm", "kubernetes"])
def test_plan_and_config_are_unchanged(profile: str) -> None:
    plan = make_plan(make_host(2), _report(), load_profile(profile), Choices(app="main:app"))
    _same(f"plan-{profile}.json", json.dumps(plan_to_json(plan), indent=1, sort_keys=True))
    _same(f"conf-{profile}.py", render_gunicorn_conf(plan))
