"""The plan: host facts + probe report + profile -> gunicorn settings, each with its reason.

Pure: no I/O, no clock, no environment. Every value carries the evidence it came from, so
the renderers (rich table, JSON, gunicorn.conf.py comments) only format what is decided here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from fastapi_tune.appenv import AppEnv
from fastapi_tune.errors import UsageError
from fastapi_tune.host import HostFacts
from fastapi_tune.plan_mix import MixSizing, mix_of_report, replicas_for_objective, size_for_mix
from fastapi_tune.profiles import Profile
from fastapi_tune.report import Endpoint, EndpointClass, Level, ProbeReport
from fastapi_tune.rules import THREAD_TOKENS_PER_WORKER, rule_of_thumb_workers, suggested_thread_tokens
from fastapi_tune.slo import Objective
from fastapi_tune.target import runs_in_container

UVICORN_WORKER: Final = "uvicorn_worker.UvicornWorker"
ASGI_WORKER: Final = "asgi"
DEPRECATED_WORKER: Final = "uvicorn.workers.UvicornWorker"
# gunicorn's native ASGI worker appeared in 24.0 (FIELD-NOTES).
ASGI_MIN_GUNICORN: Final = (24, 0)
# gunicorn 25.1 opens a control socket by default (its docs: "versionadded:: 25.1.0").
CONTROL_SOCKET_MIN_GUNICORN: Final = (25, 1)

# Routes whose throughput only grows with processes that can each use a CPU.
CPU_LIMITED: Final = (EndpointClass.CPU_BOUND, EndpointClass.SERIALIZED, EndpointClass.LOOP_BLOCKING)
# A verdict below this confidence does not size workers: it is named, with its class and confidence,
# among the plan's unknowns (a noisy or starved probe must not move the deployment). Measured: the
# sample app's cpu-bound route reads 0.32-0.52 on a host shared with other work (3 levels before it
# saturates, starved levels at 0.8); verdicts the curve contradicts fall to 0.2 or below.
MIN_PLAN_CONFIDENCE: Final = 0.3
# PostgreSQL keeps superuser_reserved_connections (default 3) out of max_connections for admins.
DB_RESERVED_CONNECTIONS: Final = 3
# A worker using this much of a core at the busiest level is CPU-limited, whatever its class.
CPU_SATURATED_PER_WORKER: Final = 0.8
# A worker stalled by a blocking call uses almost no CPU (measured: 0.03-0.05 cores), so several
# can share a core; beyond 4 per core the workers' own event-loop work and memory outweigh
# the gain, whatever the measured CPU says.
BLOCKED_WORKERS_PER_CPU: Final = 4
# Queueing theory: latency climbs steeply past ~70% utilisation, and a rolling update or a
# lost node removes capacity; size replicas so the target load is 70% of the measured peak.
REPLICA_UTILISATION: Final = 0.7
# One replica means downtime on every node drain.
MIN_REPLICAS: Final = 2
# A single Python process rarely uses more than one core (the GIL).
# gunicorn's arbiter without preload is typically 20-30 MB: an assumption, stated where used.
MASTER_RSS_MIB: Final = 32
MAX_CPU_REQUEST_MILLI: Final = 1000
# Keep-alive must outlive the load balancer's idle timeout so the balancer closes idle
# connections first; otherwise it may send a request down a socket gunicorn is closing (502).
LB_KEEPALIVE_MARGIN_S: Final = 5
_MIB: Final = 1 << 20
_GIB: Final = 1 << 30

Value = int | float | str | bool | None


@dataclass(frozen=True)
class Choices:
    """What the user chose on the command line (the rest comes from evidence and profile)."""

    app: str = "main:app"
    bind: str | None = None  # None: the profile's bind
    worker_class: str | None = None  # None: the profile's preference
    preload: bool = False  # the user agreed to preload_app
    target_rps: float | None = None  # for replica sizing (profiles with a fixed process count)
    gunicorn_version: str | None = None  # installed gunicorn; None when unknown
    db_max_connections: int | None = None  # the database's max_connections
    db_pool_size: int | None = None  # connections each worker's pool may open (pool + overflow)
    db_reserved: int = DB_RESERVED_CONNECTIONS  # slots the database keeps for others (admin, migrations)
    stack: AppEnv | None = None  # the app's environment: decides which printed commands work
    objective: Objective | None = None  # --slo: size for this at target_rps (workers, or replicas)
    mix: Mapping[str, float] | None = None  # --mix: route name -> weight; None: equal shares


@dataclass(frozen=True)
class Setting:
    """One gunicorn setting: its name in gunicorn.conf.py, its value and the evidence for it."""

    name: str
    value: Value
    why: str


@dataclass(frozen=True)
class Advice:
    """Something to do that is not a gunicorn setting; `code` is Python to paste."""

    text: str
    code: tuple[str, ...] = ()
    only_for: str | None = None  # the one server it concerns ("gunicorn"); None: the app, any server


@dataclass(frozen=True)
class ReplicaSizing:
    """Replicas and resource requests for a fixed-process-per-pod deployment."""

    target_rps: float
    per_worker_rps: float
    basis: str  # which route and level the throughput came from
    replicas: int
    cpu_request_milli: int | None  # None when the server's CPU was not measured
    memory_request_mib: int
    why: str


@dataclass(frozen=True)
class Plan:
    """Everything `recommend` decided, ready for any renderer."""

    profile: str
    profile_description: str
    app: str
    inputs: tuple[str, ...]  # what the plan was computed from, one line each
    settings: tuple[Setting, ...]
    workers: int
    worker_formula: str
    rule_of_thumb: int
    rule_of_thumb_note: str
    limiter_tokens: int | None  # AnyIO thread tokens to set, when threadpool-bound routes need more
    advice: tuple[Advice, ...]
    unknowns: tuple[str, ...]
    replicas: ReplicaSizing | None
    # Workers per effective CPU, for a config that re-checks the CPU limit at start-up; None when the
    # profile fixes the count (it does not follow the CPUs).
    workers_per_cpu: float | None = None
    stack: AppEnv | None = None  # the server stack of the app's environment, when it was read
    mix_sizing: MixSizing | None = None  # the whole-mix model's figures, when the probe measured CPU

    def setting(self, name: str) -> Setting:
        """The setting called `name` (KeyError when the plan has none)."""
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)


# ---------------------------------------------------------------------------------------
# Reading the evidence


def _levels(report: ProbeReport | None) -> Iterable[tuple[Endpoint, Level]]:
    """Levels that are evidence: the client was not the limit."""
    if report is None:
        return
    for e in report.endpoints:
        for lv in e.levels:
            if not lv.client_saturated:
                yield e, lv


def _route(e: Endpoint) -> str:
    return f"{e.method} {e.path}"


def _classes(report: ProbeReport | None) -> dict[EndpointClass, list[Endpoint]]:
    """Routes by class, from verdicts sure enough to size a deployment on."""
    out: dict[EndpointClass, list[Endpoint]] = {}
    if report is not None:
        for e in report.endpoints:
            if e.verdict is not None and e.verdict.confidence >= MIN_PLAN_CONFIDENCE:
                out.setdefault(e.verdict.cls, []).append(e)
    return out


def _set_aside(report: ProbeReport) -> list[Endpoint]:
    """Judged routes whose verdict is too unsure to size workers from (inconclusive ones are named apart)."""
    return [
        e
        for e in report.endpoints
        if e.verdict is not None
        and e.verdict.cls is not EndpointClass.INCONCLUSIVE
        and e.verdict.confidence < MIN_PLAN_CONFIDENCE
    ]


def _max_rss(report: ProbeReport | None) -> int | None:
    values = [max(lv.server_rss_bytes) for _, lv in _levels(report) if lv.server_rss_bytes]
    return max(values) if values else None


def _slowest(report: ProbeReport | None) -> tuple[float, str] | None:
    """(max latency in ms, where) over every evidence level."""
    best: tuple[float, str] | None = None
    for e, lv in _levels(report):
        if lv.latency_ms is not None and (best is None or lv.latency_ms.max > best[0]):
            best = (lv.latency_ms.max, f"{_route(e)} at concurrency {lv.concurrency}")
    return best


def _probe_workers(report: ProbeReport) -> int:
    return report.server.workers or 1


def _max_cpu_per_worker_avg(report: ProbeReport | None) -> float | None:
    """The busiest level's server CPU spread over all the probe's workers (busy or not)."""
    if report is None:
        return None
    values = [
        lv.server_cpu_cores / _probe_workers(report) for _, lv in _levels(report) if lv.server_cpu_cores
    ]
    return max(values) if values else None


def _mib(n: float) -> str:
    return f"{n / _MIB:.0f} MiB"


def _size(n: float) -> str:
    return f"{n / _GIB:.1f} GiB" if n >= _GIB else _mib(n)


def _cpus(x: float) -> str:
    return f"{x:g} CPU" + ("" if x == 1 else "s")


def _paths(eps: list[Endpoint]) -> str:
    names = [_route(e) for e in eps[:3]]
    return ", ".join(names) + (f" and {len(eps) - 3} more" if len(eps) > 3 else "")


# ---------------------------------------------------------------------------------------
# Workers


def cpu_processes(effective: float, per_cpu: float) -> int:
    """Processes for CPU-limited routes: effective CPUs x per_cpu, rounded half up, at least 1.

    A 1.5-CPU quota lets two processes run at once for 75% of each period, so the second
    process turns the spare half CPU into throughput; 1.2 CPUs would only get the second
    process throttled (CFS stalls every thread of a cgroup that used up its quota) for
    0.2 CPU of gain, at the cost of a whole process's memory.
    """
    return max(1, math.floor(effective * per_cpu + 0.5))


@dataclass(frozen=True)
class _WorkerDecision:
    workers: int
    formula: str
    why: str
    notes: tuple[Advice, ...]


def _block_hiding_workers(effective: float, blocking: list[Endpoint]) -> int:
    """Workers until loop-blocking routes' own CPU fills the machine, from their measured CPU."""
    measured = [
        float(v)
        for e in blocking
        if e.verdict is not None and (v := e.verdict.evidence.server_cpu_per_busy_worker) is not None
    ]
    per_worker = max([*measured, 1 / BLOCKED_WORKERS_PER_CPU])
    return max(1, math.ceil(effective / per_worker))


