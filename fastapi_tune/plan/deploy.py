"""Deployment decisions beside gunicorn.conf.py: the container's command and, for Kubernetes, a
Deployment and a HorizontalPodAutoscaler, each value with its reason.

Pure: plan + probe report + profile + the target's limits in, frozen dataclasses out;
render_deploy.py only formats them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.report import EndpointClass, ProbeReport
from fastapi_tune.plan.model import MIN_PLAN_CONFIDENCE, MIN_REPLICAS, REPLICA_UTILISATION, Plan
from fastapi_tune.plan.profiles import Profile
from fastapi_tune.plan.server_model import Server, ServerPlan, server_argv
from fastapi_tune.plan.servers import gunicorn_plan
from fastapi_tune.plan.target import cpu_is_limited, memory_is_limited, runs_in_container
from fastapi_tune.plan.workers import pod_memory_mib, worker_rss

# After SIGTERM the pod leaves the Service's endpoints, but kube-proxy and ingress controllers learn it
# a few seconds later and keep sending requests meanwhile; the usual pause is 5 s (Kubernetes docs,
# "Termination of Pods": the preStop hook runs before SIGTERM reaches the container).
PRE_STOP_SLEEP_S: Final = 5
# terminationGracePeriodSeconds also covers the preStop pause; keep a margin over pause + graceful_timeout.
GRACE_MARGIN_S: Final = 5
READINESS_PERIOD_S: Final = 5
READINESS_TIMEOUT_S: Final = 2
LIVENESS_PERIOD_S: Final = 10
LIVENESS_TIMEOUT_S: Final = 5
# CPU requests in 50m steps, at least 100m: finer numbers pretend to a precision a probe does not have.
CPU_STEP_MILLI: Final = 50
MIN_CPU_MILLI: Final = 100
# One Python process rarely uses more than one core (the GIL).
MAX_CPU_MILLI_PER_WORKER: Final = 1000
_MIB: Final = 1 << 20
# How host.py's sources read in a comment: which flag or file set the limit.
_SOURCE_NAMES: Final = {
    "override": "given",
    "quota": "cgroup CPU quota",
    "cpuset": "cgroup cpuset",
    "cgroup": "cgroup",
}


@dataclass(frozen=True)
class HealthCheck:
    path: str | None  # None: a TCP check on the port (no cheap route known)
    why: str


@dataclass(frozen=True)
class PodResources:
    cpu_request_milli: int
    cpu_limit_milli: int | None  # None: no CPU limit
    memory_request_mib: int
    memory_limit_mib: int
    why: tuple[str, ...]


@dataclass(frozen=True)
class Autoscaler:
    min_replicas: int
    max_replicas: int
    cpu_utilization: int  # averageUtilization, percent of the CPU request
    why: str


@dataclass(frozen=True)
class KubeDeployment:
    replicas: int
    replicas_why: str
    resources: PodResources
    pre_stop_s: int
    termination_grace_s: int
    grace_why: str
    liveness_failures: int
    liveness_why: str
    autoscaler: Autoscaler | None
    autoscaler_note: str  # why there is none, when there is none


@dataclass(frozen=True)
class DeploySpec:
    """What the deployment files say, decided once."""

    app: str
    profile: str
    name: str  # DNS-1123 label for Kubernetes objects and the image
    port: int
    command: tuple[str, ...]  # the container's exec-form CMD
    python_version: str | None  # "3.11", for the base image
    pins: tuple[str, ...]  # the server stack as measured, e.g. gunicorn==27.0.1
    graceful_timeout: int
    stop_grace_period: int | None
    cpus: float | None  # the container's CPU limit, when one was given or found
    memory_mib: int | None
    health: HealthCheck
    kubernetes: KubeDeployment | None
    server: str = "gunicorn"  # what runs in the container
    # The server's options with their reasons (uvicorn, Granian): Kubernetes `args`, one group per option;
    # empty for gunicorn, whose values are in its config file.
    args: tuple[tuple[tuple[str, ...], str], ...] = ()
    # The admission module the command loads (the cap after a collapse), which must ship with it.
    admission_module: str | None = None


def k8s_name(text: str) -> str:
    """A DNS-1123 label (lower case, digits, '-', at most 63) from a directory or module name."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "fastapi-app"


def _port(plan: Plan) -> int:
    bind = str(plan.setting("bind").value)
    _, _, port = bind.rpartition(":")
    if bind.startswith("unix:") or not port.isdigit():
        raise UsageError(f"bind {bind!r}: deployment files need a TCP port, e.g. --bind 0.0.0.0:8000")
    return int(port)


