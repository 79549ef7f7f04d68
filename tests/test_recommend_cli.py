"""`fastapi-tune recommend` as a user runs it: files, consent, profiles, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.measure.report import report_to_json
from tests.servers import REPO
from tests.test_plan import cpu_report


def run(tmp_path: Path, *args: str, cpus: str = "2") -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--app",
            "tests.apps.plain_app:app",
            "--out",
            str(tmp_path / "gunicorn.conf.py"),
            *args,
        ],
        env={"FASTAPI_TUNE_CPUS": cpus, "FASTAPI_TUNE_MEMORY": "8G"},
    )
    return result.exit_code, result.stdout, result.stderr


def cpu_probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(report_to_json(cpu_report())))
    return path


@pytest.mark.parametrize(
    ("cpus", "profile", "expected"),
    [
        pytest.param("2", "vm", 2, id="2-cpus-cpu-bound"),
        pytest.param("4", "vm", 4, id="4-cpus-cpu-bound"),
        pytest.param("1", "small-memory", 1, id="1-cpu"),
        pytest.param("4", "kubernetes", 1, id="kubernetes-one-per-pod"),
    ],
)
def test_workers_from_cpu_bound_evidence(tmp_path: Path, cpus: str, profile: str, expected: int) -> None:
    code, stdout, stderr = run(
        tmp_path, "--probe", str(cpu_probe(tmp_path)), "--profile", profile, "--json", cpus=cpus
    )
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert plan["workers"] == expected
    text = (tmp_path / "gunicorn.conf.py").read_text()
    assert f'os.environ.get("WEB_CONCURRENCY", "{plan["workers"]}")' in text


def test_generated_config_passes_gunicorns_check(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path, "--probe", str(cpu_probe(tmp_path)), "--yes")
    assert code == 0, stderr
    check = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", str(tmp_path / "gunicorn.conf.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_without_a_probe_report_it_says_what_is_unknown(tmp_path: Path) -> None:
    code, stdout, stderr = run(tmp_path, "--json")
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert plan["unknowns"], "a plan from host facts alone must say what it could not know"
    assert (tmp_path / "gunicorn.conf.py").exists()


def test_an_existing_file_is_never_replaced_silently(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("# my hand-tuned config\nworkers = 7\n")
    code, _, stderr = run(tmp_path)
    assert code == ExitCode.REFUSED
    assert "--yes" in stderr
    assert conf.read_text() == "# my hand-tuned config\nworkers = 7\n"

    code, _, stderr = run(tmp_path, "--yes")
    assert code == 0, stderr
    assert "workers = int(" in conf.read_text()
    backup = tmp_path / "gunicorn.conf.py.bak"
    assert backup.read_text() == "# my hand-tuned config\nworkers = 7\n"

    # Same inputs, same bytes: the second run writes nothing and makes no second backup.
    code, _, stderr = run(tmp_path, "--yes")
    assert code == 0, stderr
    assert "nothing written" in stderr
    assert not (tmp_path / "gunicorn.conf.py.bak.1").exists()


def test_a_bad_profile_names_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "mine.yaml"
    packaged = (REPO / "profiles" / "vm.yaml").read_text()
    bad.write_text(packaged.replace("memory_headroom: 0.25", "memory_headroom: lots"))
    code, _, stderr = run(tmp_path, "--profile", str(bad))
    assert code == ExitCode.BAD_INPUT
    assert "mine.yaml" in stderr
    assert "memory_headroom" in stderr


def test_a_broken_probe_report_is_bad_input(tmp_path: Path) -> None:
    broken = tmp_path / "probe.json"
    broken.write_text('{"schema_version": 1, "endpoints": "nope"}')
    code, _, stderr = run(tmp_path, "--probe", str(broken))
    assert code == ExitCode.BAD_INPUT
    assert "probe.json" in stderr