def _cpu_limited_want(
    eff: float, cpu_n: int, cpu_text: str, limited: list[Endpoint], blocking: list[Endpoint]
) -> tuple[int, str, tuple[Advice, ...]]:
    """CPU-limited routes want one process per CPU, unless loop-blocking ones gain from more."""
    basis = f"CPU-limited routes ({_paths(limited)}): {cpu_text}"
    hide = _block_hiding_workers(eff, blocking) if blocking else 0
    if hide <= cpu_n:
        return cpu_n, basis, ()
    note = Advice(
        f"{hide} workers only hide the loop-blocking route(s) ({_paths(blocking)}): once they"
        f" no longer block the event loop, {cpu_n} worker(s) ({cpu_text}) do the same work"
        " with less memory. Regenerate this file after the fix."
    )
    basis = (
        f"loop-blocking routes ({_paths(blocking)}) serialise each worker while using little"
        f" CPU, so each extra worker adds throughput until their CPU fills {_cpus(eff)}:"
        f" ceil({eff:g} / max(measured cores per busy worker, 1/{BLOCKED_WORKERS_PER_CPU}))"
        f" = {hide}"
    )
    return hide, basis, (note,)


def _wanted_workers(
    host: HostFacts, report: ProbeReport | None, profile: Profile
) -> tuple[int, str, tuple[Advice, ...]]:
    """What the routes want, before the profile's bounds and memory: (workers, basis, notes)."""
    eff = float(host.cpu.effective)
    pol = profile.workers
    by_cls = _classes(report)
    cpu_n = cpu_processes(eff, pol.per_cpu)
    cpu_text = (
        f"{pol.per_cpu:g} per effective CPU x {_cpus(eff)} ({host.cpu.source}), rounded half up = {cpu_n}"
    )
    if pol.fixed is not None:
        return pol.fixed, f"profile {profile.name} fixes {pol.fixed} per instance; scale with replicas", ()
    if not by_cls or set(by_cls) <= {EndpointClass.INCONCLUSIVE}:
        return cpu_n, f"route classes unknown, so the CPU rule: {cpu_text}", ()
    if limited := [e for c in CPU_LIMITED for e in by_cls.get(c, [])]:
        return _cpu_limited_want(eff, cpu_n, cpu_text, limited, by_cls.get(EndpointClass.LOOP_BLOCKING, []))
    if pooled := by_cls.get(EndpointClass.POOL_BOUND, []):
        more = _block_hiding_workers(eff, pooled)
        want = max(cpu_n, more)
        return (
            want,
            f"pool-bound routes ({_paths(pooled)}) hold a pool per worker and little CPU, so each "
            "worker adds a "
            f"pool's worth of throughput until their CPU fills {_cpus(eff)}: ceil({eff:g} / "
            "max(measured cores "
            f"per busy worker, 1/{BLOCKED_WORKERS_PER_CPU})) = {more}, at least the CPU rule's {cpu_n}",
            (),
        )
    busy = _max_cpu_per_worker_avg(report)
    if busy is not None and busy >= CPU_SATURATED_PER_WORKER:
        return (
            cpu_n,
            f"I/O-bound routes, but a worker used {busy:.2f} cores at the busiest level: {cpu_text}",
            (),
        )
    # One event loop holds thousands of waiting requests; processes only add CPU.
    want = max(1, math.ceil(cpu_n / 2))
    used = f"measured {busy:.2f} cores per worker at most" if busy is not None else "CPU not measured"
    return want, f"only I/O-bound or threadpool-bound routes ({used}): ceil({cpu_n} / 2) = {want}", ()


