"""Deployment files: a Dockerfile with an exec-form CMD, a Kubernetes Deployment and HPA that parse
as YAML and carry the plan's numbers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.appenv import AppEnv
from fastapi_tune.measure.host import HostFacts, MemoryFacts
from fastapi_tune.measure.report import EndpointClass, ProbeReport, report_to_json
from fastapi_tune.plan.deploy import PRE_STOP_SLEEP_S, DeploySpec, decide_deploy, k8s_name, pick_health
from fastapi_tune.plan.model import MIN_REPLICAS, AdmissionCap, Plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.render.deploy import deploy_files, render_dockerfile, render_hpa
from tests.test_plan import (
    MIB,
    cpu_report,
    make_endpoint,
    make_host,
    make_level,
    make_report,
    plan_for,
    threadpool_report,
)

STACK = AppEnv(python="python", python_version="3.11.7", gunicorn="27.0.1", uvicorn="0.54.0")


def pod_target(cpus: float = 1, memory_mib: int = 512) -> HostFacts:
    """A pod given --cpus and --memory: both are overrides."""
    host = make_host(cpus, logical=16, source="override")
    memory = MemoryFacts(
        total_bytes=24 << 30,
        available_bytes=memory_mib * MIB,
        cgroup_limit_bytes=None,
        override_bytes=memory_mib * MIB,
        effective_bytes=memory_mib * MIB,
        source="override",
    )
    return replace(host, memory=memory)


def mixed_report() -> ProbeReport:
    """A CPU route, a threadpool-bound route and two io-bound ones (one faster)."""
    slow_io = make_endpoint(
        "/items", EndpointClass.IO_BOUND, [make_level(c, c / 0.04, 45.0) for c in (1, 16)]
    )
    fast_io = make_endpoint("/ping", EndpointClass.IO_BOUND, [make_level(c, c / 0.002, 4.0) for c in (1, 16)])
    return replace(
        threadpool_report(),
        endpoints=(*cpu_report().endpoints, *threadpool_report().endpoints[1:], slow_io, fast_io),
    )


def kube_spec(target_rps: float | None, report: ProbeReport | None = None) -> tuple[Plan, DeploySpec]:
    target = pod_target()
    report = report if report is not None else cpu_report()
    plan = plan_for(target, report, "kubernetes", target_rps=target_rps, stack=STACK)
    spec = decide_deploy(plan, report, load_profile("kubernetes"), target, "My_App", None)
    return plan, spec


def parsed(spec: DeploySpec) -> dict[str, Any]:
    files = dict(deploy_files(spec))
    return {name: yaml.safe_load(text) for name, text in files.items() if name.endswith(".yaml")}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec["containers"][0]  # type: ignore[no-any-return]


def test_deployment_and_hpa_parse_and_match_the_plan() -> None:
    plan, spec = kube_spec(300)
    docs = parsed(spec)
    assert set(docs) == {"deployment.yaml", "hpa.yaml"}
    deployment, hpa = docs["deployment.yaml"], docs["hpa.yaml"]
    sizing = plan.replicas
    assert sizing is not None
    assert deployment["apiVersion"] == "apps/v1"
    assert deployment["kind"] == "Deployment"
    assert deployment["metadata"]["name"] == "my-app"
    assert deployment["spec"]["replicas"] == sizing.replicas
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    c = container(deployment)
    assert c["command"] == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert c["ports"] == [{"name": "http", "containerPort": 8000}]  # the plan's bind 0.0.0.0:8000
    assert c["resources"]["requests"] == {
        "cpu": f"{sizing.cpu_request_milli}m",
        "memory": f"{sizing.memory_request_mib}Mi",
    }
    assert c["resources"]["limits"] == {"cpu": "1000m", "memory": "512Mi"}  # --cpus 1 --memory 512M
    graceful = int(plan.setting("graceful_timeout").value or 0)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > graceful + PRE_STOP_SLEEP_S
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_SLEEP_S)]
    timeout = int(plan.setting("timeout").value or 0)
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > timeout
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-app"}
    assert hpa["spec"]["minReplicas"] == MIN_REPLICAS
    assert hpa["spec"]["maxReplicas"] >= sizing.replicas
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_without_target_rps_there_is_no_hpa_and_replicas_keep_a_drain_safe_floor() -> None:
    _, spec = kube_spec(None)
    docs = parsed(spec)
    assert set(docs) == {"deployment.yaml"}
    assert docs["deployment.yaml"]["spec"]["replicas"] == MIN_REPLICAS
    assert spec.kubernetes is not None
    assert "--target-rps" in spec.kubernetes.autoscaler_note


def test_no_cpu_limit_when_the_target_has_none() -> None:
    report, laptop = cpu_report(), make_host(16)  # all 16 CPUs and 24 GiB: no limit anywhere
    plan = plan_for(laptop, report, "kubernetes", stack=STACK)
    spec = decide_deploy(plan, report, load_profile("kubernetes"), laptop, "app")
    limits = container(parsed(spec)["deployment.yaml"])["resources"]["limits"]
    assert "cpu" not in limits
    assert limits["memory"] == container(parsed(spec)["deployment.yaml"])["resources"]["requests"]["memory"]


def test_memory_request_above_the_limit_is_lowered_and_said() -> None:
    report = cpu_report()
    big = replace(
        report,
        endpoints=tuple(
            replace(e, levels=tuple(replace(lv, server_rss_bytes=(900 * MIB,)) for lv in e.levels))
            for e in report.endpoints
        ),
    )
    target = pod_target(memory_mib=512)
    plan = plan_for(target, big, "kubernetes", stack=STACK)
    spec = decide_deploy(plan, big, load_profile("kubernetes"), target, "app")
    assert spec.kubernetes is not None
    r = spec.kubernetes.resources
    assert (r.memory_request_mib, r.memory_limit_mib) == (512, 512)
    assert any("raise --memory" in why for why in r.why)


@pytest.mark.parametrize(
    ("report", "health_path", "expected"),
    [
        pytest.param(mixed_report(), None, "/ping", id="fastest-io-bound-route"),
        pytest.param(mixed_report(), "/healthz", "/healthz", id="health-path-wins"),
        pytest.param(threadpool_report(), None, "/sleep", id="never-the-threadpool-route"),
        pytest.param(cpu_report(), None, None, id="no-io-route-tcp"),
        pytest.param(None, None, None, id="no-report-tcp"),
    ],
)
def test_health_route(report: ProbeReport | None, health_path: str | None, expected: str | None) -> None:
    assert pick_health(report, health_path).path == expected


def test_a_route_with_errors_is_not_a_health_check() -> None:
    failing = make_endpoint("/flaky", EndpointClass.IO_BOUND, [replace(make_level(1, 200, 2.0), errors=3)])
    assert pick_health(make_report([failing]), None).path is None


def test_tcp_probe_when_no_cheap_route() -> None:
    _, spec = kube_spec(None, cpu_report())
    c = container(parsed(spec)["deployment.yaml"])
    assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert "httpGet" not in c["livenessProbe"]


def test_dockerfile_cmd_is_exec_form_with_the_measured_stack() -> None:
    target = pod_target()
    plan = plan_for(target, cpu_report(), "container", stack=STACK)
    spec = decide_deploy(plan, cpu_report(), load_profile("container"), target, "app")
    text = render_dockerfile(spec)
    cmd = [line for line in text.splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1
    assert json.loads(cmd[0].removeprefix("CMD ")) == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert "FROM python:3.11-slim" in text
    assert "gunicorn==27.0.1 uvicorn==0.54.0" in text
    assert "--cpus 1 --memory 512m" in text
    assert spec.kubernetes is None  # a container profile gets no Kubernetes objects
    assert render_hpa(spec) == ""


def test_dockerfile_says_the_admission_module_ships_beside_the_config() -> None:
    target = pod_target()
    plan = plan_for(target, cpu_report(), "container", stack=STACK)
    text = render_dockerfile(decide_deploy(plan, cpu_report(), load_profile("container"), target, "app"))
    assert "asgi_admission" not in text
    cap = AdmissionCap(limit=6, wait_s=10.0, collapse_per_worker=18, held_per_worker=8, why_limit="",
                       why_wait="", cause=None, fixes=())  # fmt: skip
    capped = replace(plan, admission=cap)
    text = render_dockerfile(decide_deploy(capped, cpu_report(), load_profile("container"), target, "app"))
    assert "asgi_admission.py" in text
    assert "beside gunicorn.conf.py" in text
    assert text.index("asgi_admission.py") < text.index("COPY . .")


def test_unix_socket_bind_cannot_be_deployed() -> None:
    plan = plan_for(pod_target(), None, "container", bind="unix:/run/app.sock")
    with pytest.raises(UsageError, match="TCP port"):
        decide_deploy(plan, None, load_profile("container"), pod_target(), "app")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("My_App", "my-app", id="lower-and-dash"),
        pytest.param("---", "fastapi-app", id="nothing-left"),
        pytest.param("a" * 80, "a" * 63, id="63-chars"),
    ],
)
def test_k8s_name(text: str, expected: str) -> None:
    assert k8s_name(text) == expected


def test_recommend_writes_the_deployment_files(tmp_path: Path) -> None:
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps(report_to_json(cpu_report())))
    deploy = tmp_path / "k8s"
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--app",
            "main:app",
            "--probe",
            str(probe),
            "--profile",
            "kubernetes",
            "--cpus",
            "1",
            "--memory",
            "512M",
            "--target-rps",
            "300",
            "--out",
            str(tmp_path / "gunicorn.conf.py"),
            "--deploy",
            str(deploy),
            "--yes",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert sorted(p.name for p in deploy.iterdir()) == ["Dockerfile", "deployment.yaml", "hpa.yaml"]
    deployment = yaml.safe_load((deploy / "deployment.yaml").read_text())
    assert deployment["spec"]["replicas"] == plan["replicas"]["replicas"]
    assert yaml.safe_load((deploy / "hpa.yaml").read_text())["kind"] == "HorizontalPodAutoscaler"
