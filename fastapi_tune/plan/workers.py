"""How many workers (and replicas): from the routes' classes, memory, the database, an objective."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fastapi_tune.core.rules import rule_of_thumb_workers
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.report import Endpoint, EndpointClass, Level, ProbeReport
from fastapi_tune.plan.evidence import (
    classes,
    cpu_processes,
    cpus,
    max_cpu_per_worker_avg,
    max_rss,
    mib,
    paths,
    probe_workers,
    size,
)
from fastapi_tune.plan.mix import MixSizing, mix_of_report, replicas_for_objective, size_for_mix
from fastapi_tune.plan.model import (
    BLOCKED_WORKERS_PER_CPU,
    CPU_LIMITED,
    CPU_SATURATED_PER_WORKER,
    MASTER_RSS_MIB,
    MAX_CPU_REQUEST_MILLI,
    MIB,
    MIN_REPLICAS,
    REPLICA_UTILISATION,
    Advice,
    Choices,
    Decided,
    ReplicaSizing,
    merge,
)
from fastapi_tune.plan.profiles import Profile


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
    basis = f"CPU-limited routes ({paths(limited)}): {cpu_text}"
    hide = _block_hiding_workers(eff, blocking) if blocking else 0
    if hide <= cpu_n:
        return cpu_n, basis, ()
    note = Advice(
        f"{hide} workers only hide the loop-blocking route(s) ({paths(blocking)}): once they"
        f" no longer block the event loop, {cpu_n} worker(s) ({cpu_text}) do the same work"
        " with less memory. Regenerate this file after the fix."
    )
    basis = (
        f"loop-blocking routes ({paths(blocking)}) serialise each worker while using little"
        f" CPU, so each extra worker adds throughput until their CPU fills {cpus(eff)}:"
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
    by_cls = classes(report)
    cpu_n = cpu_processes(eff, pol.per_cpu)
    cpu_text = (
        f"{pol.per_cpu:g} per effective CPU x {cpus(eff)} ({host.cpu.source}), rounded half up = {cpu_n}"
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
            f"pool-bound routes ({paths(pooled)}) hold a pool per worker and little CPU, so each "
            "worker adds a "
            f"pool's worth of throughput until their CPU fills {cpus(eff)}: ceil({eff:g} / "
            "max(measured cores "
            f"per busy worker, 1/{BLOCKED_WORKERS_PER_CPU})) = {more}, at least the CPU rule's {cpu_n}",
            (),
        )
    busy = max_cpu_per_worker_avg(report)
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


def worker_rss_and_reason(report: ProbeReport | None, profile: Profile) -> tuple[int, str]:
    rss = max_rss(report)
    used = rss if rss is not None else profile.assumed_worker_rss_mib * MIB
    source = "(largest measured RSS)" if rss is not None else "(ASSUMED: no RSS was measured)"
    return used, f"{mib(used)} per worker {source}"


def connection_cap(choices: Choices) -> tuple[int, str] | None:
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


def decide_workers(
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
    rss_used, rss_text = worker_rss_and_reason(report, profile)
    mem = host.memory.effective_bytes
    mem_cap = math.floor(mem * (1 - profile.memory_headroom) / rss_used)
    formula += (
        f"; memory allows floor({size(mem)} x (1 - {profile.memory_headroom:g}) / "
        f"{mib(rss_used)}) = {mem_cap}"
    )
    if mem_cap < n and (pol.fixed is not None or mem_cap < 1):
        notes += (
            Advice(
                f"{n} worker(s) of {mib(rss_used)} do not fit in {size(mem)} with "
                f"{profile.memory_headroom:.0%} headroom: raise the memory limit or cut the app's footprint."
            ),
        )
        n = n if pol.fixed is not None else 1
    elif mem_cap < n:
        n = mem_cap
        formula += f" -> {n}"
    db = connection_cap(choices)
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


def rule_of_thumb(host: HostFacts, workers: int, rss: int) -> tuple[int, str]:
    logical = host.cpu.logical
    n = rule_of_thumb_workers(logical)
    if n == workers:
        return n, f"2 x {logical} + 1 = {n}: the same as this plan."
    extra = n - workers
    text = f"2 x {logical} logical CPUs + 1 = {n}"
    if float(host.cpu.effective) < logical:
        text += f" (it counts the host's {logical} CPUs, not the {cpus(float(host.cpu.effective))} allowed)"
    if extra > 0:
        text += (
            f": {extra} more processes and ~{mib(extra * rss)} more memory than this plan, for no more CPU "
            "to run them on (`fastapi-tune verify --sweep` measures both on your app)."
        )
    else:
        text += f": {-extra} fewer than this plan."
    return n, text


def replicas_for_rate(
    report: ProbeReport | None, target: float, workers: int, rss: int, profile: Profile
) -> tuple[ReplicaSizing | None, list[str]]:
    if report is None:
        return None, [f"replicas for {target:g} req/s: no probe report, so no measured per-worker throughput"]
    pw = probe_workers(report)
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
        f"slowest route's peak: {e.route} at {lv.throughput_rps:.1f} req/s with {pw} worker(s) "
        f"= {per_worker:.1f} req/s per worker; {target:g} / ({per_pod:.1f} x {REPLICA_UTILISATION:g}) "
        f"-> {replicas} replicas (at least {MIN_REPLICAS}); {cpu_text}; memory request: "
        f"({mib(rss)} x {workers} + {MASTER_RSS_MIB} MiB master, assumed) / (1 - "
        f"{profile.memory_headroom:g}) "
        f"= {mem_mib} MiB, rounded up to 16."
    )
    sizing = ReplicaSizing(
        target_rps=target,
        per_worker_rps=round(per_worker, 3),
        basis=f"{e.route} at concurrency {lv.concurrency}",
        replicas=replicas,
        cpu_request_milli=cpu_milli,
        memory_request_mib=mem_mib,
        why=why,
    )
    return sizing, []


def pod_memory_mib(rss: int, workers: int, profile: Profile) -> int:
    """Memory for one instance: its workers and the master, within the profile's headroom, in 16 MiB steps."""
    return math.ceil((rss * workers + MASTER_RSS_MIB * MIB) / (1 - profile.memory_headroom) / MIB / 16) * 16