def _worker_rss(report: ProbeReport | None, profile: Profile) -> tuple[int, str]:
    rss = _max_rss(report)
    used = rss if rss is not None else profile.assumed_worker_rss_mib * _MIB
    source = "(largest measured RSS)" if rss is not None else "(ASSUMED: no RSS was measured)"
    return used, f"{_mib(used)} per worker {source}"


def _connection_cap(choices: Choices) -> tuple[int, str] | None:
    """Workers (per instance) the database's connections allow, with the arithmetic."""
    if choices.db_max_connections is None or choices.db_pool_size is None:
        return None
    usable = choices.db_max_connections - choices.db_reserved
    cap = usable // choices.db_pool_size
    text = (
        f"database: ({choices.db_max_connections} max_connections - {choices.db_reserved} reserved) / "
        f"{choices.db_pool_size} per worker's pool = {cap}"
    )
    return cap, text


def _decide_workers(
    host: HostFacts, report: ProbeReport | None, profile: Profile, choices: Choices = Choices()
) -> _WorkerDecision:
    """Workers: what the routes want, within the profile's bounds, never more than memory holds."""
    pol = profile.workers
    want, basis, notes = _wanted_workers(host, report, profile)
    formula = basis
    n = want
    if pol.fixed is None:
        n = min(max(want, pol.min), pol.max)
        if n != want:
            formula += f"; profile {profile.name} bounds {pol.min}..{pol.max} -> {n}"
    rss_used, rss_text = _worker_rss(report, profile)
    mem = host.memory.effective_bytes
    mem_cap = math.floor(mem * (1 - profile.memory_headroom) / rss_used)
    formula += (
        f"; memory allows floor({_size(mem)} x (1 - {profile.memory_headroom:g}) / "
        f"{_mib(rss_used)}) = {mem_cap}"
    )
    if mem_cap < n and (pol.fixed is not None or mem_cap < 1):
        notes += (
            Advice(
                f"{n} worker(s) of {_mib(rss_used)} do not fit in {_size(mem)} with "
                f"{profile.memory_headroom:.0%} headroom: raise the memory limit or cut the app's footprint."
            ),
        )
        n = n if pol.fixed is not None else 1
    elif mem_cap < n:
        n = mem_cap
        formula += f" -> {n}"
    db = _connection_cap(choices)
    if db is not None and pol.fixed is None:
        cap, text = db
        formula += f"; {text}"
        if cap < 1:
            notes += (
                Advice(f"{text}: not even one worker's pool fits; shrink the pool or raise max_connections."),
            )
        elif cap < n:
            n = cap
            formula += f" -> {n}"
    formula += f" => {n} worker" + ("" if n == 1 else "s")
    return _WorkerDecision(n, formula, f"{basis}; memory: {rss_text}, {mem_cap} fit.", notes)


def _rule_of_thumb(host: HostFacts, workers: int, rss: int) -> tuple[int, str]:
    logical = host.cpu.logical
    n = rule_of_thumb_workers(logical)
    if n == workers:
        return n, f"2 x {logical} + 1 = {n}: the same as this plan."
    extra = n - workers
    text = f"2 x {logical} logical CPUs + 1 = {n}"
    if float(host.cpu.effective) < logical:
        text += f" (it counts the host's {logical} CPUs, not the {_cpus(float(host.cpu.effective))} allowed)"
    if extra > 0:
        text += (
            f": {extra} more processes and ~{_mib(extra * rss)} more memory than this plan, for no more CPU "
            "to run them on (`fastapi-tune verify --sweep` measures both on your app)."
        )
    else:
        text += f": {-extra} fewer than this plan."
    return n, text


