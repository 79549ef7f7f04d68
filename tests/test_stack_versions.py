"""Commands that work in the app's environment: its versions, the flags they accept, the control
socket in containers, container limits, and the config's CPU cap at start-up."""

from __future__ import annotations

import importlib.metadata
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.appenv import AppEnv, boot_failure, parse_app_env, read_app_env
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.plan.target import sizing_warning
from fastapi_tune.render.commands import command_notes, gunicorn_argv, uvicorn_accepts, uvicorn_argv
from fastapi_tune.render.conf import render_gunicorn_conf
from tests.servers import REPO
from tests.test_plan import cpu_report, make_host, plan_for

JITTER = "--limit-max-requests-jitter"
PLAIN_APP = "tests.apps.plain_app:app"
GRACEFUL = "--timeout-graceful-shutdown"


@pytest.mark.parametrize(
    ("flag", "version", "accepted"),
    [
        pytest.param(JITTER, "0.18.3", False, id="jitter-0.18"),
        pytest.param(JITTER, "0.40.0", False, id="jitter-0.40"),
        pytest.param(JITTER, "0.41.0", True, id="jitter-0.41"),
        pytest.param(GRACEFUL, "0.21.1", False, id="graceful-0.21"),
        pytest.param(GRACEFUL, "0.22.0", True, id="graceful-0.22"),
        pytest.param(JITTER, None, True, id="unknown-version-is-current"),
        pytest.param("--backlog", "0.18.3", True, id="old-flag"),
    ],
)
def test_uvicorn_flags_by_version(flag: str, version: str | None, accepted: bool) -> None:
    assert uvicorn_accepts(flag, version) is accepted


def test_old_uvicorn_gets_a_command_it_accepts_and_a_note() -> None:
    plan = plan_for(
        make_host(2), cpu_report(), "vm", stack=AppEnv(python="p", uvicorn="0.40.0", fastapi_cli="0.0.7")
    )
    argv = uvicorn_argv(plan)
    assert JITTER not in argv
    assert "--limit-max-requests" in argv  # the flag before it stays, with its value
    assert argv[argv.index("--limit-max-requests") + 1] == "10000"
    assert GRACEFUL in argv
    notes = command_notes(plan)
    assert len(notes) == 1
    assert JITTER in notes[0]
    assert JITTER not in render_gunicorn_conf(plan).split("Equivalent commands")[1].split("Note:")[0]


def test_fastapi_run_without_fastapi_cli_says_it_needs_the_standard_extra() -> None:
    plan = plan_for(make_host(2), cpu_report(), "vm", stack=AppEnv(python="p", uvicorn="0.54.0"))
    assert any("fastapi[standard]" in n for n in command_notes(plan))
    with_cli = plan_for(
        make_host(2), cpu_report(), "vm", stack=AppEnv(python="p", uvicorn="0.54.0", fastapi_cli="0.0.20")
    )
    assert command_notes(with_cli) == ()


def test_every_flag_printed_is_one_the_installed_uvicorn_accepts() -> None:
    """The real tool: each flag of the printed command appears in this uvicorn's --help."""
    env = read_app_env(sys.executable)
    plan = plan_for(make_host(2), cpu_report(), "vm", stack=env)
    help_text = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    flags = [w for w in uvicorn_argv(plan) if w.startswith("--")]
    assert JITTER in flags  # this environment's uvicorn is new enough to print it
    assert [f for f in flags if f not in help_text] == []


def test_versions_come_from_the_apps_python() -> None:
    env = read_app_env(sys.executable, REPO)
    assert env.uvicorn == importlib.metadata.version("uvicorn")
    assert env.gunicorn == importlib.metadata.version("gunicorn")
    assert env.python_version == ".".join(map(str, sys.version_info[:3]))


def test_a_python_that_cannot_run_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--python"):
        read_app_env(str(tmp_path / "no-such-python"))


def test_junk_version_output_knows_nothing() -> None:
    assert parse_app_env("p", "not json") == AppEnv(python="p")
    assert parse_app_env("p", '{"uvicorn": 3, "fastapi-cli-slim": "0.0.7"}').fastapi_cli == "0.0.7"


@pytest.mark.parametrize(
    ("log", "hint"),
    [
        pytest.param(
            'ERROR:    Error loading ASGI app. Could not import module "nosuch".', "--app-dir", id="module"
        ),
        pytest.param(
            'ERROR:    Error loading ASGI app. Attribute "api" not found in module "main".',
            "after the colon",
            id="attr",
        ),
        pytest.param("/usr/bin/python3: No module named uvicorn", "--python", id="no-uvicorn"),
    ],
)
def test_boot_failure_is_one_line_then_the_servers_own(log: str, hint: str) -> None:
    detail = f"main:app under uvicorn exited with code 1 before answering:\nINFO: starting\n{log}"
    text = boot_failure("nosuch:app", "python", Path("/srv/app"), detail)
    first, _, rest = text.partition("\n")
    assert log.rsplit("ERROR:", maxsplit=1)[-1].strip() in first
    assert hint in first
    assert log in rest


# ---------------------------------------------------------------------------------------
# gunicorn's control socket


