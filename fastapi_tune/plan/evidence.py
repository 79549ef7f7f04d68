"""What the plan reads off the probe report: routes by class, set-aside verdicts, RSS, slowest requests."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fastapi_tune.measure.report import Endpoint, EndpointClass, Level, ProbeReport
from fastapi_tune.plan.model import GIB, MIB, MIN_PLAN_CONFIDENCE


def _levels(report: ProbeReport | None) -> Iterable[tuple[Endpoint, Level]]:
    """Levels that are evidence: the client was not the limit."""
    if report is None:
        return
    for e in report.endpoints:
        for lv in e.levels:
            if not lv.client_saturated:
                yield e, lv


def classes(report: ProbeReport | None) -> dict[EndpointClass, list[Endpoint]]:
    """Routes by class, from verdicts sure enough to size a deployment on."""
    out: dict[EndpointClass, list[Endpoint]] = {}
    if report is not None:
        for e in report.endpoints:
            if e.verdict is not None and e.verdict.confidence >= MIN_PLAN_CONFIDENCE:
                out.setdefault(e.verdict.cls, []).append(e)
    return out


def set_aside(report: ProbeReport) -> list[Endpoint]:
    """Judged routes whose verdict is too unsure to size workers from (inconclusive ones are named apart)."""
    return [
        e
        for e in report.endpoints
        if e.verdict is not None
        and e.verdict.cls is not EndpointClass.INCONCLUSIVE
        and e.verdict.confidence < MIN_PLAN_CONFIDENCE
    ]


def max_rss(report: ProbeReport | None) -> int | None:
    values = [max(lv.server_rss_bytes) for _, lv in _levels(report) if lv.server_rss_bytes]
    return max(values) if values else None


def slowest_request(report: ProbeReport | None) -> tuple[float, str] | None:
    """(max latency in ms, where) over every evidence level."""
    best: tuple[float, str] | None = None
    for e, lv in _levels(report):
        if lv.latency_ms is not None and (best is None or lv.latency_ms.max > best[0]):
            best = (lv.latency_ms.max, f"{e.route} at concurrency {lv.concurrency}")
    return best


def probe_workers(report: ProbeReport) -> int:
    return report.server.workers or 1


def max_cpu_per_worker_avg(report: ProbeReport | None) -> float | None:
    """The busiest level's server CPU spread over all the probe's workers (busy or not)."""
    if report is None:
        return None
    values = [lv.server_cpu_cores / probe_workers(report) for _, lv in _levels(report) if lv.server_cpu_cores]
    return max(values) if values else None


def mib(n: float) -> str:
    return f"{n / MIB:.0f} MiB"


def size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else mib(n)


def cpus(x: float) -> str:
    return f"{x:g} CPU" + ("" if x == 1 else "s")


def paths(eps: list[Endpoint]) -> str:
    names = [e.route for e in eps[:3]]
    return ", ".join(names) + (f" and {len(eps) - 3} more" if len(eps) > 3 else "")


def cpu_processes(effective: float, per_cpu: float) -> int:
    """Processes for CPU-limited routes: effective CPUs x per_cpu, rounded half up, at least 1.

    A 1.5-CPU quota lets two processes run at once for 75% of each period, so the second
    process turns the spare half CPU into throughput; 1.2 CPUs would only get the second
    process throttled (CFS stalls every thread of a cgroup that used up its quota) for
    0.2 CPU of gain, at the cost of a whole process's memory.
    """
    return max(1, math.floor(effective * per_cpu + 0.5))