# ---------------------------------------------------------------------------------------
# Other settings


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def _worker_class(profile: Profile, choices: Choices) -> tuple[str, str, list[str]]:
    """(gunicorn worker class, why, unknowns)."""
    asked = choices.worker_class
    if asked in (DEPRECATED_WORKER, "uvicorn"):
        raise UsageError(
            f"worker class {asked!r}: uvicorn.workers.UvicornWorker is deprecated since uvicorn 0.30; "
            f"use 'uvicorn-worker' ({UVICORN_WORKER}) or 'asgi'"
        )
    if asked not in (None, "uvicorn-worker", UVICORN_WORKER, ASGI_WORKER):
        raise UsageError(f"worker class {asked!r}: expected 'uvicorn-worker' or 'asgi'")
    want_asgi = asked == ASGI_WORKER or (asked is None and profile.worker_class == "asgi")
    source = "you asked for it" if asked is not None else f"profile {profile.name} prefers it"
    if not want_asgi:
        return (
            UVICORN_WORKER,
            f"uvicorn under gunicorn's process management ({source}); the uvicorn-worker package "
            "replaces the deprecated uvicorn.workers.UvicornWorker.",
            [],
        )
    version = choices.gunicorn_version
    if version is not None and _version_tuple(version) >= ASGI_MIN_GUNICORN:
        return ASGI_WORKER, f"gunicorn {version}'s native ASGI worker ({source}; needs gunicorn >= 24).", []
    if asked == ASGI_WORKER:
        raise UsageError(
            f"worker class 'asgi' needs gunicorn >= 24 (installed: {version or 'unknown'}); "
            "upgrade gunicorn or use 'uvicorn-worker'"
        )
    return (
        UVICORN_WORKER,
        f"profile {profile.name} prefers gunicorn's native 'asgi' worker, but it needs gunicorn >= 24 "
        f"(installed: {version or 'unknown'}), so uvicorn-worker.",
        [] if version else ["gunicorn version: unknown, so the native 'asgi' worker was not chosen"],
    )


def _limiter_tokens(report: ProbeReport, eps: list[Endpoint], workers: int) -> tuple[int, str]:
    """Thread tokens per worker for threadpool-bound routes, and the reasoning."""
    peak = max((lv.concurrency for e in eps for lv in e.levels), default=THREAD_TOKENS_PER_WORKER)
    # The probe drove `peak` concurrent requests; each of this plan's workers should hold its share.
    tokens = suggested_thread_tokens(peak, workers)
    why = (
        f"{_paths(eps)} plateaued at AnyIO's default of {THREAD_TOKENS_PER_WORKER} threads per worker "
        f"(probe server: {_probe_workers(report)} worker(s)); the probe drove {peak} concurrent requests, "
        f"so {tokens.why} tokens per worker. More threads than your database pool has connections only "
        "move the queue there."
    )
    return tokens.tokens, why


def _replicas(
    report: ProbeReport | None, target: float, workers: int, rss: int, profile: Profile
) -> tuple[ReplicaSizing | None, list[str]]:
    if report is None:
        return None, [f"replicas for {target:g} req/s: no probe report, so no measured per-worker throughput"]
    pw = _probe_workers(report)
    best_per_route: list[tuple[float, Endpoint, Level]] = []
    for e in report.endpoints:
        if e.verdict is not None and e.verdict.cls == EndpointClass.INCONCLUSIVE:
            continue
        levels = [lv for lv in e.levels if not lv.client_saturated and lv.throughput_rps > 0]
        if levels:
            top = max(levels, key=lambda lv: lv.throughput_rps)
            best_per_route.append((top.throughput_rps / pw, e, top))
    if not best_per_route:
        return None, [f"replicas for {target:g} req/s: no route had a usable throughput measurement"]
    # The slowest route's peak: as if all traffic were that route. Conservative, since the
    # request mix is not known; a route that is rarely called can be excluded with -e.
    per_worker, e, lv = min(best_per_route, key=lambda t: t[0])
    per_pod = per_worker * workers
    replicas = max(MIN_REPLICAS, math.ceil(target / (per_pod * REPLICA_UTILISATION)))
    cpu_milli: int | None = None
    cpu_text = "CPU request: unknown (the server's CPU was not measured)"
    if lv.server_cpu_cores is not None and lv.throughput_rps > 0:
        cpu_per_request = lv.server_cpu_cores / lv.throughput_rps
        raw = cpu_per_request * target / replicas * 1000
        cpu_milli = min(MAX_CPU_REQUEST_MILLI * workers, max(100, math.ceil(raw / 50) * 50))
        cpu_text = (
            f"CPU request: {cpu_per_request * 1000:.2f} ms CPU per request x {target / replicas:.0f} req/s "
            "per pod "
            f"= {raw:.0f}m, rounded to {cpu_milli}m (one Python process rarely uses more than 1000m)"
        )
    mem_mib = pod_memory_mib(rss, workers, profile)
    why = (
        f"slowest route's peak: {_route(e)} at {lv.throughput_rps:.1f} req/s with {pw} worker(s) "
        f"= {per_worker:.1f} req/s per worker; {target:g} / ({per_pod:.1f} x {REPLICA_UTILISATION:g}) "
        f"-> {replicas} replicas (at least {MIN_REPLICAS}); {cpu_text}; memory request: "
        f"({_mib(rss)} x {workers} + {MASTER_RSS_MIB} MiB master, assumed) / (1 - "
        f"{profile.memory_headroom:g}) "
        f"= {mem_mib} MiB, rounded up to 16."
    )
    sizing = ReplicaSizing(
        target_rps=target,
        per_worker_rps=round(per_worker, 3),
        basis=f"{_route(e)} at concurrency {lv.concurrency}",
        replicas=replicas,
        cpu_request_milli=cpu_milli,
        memory_request_mib=mem_mib,
        why=why,
    )
    return sizing, []


def pod_memory_mib(rss: int, workers: int, profile: Profile) -> int:
    """Memory for one instance: its workers and the master, within the profile's headroom, in 16 MiB steps."""
    return math.ceil((rss * workers + MASTER_RSS_MIB * _MIB) / (1 - profile.memory_headroom) / _MIB / 16) * 16


def worker_rss(report: ProbeReport | None, profile: Profile) -> int:
    """Bytes one worker takes: the largest measured RSS, else the profile's assumption."""
    return _worker_rss(report, profile)[0]


def _control_socket(profile: Profile, choices: Choices) -> Decided:
    """gunicorn's control socket off in containers, where it fails and nobody can reach it."""
    version = choices.gunicorn_version
    if not runs_in_container(profile) or (
        version is not None and _version_tuple(version) < CONTROL_SOCKET_MIN_GUNICORN
    ):
        return Decided()
    why = (
        "off: gunicorn >= 25.1 opens a control socket for gunicornc in $XDG_RUNTIME_DIR or ~/.gunicorn at"
        " every start; in a container HOME is often read-only (it logs an error each time) and nothing"
        " outside the container can reach the socket anyway."
    )
    if version is None:
        why += " gunicorn's version is unknown; versions before 25.1 ignore this name."
    return Decided(settings=(Setting("control_socket_disable", True, why),))