@pytest.mark.parametrize(
    ("profile", "version", "disabled"),
    [
        pytest.param("container", "27.0.1", True, id="container-27"),
        pytest.param("kubernetes", "25.1.0", True, id="kubernetes-25.1"),
        pytest.param("container", "25.0.3", False, id="before-25.1-no-socket"),
        pytest.param("vm", "27.0.1", False, id="vm-keeps-it"),
        pytest.param("container", None, True, id="unknown-version"),
    ],
)
def test_control_socket_off_in_containers(profile: str, version: str | None, disabled: bool) -> None:
    plan = plan_for(make_host(2), cpu_report(), profile, gunicorn_version=version)
    names = {s.name for s in plan.settings}
    assert ("control_socket_disable" in names) is disabled
    assert ("--no-control-socket" in gunicorn_argv(plan)) is disabled
    if disabled:
        assert "read-only" in plan.setting("control_socket_disable").why


def test_gunicorn_reads_the_control_socket_setting(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf(plan_for(make_host(2), None, "container")))
    printed = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "--print-config", "tests.apps.plain_app:app"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"^control_socket_disable\s+= True$", printed, re.MULTILINE), printed


# ---------------------------------------------------------------------------------------
# Container limits


def test_sizing_a_container_from_an_unlimited_host_warns() -> None:
    text = sizing_warning(load_profile("container"), make_host(16))
    assert text is not None
    assert "--cpus" in text
    assert "--memory" in text
    assert sizing_warning(load_profile("vm"), make_host(16)) is None


def test_no_warning_once_limits_are_known() -> None:
    limited = make_host(1, logical=16)  # a CPU quota; memory still the machine's
    text = sizing_warning(load_profile("kubernetes"), limited)
    assert text is not None
    assert "--cpus" not in text
    assert "--memory" in text


# ---------------------------------------------------------------------------------------
# The config's CPU cap at start-up


def conf_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(render_gunicorn_conf(plan_for(make_host(4), cpu_report(), "vm")))
    return runpy.run_path(str(path))


def cgroup_tree(root: Path, cgroup_line: str, files: dict[str, str]) -> str:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup_line + "\n")
    for rel, text in files.items():
        (root / "sys/fs/cgroup" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys/fs/cgroup" / rel).write_text(text + "\n")
    return str(root)


@pytest.mark.parametrize(
    ("line", "files", "quota"),
    [
        pytest.param("0::/pod/app", {"pod/app/cpu.max": "50000 100000"}, 0.5, id="v2-own"),
        pytest.param(
            "0::/pod/app",
            {"pod/cpu.max": "100000 100000", "pod/app/cpu.max": "max 100000"},
            1.0,
            id="v2-parent",
        ),
        pytest.param("0::/", {"cpu.max": "max 100000"}, None, id="v2-unlimited"),
        pytest.param(
            "4:cpu,cpuacct:/docker/abc",
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            },
            1.5,
            id="v1-quota",
        ),
        pytest.param(
            "4:cpu,cpuacct:/",
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            None,
            id="v1-unlimited",
        ),
    ],
)
def test_generated_cpu_limit_reads_cgroups(
    line: str, files: dict[str, str], quota: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = conf_namespace(tmp_path, monkeypatch)
    cpu_limit = ns["cpu_limit"]
    assert callable(cpu_limit)
    affinity = float(len(os.sched_getaffinity(0)))
    found = cpu_limit(cgroup_tree(tmp_path / "root", line, files))
    assert found == min(affinity, quota if quota is not None else affinity)


@pytest.mark.parametrize(
    ("planned", "cpus", "per_cpu", "expected"),
    [
        pytest.param(4, 1.0, 1.0, 1, id="4-planned-1-cpu"),
        pytest.param(4, None, 1.0, 4, id="unknown-keeps-plan"),
        pytest.param(2, 8.0, 1.0, 2, id="never-more-than-planned"),
        pytest.param(4, 1.5, 1.333, 2, id="fractional-half-up"),
        pytest.param(8, 1.0, 4.0, 4, id="loop-blocking-ratio"),
        pytest.param(3, 0.2, 1.0, 1, id="at-least-one"),
    ],
)
def test_generated_workers_for_cpus(
    planned: int,
    cpus: float | None,
    per_cpu: float,
    expected: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers_for_cpus = conf_namespace(tmp_path, monkeypatch)["workers_for_cpus"]
    assert callable(workers_for_cpus)
    assert workers_for_cpus(planned, cpus, per_cpu) == expected


def test_gunicorn_on_one_cpu_does_not_start_the_workers_planned_for_four(tmp_path: Path) -> None:
    """The real thing: gunicorn resolves the config on 1 CPU (taskset) and on every CPU here."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(render_gunicorn_conf(plan_for(make_host(4), cpu_report(), "vm")))
    env = {k: v for k, v in os.environ.items() if k != "WEB_CONCURRENCY"}

    def workers(*prefix: str, extra_env: dict[str, str] | None = None) -> int:
        argv = [*prefix, sys.executable, "-m", "gunicorn", "-c", str(conf), "--print-config", PLAIN_APP]
        run_env = {**env, **(extra_env or {})}
        printed = subprocess.run(
            argv, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
        return next(int(line.split("=")[1]) for line in printed.splitlines() if line.startswith("workers "))

    assert workers("taskset", "-c", "0") == 1
    assert workers() == min(4, len(os.sched_getaffinity(0)))
    assert workers("taskset", "-c", "0", extra_env={"WEB_CONCURRENCY": "3"}) == 3  # an explicit count wins