def pick_health(report: ProbeReport | None, health_path: str | None) -> HealthCheck:
    """A cheap route for readiness and liveness: one on the event loop, never AnyIO's thread pool."""
    if health_path:
        return HealthCheck(health_path, "you chose it (--health-path).")
    found: list[tuple[float, str, str]] = []
    for e in report.endpoints if report is not None else ():
        v = e.verdict
        if e.method != "GET" or v is None or v.cls is not EndpointClass.IO_BOUND:
            continue
        if v.confidence < MIN_PLAN_CONFIDENCE:
            continue
        clean = [lv for lv in e.levels if lv.latency_ms is not None and lv.errors == 0]
        if clean and report is not None:
            first = min(clean, key=lambda lv: lv.concurrency)
            assert first.latency_ms is not None
            path = e.url.removeprefix(report.target) or "/"
            found.append((first.latency_ms.p50, path, e.route))
    if not found:
        return HealthCheck(
            None,
            "a TCP check on the port: no io-bound GET route was measured. Add a cheap `async def` route"
            " (e.g. /healthz returning {}) and pass --health-path: a `def` route queues behind AnyIO's"
            " 40 threads under load, fails the probe and gets a busy pod restarted.",
        )
    ms, path, route = min(found)
    return HealthCheck(
        path,
        f"{route} is io-bound: it runs on the event loop, so `def` routes filling AnyIO's 40-thread pool"
        f" cannot starve it, and it was the fastest such route (p50 {ms:.1f} ms unloaded). A dedicated"
        " `async def` /healthz that touches nothing is better still: pass --health-path.",
    )


def _peak_cpu_per_worker(report: ProbeReport | None) -> float | None:
    """The most CPU one worker used at any clean level of the probe, in cores."""
    if report is None:
        return None
    workers = report.server.workers or 1
    values = [
        lv.server_cpu_cores / workers
        for e in report.endpoints
        for lv in e.levels
        if lv.server_cpu_cores is not None and not lv.client_saturated
    ]
    return max(values) if values else None


def _source(name: str) -> str:
    return _SOURCE_NAMES.get(name, name)


def _cpu_request(plan: Plan, report: ProbeReport | None) -> tuple[int, str]:
    sizing = plan.replicas
    if sizing is not None and sizing.cpu_request_milli is not None:
        return (
            sizing.cpu_request_milli,
            f"CPU request {sizing.cpu_request_milli}m: the plan's, for the target load",
        )
    top = MAX_CPU_MILLI_PER_WORKER * plan.workers
    peak = _peak_cpu_per_worker(report)
    if peak is None:
        return top, f"CPU request {top}m: CPU not measured, so one core per worker"
    milli = min(
        top, max(MIN_CPU_MILLI, math.ceil(peak * 1000 / CPU_STEP_MILLI) * CPU_STEP_MILLI * plan.workers)
    )
    return milli, (
        f"CPU request {milli}m: the most one worker used in the probe ({peak:.2f} cores) x {plan.workers}"
        f" worker(s), in {CPU_STEP_MILLI}m steps"
    )


def pod_resources(
    plan: Plan, report: ProbeReport | None, profile: Profile, target: HostFacts
) -> PodResources:
    """Requests from the measurements, limits from the target (--cpus / --memory or the cgroup)."""
    cpu, cpu_why = _cpu_request(plan, report)
    why = [cpu_why]
    cpu_limit: int | None = None
    if cpu_is_limited(target):
        cpu_limit = round(float(target.cpu.effective) * 1000)
        why.append(f"CPU limit {cpu_limit}m: the target's ({_source(target.cpu.source)})")
        if cpu > cpu_limit:
            cpu = cpu_limit
            why.append(f"CPU request lowered to the limit, {cpu_limit}m")
    else:
        why.append(
            "no CPU limit: CFS throttling would stall the event loop (heartbeats included) for the rest"
            " of each 100 ms period; pass --cpus to set one"
        )
    sizing = plan.replicas
    memory = (
        sizing.memory_request_mib
        if sizing
        else pod_memory_mib(worker_rss(report, profile), plan.workers, profile)
    )
    why.append(
        f"memory request {memory}Mi: {plan.workers} worker(s) of {worker_rss(report, profile) / _MIB:.0f} MiB"
        f" and the master, with {profile.memory_headroom:.0%} headroom"
    )
    if memory_is_limited(target):
        limit = target.memory.effective_bytes // _MIB
        why.append(f"memory limit {limit}Mi: the target's ({_source(target.memory.source)})")
        if memory > limit:
            why.append(
                f"the measured need ({memory}Mi) is above the limit: raise --memory, or expect OOM kills"
            )
            memory = limit
    else:
        limit = memory
        why.append(
            "memory limit = request: the pod gets what it was sized for, and an OOM kill names the cause"
        )
    return PodResources(cpu, cpu_limit, memory, limit, tuple(why))