# ---------------------------------------------------------------------------------------
# One decider per setting (or group): each returns its settings, advice and unknowns.


@dataclass(frozen=True)
class Decided:
    """What one decider contributes to the plan."""

    settings: tuple[Setting, ...] = ()
    advice: tuple[Advice, ...] = ()
    unknowns: tuple[str, ...] = ()


def _inputs(host: HostFacts, report: ProbeReport | None, profile: Profile) -> tuple[tuple[str, ...], Decided]:
    """What the plan is computed from, and what that leaves unknown."""
    inputs = (
        f"host: {_cpus(float(host.cpu.effective))} effective ({host.cpu.source}; "
        f"{host.cpu.logical} logical), "
        f"{_size(host.memory.effective_bytes)} memory ({host.memory.source})",
        f"profile: {profile.name} ({profile.source})",
    )
    if report is None:
        return (*inputs, "probe report: none"), Decided(
            unknowns=(
                "route classes: no probe report, so the worker count follows the CPU rule (one "
                "per effective CPU)",
                f"per-worker memory: assumed {profile.assumed_worker_rss_mib} MiB (profile), not measured",
                "slowest request: not measured, so timeouts are the profile's floor",
                "thread-pool need: not measured; AnyIO's default of 40 threads per worker applies",
            )
        )
    by_cls = _classes(report)
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_cls.items()))
    unknowns: list[str] = []
    measured_eff = report.host.cpu.effective if report.host is not None else None
    if measured_eff is None:
        unknowns.append(
            f"the load came from {report.source}: the server's host was not observed, so this plan is for "
            f"{_cpus(float(host.cpu.effective))} (pass --cpus/--memory for the target's)"
        )
    elif measured_eff != host.cpu.effective:
        unknowns.append(
            f"the probe ran on a host with {_cpus(float(measured_eff))}; this plan is for "
            f"{_cpus(float(host.cpu.effective))}: per-worker figures carry over, totals may not"
        )
    if _max_rss(report) is None:
        unknowns.append(
            "per-worker memory: not measured (server not local?), assumed "
            f"{profile.assumed_worker_rss_mib} MiB"
        )
    if report.interrupted:
        unknowns.append("the probe was interrupted: some routes have fewer levels than planned")
    for e in _set_aside(report):
        assert e.verdict is not None
        unknowns.append(
            f"{_route(e)}: set aside, {e.verdict.cls} at {e.verdict.confidence:.0%} confidence is below the"
            f" {MIN_PLAN_CONFIDENCE:.0%} a worker count needs; probe again on a quieter host or "
            "with longer levels"
        )
    inconclusive = [e for e in report.endpoints if e.verdict and e.verdict.cls is EndpointClass.INCONCLUSIVE]
    if inconclusive:
        unknowns.append(f"inconclusive routes ({_paths(inconclusive)}) did not inform the worker count")
    line = f"probe report: {report.target}, {len(report.endpoints)} route(s) ({counts or 'unclassified'})"
    return (*inputs, line), Decided(unknowns=tuple(unknowns))


def _app_and_bind(profile: Profile, choices: Choices) -> Decided:
    bind = choices.bind or profile.bind
    if choices.bind:
        why = "you chose it."
    elif bind.startswith("127."):
        why = (
            "loopback: a reverse proxy on the same host forwards to it, and the server stays off the network."
        )
    else:
        why = (
            "all interfaces: port publishing and Services forward to the container's interface, not its "
            "loopback."
        )
    return Decided(
        settings=(
            Setting(
                "wsgi_app",
                choices.app,
                "the application gunicorn loads (so `gunicorn -c FILE` needs no argument).",
            ),
            Setting("bind", bind, why),
        )
    )


def _worker_class_setting(profile: Profile, choices: Choices) -> Decided:
    wc, why, unknown = _worker_class(profile, choices)
    return Decided(settings=(Setting("worker_class", wc, why),), unknowns=tuple(unknown))


_HEARTBEAT: Final = (
    "The arbiter kills a worker whose heartbeat stops that long: for async workers, a blocked event "
    "loop or a slow start-up (imports, model loading), not a slow awaited request."
)


def _timeouts(report: ProbeReport | None, profile: Profile) -> Decided:
    """timeout from the slowest request (x the profile's factor); graceful_timeout long enough for it."""
    slowest = _slowest(report)
    tp = profile.timeout
    if slowest is None:
        timeout = min(max(30, tp.min), tp.max)
        t_why = (
            "no latency measured: gunicorn's default 30 s within the profile's "
            f"{tp.min}..{tp.max}. {_HEARTBEAT}"
        )
        graceful = profile.graceful_timeout
        g_why = f"profile {profile.name}; no latency measured to check it against."
    else:
        ms, where = slowest
        raw = math.ceil(ms / 1000 * tp.factor)
        timeout = min(max(raw, tp.min), tp.max)
        t_why = (
            f"slowest measured request {ms:.0f} ms ({where}) x {tp.factor:g} = "
            f"{ms / 1000 * tp.factor:.1f} s, "
            f"rounded up to {raw} s, clamped to {tp.min}..{tp.max}. {_HEARTBEAT}"
        )
        need = math.ceil(ms / 1000) + 1
        graceful = max(profile.graceful_timeout, need)
        g_why = (
            f"profile {profile.name} says {profile.graceful_timeout} s; the slowest request ({ms:.0f} ms) "
            f"needs {need} s to finish on restart."
        )
    advice: tuple[Advice, ...] = ()
    if profile.stop_grace_period is not None:
        g_why += f" It must end before the orchestrator's SIGKILL at {profile.stop_grace_period} s."
        if graceful >= profile.stop_grace_period:
            advice = (
                Advice(
                    f"graceful_timeout is {graceful} s but the orchestrator kills at "
                    f"{profile.stop_grace_period} s: "
                    "raise its grace period (stop_grace_period / terminationGracePeriodSeconds) to "
                    f"{graceful + 5} s."
                ),
            )
    return Decided(
        settings=(Setting("timeout", timeout, t_why), Setting("graceful_timeout", graceful, g_why)),
        advice=advice,
    )