def worker_rss(report: ProbeReport | None, profile: Profile) -> int:
    """Bytes one worker takes: the largest measured RSS, else the profile's assumption."""
    return worker_rss_and_reason(report, profile)[0]


def _worker_ceiling(host: HostFacts, report: ProbeReport | None, profile: Profile, choices: Choices) -> int:
    """The most workers this host holds: memory, the database's connections, the profile, 4 per CPU."""
    eff = float(host.cpu.effective)
    rss, _ = worker_rss_and_reason(report, profile)
    cap = min(
        profile.workers.max,
        math.floor(host.memory.effective_bytes * (1 - profile.memory_headroom) / rss),
        max(1, math.ceil(eff * BLOCKED_WORKERS_PER_CPU)),
    )
    db = connection_cap(choices)
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
        f"No configuration on this host ({cpus(sizing.cpus)}, up to {sizing.max_workers} workers) is"
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


def mix_workers(
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
    if profile.workers.fixed is not None:  # replicas carry the load: see objective_replicas
        pod = min(eff, float(profile.workers.fixed))
        return wd, size_for_mix(mix, pod, profile.workers.fixed, objective, None), Decided(unknowns=unknown)
    sizing = size_for_mix(mix, eff, _worker_ceiling(host, report, profile, choices), objective, target)
    n, text, decided = wd.workers, "", Decided(unknowns=unknown)
    if objective is not None and target is not None:
        n, text, more = _objective_workers(sizing, wd, target)
        decided = merge((decided, more))
    elif EndpointClass.LOOP_BLOCKING in classes(report) and sizing.throughput_workers < n:
        n = max(sizing.throughput_workers, cpu_processes(eff, profile.workers.per_cpu))
        text = (
            "but past the point where the event loops keep the CPUs busy, more workers only share"
            f" the same CPUs (the whole mix, not the blocking route alone): {n}"
        )
    if objective is not None and target is None:
        cap = sizing.capacity_with(n) or 0.0
        decided = merge(
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


def objective_replicas(
    host: HostFacts, replicas: ReplicaSizing | None, sizing: MixSizing | None, choices: Choices, workers: int
) -> ReplicaSizing | None:
    """With an objective: replicas from the mix model's capacity per pod, not the slowest route's peak."""
    if replicas is None or sizing is None or choices.objective is None or choices.target_rps is None:
        return replicas
    pod = min(float(host.cpu.effective), float(workers))
    r = replicas_for_objective(sizing.mix, pod, workers, choices.objective, choices.target_rps)
    if r is None:
        why = (
            f"no pod ({workers} worker(s), {cpus(pod)}) meets {choices.objective.describe()} at any rate:"
            f" the slowest route alone takes {sizing.mix.base_ms:.0f} ms; kept the throughput sizing:"
            f" {replicas.why}"
        )
        return replace(replicas, why=why)
    return replace(replicas, replicas=r.replicas, per_worker_rps=round(r.per_pod_rps / workers, 3), why=r.why)