def _autoscaler(plan: Plan) -> tuple[Autoscaler | None, str]:
    sizing = plan.replicas
    if sizing is None:
        return None, "no HorizontalPodAutoscaler: pass --target-rps to size one"
    if sizing.cpu_request_milli is None:
        return (
            None,
            "no HorizontalPodAutoscaler: the server's CPU was not measured, so no CPU request to scale on",
        )
    top = max(sizing.replicas, math.ceil(sizing.replicas / REPLICA_UTILISATION))
    why = (
        f"each pod's CPU request is what it uses at {sizing.target_rps:g} req/s spread over {sizing.replicas}"
        f" pods, at most {REPLICA_UTILISATION:.0%} of a pod's measured peak: so 100% of the request is the"
        f" planned operating point. Between {MIN_REPLICAS} pods (a node drain keeps one serving) and"
        f" {top} (the same per-pod load up to {1 / REPLICA_UTILISATION:.1f}x the target)."
    )
    return Autoscaler(MIN_REPLICAS, top, 100, why), ""


def _kubernetes(
    plan: Plan, report: ProbeReport | None, profile: Profile, target: HostFacts, server: Server
) -> KubeDeployment:
    sizing = plan.replicas
    if sizing is not None:
        replicas, replicas_why = sizing.replicas, sizing.why
    else:
        replicas = MIN_REPLICAS
        replicas_why = (
            f"at least {MIN_REPLICAS} so a node drain keeps one serving; pass --target-rps to size it"
        )
    graceful = int(plan.setting("graceful_timeout").value or 0)
    grace = PRE_STOP_SLEEP_S + graceful + GRACE_MARGIN_S
    grace_why = (
        f"preStop pause {PRE_STOP_SLEEP_S} s (endpoints stop sending new requests) + graceful_timeout"
        f" {graceful} s ({server} finishes in-flight requests) + {GRACE_MARGIN_S} s margin before the"
        " kubelet's SIGKILL"
    )
    timeout = int(plan.setting("timeout").value or 0)
    failures = math.ceil(timeout / LIVENESS_PERIOD_S) + 1
    liveness_why = (
        f"{failures} failures x {LIVENESS_PERIOD_S} s outlast gunicorn's timeout ({timeout} s): gunicorn"
        " restarts a stuck worker itself before the kubelet restarts the pod"
    )
    if server is not Server.GUNICORN:
        liveness_why = (
            f"{server} does not replace a worker whose event loop is stuck: the kubelet restarts the pod"
            f" after {failures} failures x {LIVENESS_PERIOD_S} s, the plan's worker timeout ({timeout} s)"
            " and one period more"
        )
    hpa, note = _autoscaler(plan)
    return KubeDeployment(
        replicas=replicas,
        replicas_why=replicas_why,
        resources=pod_resources(plan, report, profile, target),
        pre_stop_s=PRE_STOP_SLEEP_S,
        termination_grace_s=grace,
        grace_why=grace_why,
        liveness_failures=failures,
        liveness_why=liveness_why,
        autoscaler=hpa,
        autoscaler_note=note,
    )


def decide_deploy(
    plan: Plan,
    report: ProbeReport | None,
    profile: Profile,
    target: HostFacts,
    name: str,
    health_path: str | None = None,
    conf_name: str = "gunicorn.conf.py",
    server: ServerPlan | None = None,
) -> DeploySpec:
    """The deployment files' content: a Dockerfile for every profile, Kubernetes objects for the
    profiles that fix the processes per pod and scale with replicas. `server`: run uvicorn or Granian
    with its options instead of gunicorn with its config file."""
    python = plan.stack.python_version if plan.stack is not None else None
    kube = runs_in_container(profile) and profile.workers.fixed is not None
    sp = server or gunicorn_plan(plan)
    own_file = sp.server is Server.GUNICORN
    return DeploySpec(
        app=plan.app,
        profile=plan.profile,
        name=k8s_name(name),
        port=_port(plan),
        command=("gunicorn", "-c", conf_name) if own_file else server_argv(sp),
        python_version=".".join(python.split(".")[:2]) if python else None,
        pins=sp.pins,
        graceful_timeout=int(plan.setting("graceful_timeout").value or 0),
        stop_grace_period=profile.stop_grace_period,
        cpus=float(target.cpu.effective) if cpu_is_limited(target) else None,
        memory_mib=target.memory.effective_bytes // _MIB if memory_is_limited(target) else None,
        health=pick_health(report, health_path),
        kubernetes=_kubernetes(plan, report, profile, target, sp.server) if kube else None,
        server=sp.server.value,
        args=() if own_file else tuple((_words(o.flag, o.value), o.why) for o in sp.options),
        admission_module=None if plan.admission is None else plan.admission.module,
    )


def _words(flag: str, value: str | None) -> tuple[str, ...]:
    return (flag,) if value is None else (flag, value)