def _keepalive(profile: Profile) -> Decided:
    if not (profile.behind_load_balancer and profile.lb_idle_timeout is not None):
        why = (
            f"profile {profile.name}: idle connections held {profile.keepalive} s (gunicorn's default is 2)."
        )
        return Decided(settings=(Setting("keepalive", profile.keepalive, why),))
    keepalive = max(profile.keepalive, profile.lb_idle_timeout + LB_KEEPALIVE_MARGIN_S)
    why = (
        f"behind a load balancer with a {profile.lb_idle_timeout} s idle timeout: keep connections "
        f"{LB_KEEPALIVE_MARGIN_S} s longer so the balancer closes first (else it may reuse a "
        "closing socket: 502)."
    )
    proxy = Advice(
        "Behind a proxy, set forwarded_allow_ips to the balancer's addresses (or '*' when only it can "
        "reach the pod) so request.client and the scheme are the caller's."
    )
    return Decided(settings=(Setting("keepalive", keepalive, why),), advice=(proxy,))


def _recycling(profile: Profile) -> Decided:
    if profile.max_requests:
        mr_why = (
            f"recycle each worker after ~{profile.max_requests} requests to bound slow memory leaks "
            f"(profile {profile.name})."
        )
        j_why = (
            f"spread recycling by up to {profile.max_requests_jitter} requests so workers "
            "never restart together."
        )
    else:
        mr_why = f"no recycling (profile {profile.name}): a lone worker restarting stalls the instance."
        j_why = "no recycling, so no jitter."
    return Decided(
        settings=(
            Setting("max_requests", profile.max_requests, mr_why),
            Setting("max_requests_jitter", profile.max_requests_jitter, j_why),
        )
    )


def _server_files(host: HostFacts, profile: Profile) -> Decided:
    """backlog, the heartbeat directory and the access log."""
    settings = [
        Setting(
            "backlog",
            profile.backlog,
            f"connections queued while all workers are busy (profile {profile.name}); the kernel caps it at "
            "net.core.somaxconn.",
        )
    ]
    unknowns: tuple[str, ...] = ()
    if host.dev_shm:
        settings.append(
            Setting(
                "worker_tmp_dir",
                "/dev/shm",
                "/dev/shm is a writable tmpfs here: heartbeat writes never wait on a disk or an overlay "
                "filesystem (a stalled write looks like a dead worker).",
            )
        )
    else:
        unknowns = ("no writable /dev/shm on this host: worker heartbeats go to the default temp dir",)
    if profile.access_log is None:
        al_why = f"off (profile {profile.name}): the reverse proxy already logs each request."
    elif profile.access_log == "-":
        al_why = f"stdout (profile {profile.name}): the container runtime collects it."
    else:
        al_why = f"profile {profile.name}."
    settings.append(Setting("accesslog", profile.access_log, al_why))
    return Decided(settings=tuple(settings), unknowns=unknowns)


def _preload(workers: int, profile: Profile, choices: Choices) -> Decided:
    if workers < 2:
        preload, why = False, "one worker: nothing to share copy-on-write."
    elif profile.preload == "never":
        preload, why = False, f"profile {profile.name} never preloads."
    elif not choices.preload:
        preload = False
        why = (
            f"off: preloading imports the app once in the master and shares it with {workers} workers "
            "copy-on-write, but connections or threads opened at import time break after fork; "
            "enable it with --preload once you have checked that."
        )
    else:
        preload = True
        why = (
            f"you agreed: {workers} workers share the imported app copy-on-write instead of each loading "
            "it; code changes now need a full restart, not a HUP."
        )
    return Decided(settings=(Setting("preload_app", preload, why),))


def _route_advice(by_cls: dict[EndpointClass, list[Endpoint]]) -> Decided:
    """What the serialising routes need fixed in the code (more workers only hide it)."""
    advice: list[Advice] = []
    for cls, verb in (
        (EndpointClass.STALLED, "stalls under load"),
        (EndpointClass.LOOP_BLOCKING, "blocks the event loop"),
        (EndpointClass.SERIALIZED, "serialises requests"),
    ):
        for e in by_cls.get(cls, []):
            assert e.verdict is not None
            text = f"{_route(e)} {verb}: {e.verdict.summary}"
            if cls == EndpointClass.LOOP_BLOCKING:
                text += " Fix the route (make it `def`, or await an async client); more workers only hide it."
            advice.append(Advice(" ".join([text, *e.verdict.advice])))
    return Decided(advice=tuple(advice))


def _uvicorn_worker_note(worker_class: str, graceful: int) -> Decided:
    if worker_class != UVICORN_WORKER:
        return Decided()
    return Decided(
        advice=(
            Advice(
                "uvicorn-worker does not pass worker_connections (-> limit_concurrency) or graceful_timeout "
                "(-> timeout_graceful_shutdown) to uvicorn; subclass it to set them, and use "
                "-k myapp.workers.Worker:",
                (
                    "from uvicorn_worker import UvicornWorker",
                    "class Worker(UvicornWorker):",
                    "    CONFIG_KWARGS = "
                    f"{{**UvicornWorker.CONFIG_KWARGS, 'timeout_graceful_shutdown': {graceful}}}",
                    "    # add 'limit_concurrency': N to answer 503 at once beyond N connections "
                    "instead of queueing",
                ),
                only_for="gunicorn",
            ),
        )
    )


