"""What the servers' caps are sized from, beyond the Plan: requests in flight per worker that the probe
saw served or collapse, the worker RSS, the memory and the slowest route's rate per worker.

Pure: the probe report, host facts and profile in; frozen dataclasses out (plan_servers.py decides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.plan.profiles import Profile
from fastapi_tune.plan.workers import worker_rss

# A probe level failing more than this share of its requests is not evidence that the level was served.
_CLEAN_ERROR_RATIO: Final = 0.01


@dataclass(frozen=True)
class Concurrency:
    """Requests in flight per worker as the probe saw them: served cleanly, and where routes stalled."""

    served_per_worker: int | None  # the most in flight per worker at a clean level
    served_where: str
    collapse_per_worker: int | None  # the fewest in flight per worker at which a route stalled
    safe_per_worker: int | None  # the most in flight per worker served cleanly below that stall
    collapse_where: str


@dataclass(frozen=True)
class ServerEvidence:
    """What the caps of uvicorn and Granian are sized from, beyond the Plan itself."""

    concurrency: Concurrency
    worker_rss_bytes: int | None  # the largest measured worker RSS; None when not measured
    memory_bytes: int  # the instance's effective memory
    memory_headroom: float  # the profile's share of memory kept free
    per_worker_rps: float | None  # the slowest route's peak throughput per worker
    rps_where: str


NO_EVIDENCE: Final = ServerEvidence(Concurrency(None, "", None, None, ""), None, 0, 0.25, None, "")


def _clean(requests: int, errors: int, stalled: bool, saturated: bool) -> bool:
    return requests > 0 and not stalled and not saturated and errors <= _CLEAN_ERROR_RATIO * requests


def concurrency_seen(report: ProbeReport | None) -> Concurrency:
    """The most requests in flight per worker served cleanly, and the lowest stall with the level below it."""
    if report is None:
        return Concurrency(None, "", None, None, "")
    per = report.server.workers or 1
    served: tuple[int, str] | None = None
    collapse: tuple[int, int | None, str] | None = None
    for e in report.endpoints:
        clean = [
            lv.concurrency
            for lv in e.levels
            if _clean(lv.requests, lv.errors, lv.stalled, lv.client_saturated)
        ]
        route = e.route
        if clean and (served is None or max(clean) > served[0]):
            served = (max(clean), route)
        stalls = [lv.concurrency for lv in e.levels if lv.stalled]
        if stalls and (collapse is None or min(stalls) < collapse[0]):
            below = [c for c in clean if c < min(stalls)]
            collapse = (min(stalls), max(below) if below else None, route)
    where = f" ({per} worker(s) in the probe)"
    return Concurrency(
        served_per_worker=None if served is None else math.ceil(served[0] / per),
        served_where="" if served is None else f"{served[1]} at concurrency {served[0]}{where}",
        collapse_per_worker=None if collapse is None else max(1, collapse[0] // per),
        safe_per_worker=None if collapse is None or collapse[1] is None else max(1, collapse[1] // per),
        collapse_where=""
        if collapse is None
        else f"{collapse[2]} stalled at concurrency {collapse[0]}{where}",
    )


def _slowest_peak(report: ProbeReport | None) -> tuple[float | None, str]:
    """The slowest route's best clean throughput per worker: how fast a worker serves the mix at worst."""
    if report is None:
        return None, ""
    per = report.server.workers or 1
    peaks = [
        (max(lv.throughput_rps for lv in clean) / per, e.route)
        for e in report.endpoints
        if (
            clean := [
                lv for lv in e.levels if _clean(lv.requests, lv.errors, lv.stalled, lv.client_saturated)
            ]
        )
    ]
    peaks = [(rps, where) for rps, where in peaks if rps > 0]
    if not peaks:
        return None, ""
    rps, where = min(peaks)
    return rps, f"{where}'s peak {rps:.1f} req/s per worker"


def server_evidence(host: HostFacts, report: ProbeReport | None, profile: Profile) -> ServerEvidence:
    """The evidence for the servers' caps, read once from the host, the probe report and the profile."""
    measured = any(lv.server_rss_bytes for e in (report.endpoints if report else ()) for lv in e.levels)
    rps, where = _slowest_peak(report)
    return ServerEvidence(
        concurrency=concurrency_seen(report),
        worker_rss_bytes=worker_rss(report, profile) if measured else None,
        memory_bytes=host.memory.effective_bytes,
        memory_headroom=profile.memory_headroom,
        per_worker_rps=rps,
        rps_where=where,
    )


def concurrency_limit(ev: Concurrency) -> tuple[int | None, str]:
    """A cap on requests in flight per worker, only where the probe saw a route collapse beyond it."""
    if ev.collapse_per_worker is None:
        seen = (
            f" up to {ev.served_per_worker} in flight per worker ({ev.served_where})"
            if ev.served_where
            else ""
        )
        return None, f"no route stalled in the probe{seen}, so no cap is set"
    if ev.safe_per_worker is None:
        return None, f"{ev.collapse_where}, its lowest level: no served level to cap at; fix the route"
    return ev.safe_per_worker, (
        f"{ev.collapse_where}; {ev.safe_per_worker} in flight per worker was served cleanly below it"
    )