def _replica_plan(
    report: ProbeReport | None, profile: Profile, choices: Choices, workers: int
) -> tuple[ReplicaSizing | None, Decided]:
    if choices.target_rps is None:
        return None, Decided()
    if profile.workers.fixed is None:
        if choices.objective is not None:  # the target sized the workers (_mix_workers)
            return None, Decided()
        return None, Decided(
            unknowns=(
                f"target {choices.target_rps:g} req/s: replica sizing applies to profiles with a "
                "fixed worker "
                "count per instance (e.g. kubernetes)",
            )
        )
    rss, _ = _worker_rss(report, profile)
    replicas, unknown = _replicas(report, choices.target_rps, workers, rss, profile)
    db = _connection_cap(choices)
    if replicas is not None and db is not None:
        fit = db[0] // max(workers, 1)
        if fit < replicas.replicas:
            unknown = [
                *unknown,
                f"the target needs {replicas.replicas} replicas but the database's connections allow {fit} "
                f"({db[1]} worker pools, {workers} per replica): raise max_connections, shrink "
                "each pool, or put "
                "a pooler (PgBouncer) in front of the database",
            ]
    advice: tuple[Advice, ...] = ()
    if replicas is not None:
        advice = (
            Advice(
                "Kubernetes: set no CPU limit below 1 core: CFS throttling stalls the worker's event "
                "loop, heartbeats included, for the rest of each 100 ms period."
            ),
        )
    return replicas, Decided(advice=advice, unknowns=tuple(unknown))


def _limiter(
    report: ProbeReport | None, by_cls: dict[EndpointClass, list[Endpoint]], workers: int
) -> tuple[int | None, Decided]:
    eps = by_cls.get(EndpointClass.THREADPOOL_BOUND)
    if report is None or not eps:
        return None, Decided()
    tokens, why = _limiter_tokens(report, eps, workers)
    advice = Advice(
        f"Raise AnyIO's thread limiter to {tokens} per worker, in the app's lifespan: {why}",
        (
            "import anyio.to_thread",
            f"anyio.to_thread.current_default_thread_limiter().total_tokens = {tokens}",
        ),
    )
    return tokens, Decided(advice=(advice,))


def _connections(by_cls: dict[EndpointClass, list[Endpoint]], choices: Choices, workers: int) -> Decided:
    """The database connection budget: stated when known, asked for when pool-bound routes need it."""
    db = _connection_cap(choices)
    pooled = by_cls.get(EndpointClass.POOL_BOUND, [])
    if db is not None:
        assert choices.db_pool_size is not None
        used = workers * choices.db_pool_size
        return Decided(
            advice=(
                Advice(
                    f"Database connections: {workers} worker(s) x {choices.db_pool_size} = {used} "
                    "per instance; "
                    f"{db[1]} workers fit in all. Every replica and every other client counts "
                    "against the same "
                    "max_connections."
                ),
            )
        )
    if not pooled:
        return Decided()
    sizes = ", ".join(
        f"{_route(e)} ~{e.verdict.evidence.pool_size_per_worker:g}"
        for e in pooled
        if e.verdict and e.verdict.evidence.pool_size_per_worker is not None
    )
    return Decided(
        unknowns=(
            f"database connections: pool-bound routes ({sizes} per worker) open a pool per worker; check "
            "workers x pool size x replicas <= max_connections - reserved slots, or pass "
            "--db-max-connections "
            "N --db-pool-size M to cap the workers",
        )
    )


def _merge(parts: Sequence[Decided]) -> Decided:
    return Decided(
        settings=tuple(s for p in parts for s in p.settings),
        advice=tuple(a for p in parts for a in p.advice),
        unknowns=tuple(u for p in parts for u in p.unknowns),
    )


def _worker_ceiling(host: HostFacts, report: ProbeReport | None, profile: Profile, choices: Choices) -> int:
    """The most workers this host holds: memory, the database's connections, the profile, 4 per CPU."""
    eff = float(host.cpu.effective)
    rss, _ = _worker_rss(report, profile)
    cap = min(
        profile.workers.max,
        math.floor(host.memory.effective_bytes * (1 - profile.memory_headroom) / rss),
        max(1, math.ceil(eff * BLOCKED_WORKERS_PER_CPU)),
    )
    db = _connection_cap(choices)
    return max(1, min(cap, db[0]) if db is not None else cap)


def _shortfall(sizing: MixSizing, target: float, workers: int) -> Advice:
    """No worker count on this host meets the objective at the target: by how much, and what would."""
    assert sizing.objective is not None
    cap = sizing.capacity_with(workers) or 0.0
    goal = f"{sizing.objective.describe()} at {target:g} req/s"
    if cap <= 0:
        return Advice(
            f"No configuration on this host meets {goal}, at any rate: the slowest route's own latency"
            f" ({sizing.mix.base_ms:.0f} ms at concurrency 1) already breaks a bound. Make that route"
            " faster or relax the objective; more workers or replicas do not help."
        )
    hosts = math.ceil(target / cap)
    return Advice(
        f"No configuration on this host ({_cpus(sizing.cpus)}, up to {sizing.max_workers} workers) is"
        f" predicted to meet {goal}: the best, {workers} workers, holds it up to ~{cap:.0f} req/s, short"
        f" by {target - cap:.0f} req/s ({(target - cap) / target:.0%} of the target). Spread the load over"
        f" {hosts} instances of this size, or make the routes that hold the loop or the CPU cheaper."
    )


def _objective_workers(sizing: MixSizing, wd: _WorkerDecision, target: float) -> tuple[int, str, Decided]:
    """Workers for an objective at a target rate: the fewest predicted to meet it, else the best."""
    assert sizing.objective is not None
    goal = f"{sizing.objective.describe()} at {target:g} req/s"
    if sizing.workers is not None:
        cap = sizing.capacity_with(sizing.workers) or 0.0
        text = (
            f"the objective {goal}: the fewest workers the mix model predicts to meet it = {sizing.workers}"
            f" (they hold it up to ~{cap:.0f} req/s; `verify --rate {target:g} --slo ...` measures it)"
        )
        return sizing.workers, text, Decided()
    best = sizing.best_workers or wd.workers
    text = f"no worker count is predicted to meet {goal}; the one that comes closest = {best}"
    return best, text, Decided(advice=(_shortfall(sizing, target, best),))


def _mix_workers(
    host: HostFacts, report: ProbeReport | None, profile: Profile, choices: Choices, wd: _WorkerDecision
) -> tuple[_WorkerDecision, MixSizing | None, Decided]:
    """Workers from a model of the whole mix (mixmodel.py): for an objective at a target rate, and
    so that loop-blocking routes' extra workers stop where the CPU the rest of the mix needs is used."""
    objective, target = choices.objective, choices.target_rps
    if report is None:
        missing = ("the objective: no probe report, so no mix to model (run `fastapi-tune probe` first)",)
        return wd, None, Decided(unknowns=missing if objective is not None else ())
    mix, unknown = mix_of_report(report, choices.mix)
    if mix is None:
        note = "the mix model: no route had server CPU measured (a remote or imported probe)"
        return wd, None, Decided(unknowns=(*unknown, note) if objective is not None else unknown)
    eff = float(host.cpu.effective)
    if profile.workers.fixed is not None:  # replicas carry the load: see _objective_replicas
        pod = min(eff, float(profile.workers.fixed))
        return wd, size_for_mix(mix, pod, profile.workers.fixed, objective, None), Decided(unknowns=unknown)
    sizing = size_for_mix(mix, eff, _worker_ceiling(host, report, profile, choices), objective, target)
    n, text, decided = wd.workers, "", Decided(unknowns=unknown)
    if objective is not None and target is not None:
        n, text, more = _objective_workers(sizing, wd, target)
        decided = _merge((decided, more))
    elif EndpointClass.LOOP_BLOCKING in _classes(report) and sizing.throughput_workers < n:
        n = max(sizing.throughput_workers, cpu_processes(eff, profile.workers.per_cpu))
        text = (
            "but past the point where the event loops keep the CPUs busy, more workers only share"
            f" the same CPUs (the whole mix, not the blocking route alone): {n}"
        )
    if objective is not None and target is None:
        cap = sizing.capacity_with(n) or 0.0
        decided = _merge(
            (
                decided,
                Decided(
                    advice=(
                        Advice(
                            f"{n} worker(s) are predicted to meet {objective.describe()} up to"
                            f" ~{cap:.0f} req/s (the number to plan from;"
                            " `verify --slo ... --capacity` measures it)."
                        ),
                    )
                ),
            )
        )
    if n == wd.workers or not text:
        return wd, sizing, decided
    n = max(n, profile.workers.min)
    formula = f"{wd.formula}; the whole mix: {sizing.why}; {text} => {n} worker" + ("" if n == 1 else "s")
    # The note on the old count ("8 workers only hide the loop-blocking route...") no longer applies.
    notes = tuple(a for a in wd.notes if not a.text.startswith(f"{wd.workers} workers only hide"))
    if len(notes) < len(wd.notes):
        notes += (
            Advice(
                f"{n} workers partly hide the loop-blocking route(s): once they no longer block the event"
                " loop, fewer workers do the same work with less memory. Probe and regenerate after the fix."
            ),
        )
    decision = replace(wd, workers=n, formula=formula, why=f"{text}; {sizing.why}.", notes=notes)
    return decision, sizing, decided


def _objective_replicas(
    host: HostFacts, replicas: ReplicaSizing | None, sizing: MixSizing | None, choices: Choices, workers: int
) -> ReplicaSizing | None:
    """With an objective: replicas from the mix model's capacity per pod, not the slowest route's peak."""
    if replicas is None or sizing is None or choices.objective is None or choices.target_rps is None:
        return replicas
    pod = min(float(host.cpu.effective), float(workers))
    r = replicas_for_objective(sizing.mix, pod, workers, choices.objective, choices.target_rps)
    if r is None:
        why = (
            f"no pod ({workers} worker(s), {_cpus(pod)}) meets {choices.objective.describe()} at any rate:"
            f" the slowest route alone takes {sizing.mix.base_ms:.0f} ms; kept the throughput sizing:"
            f" {replicas.why}"
        )
        return replace(replicas, why=why)
    return replace(replicas, replicas=r.replicas, per_worker_rps=round(r.per_pod_rps / workers, 3), why=r.why)


# ---------------------------------------------------------------------------------------
# The plan


def make_plan(host: HostFacts, report: ProbeReport | None, profile: Profile, choices: Choices) -> Plan:
    """Decide every setting from the evidence and the profile's policy: the deciders, merged."""
    if ":" not in choices.app:
        raise UsageError(f"app {choices.app!r}: expected MODULE:ATTRIBUTE, e.g. main:app")
    by_cls = _classes(report)
    inputs, known = _inputs(host, report, profile)
    wd = _decide_workers(host, report, profile, choices)
    wd, mix_sizing, mix_advice = _mix_workers(host, report, profile, choices, wd)
    timeouts = _timeouts(report, profile)
    graceful = int(next(s.value for s in timeouts.settings if s.name == "graceful_timeout") or 0)
    worker_class = _worker_class_setting(profile, choices)
    limiter, limiter_advice = _limiter(report, by_cls, wd.workers)
    replicas, replica_advice = _replica_plan(report, profile, choices, wd.workers)
    replicas = _objective_replicas(host, replicas, mix_sizing, choices, wd.workers)
    merged = _merge(
        (
            known,
            _app_and_bind(profile, choices),
            worker_class,
            Decided(settings=(Setting("workers", wd.workers, wd.why),), advice=wd.notes),
            mix_advice,
            timeouts,
            _keepalive(profile),
            _recycling(profile),
            _server_files(host, profile),
            _preload(wd.workers, profile, choices),
            _control_socket(profile, choices),
            limiter_advice,
            _route_advice(by_cls),
            _connections(by_cls, choices, wd.workers),
            _uvicorn_worker_note(str(worker_class.settings[0].value), graceful),
            replica_advice,
        )
    )
    rot, rot_note = _rule_of_thumb(host, wd.workers, _worker_rss(report, profile)[0])
    return Plan(
        profile=profile.name,
        profile_description=profile.description,
        app=choices.app,
        inputs=inputs,
        settings=merged.settings,
        workers=wd.workers,
        worker_formula=wd.formula,
        rule_of_thumb=rot,
        rule_of_thumb_note=rot_note,
        limiter_tokens=limiter,
        advice=merged.advice,
        unknowns=merged.unknowns,
        replicas=replicas,
        workers_per_cpu=None
        if profile.workers.fixed is not None
        else round(wd.workers / float(host.cpu.effective), 3),
        stack=choices.stack,
        mix_sizing=mix_sizing,
    )
