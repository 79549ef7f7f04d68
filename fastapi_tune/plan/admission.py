"""The cap that keeps an app up past its collapse point: admission control, decided from the probe.

Pure. Where the overload step saw the app fall over (collapse or wedge) at N requests in flight per
worker, the plan caps each worker below N with a margin: requests beyond the cap wait in a queue
(first come, first served) for at most a wait limit, then get a 503 with Retry-After. Queueing
rather than refusing at once is what keeps goodput (measured, FIELD-NOTES: an asyncio semaphore of 8
around the app held 161 req/s at c=64 with 0 errors, where uvicorn's limit_concurrency=8, which
answers 503 at once and counts idle keep-alive connections too, fell to 106 with 10k 503s).
Where the app holds, there is no cap: it would only cost throughput.
"""

from __future__ import annotations

import math
from typing import Final

from fastapi_tune.core.rules import fell_over
from fastapi_tune.measure.report import EndpointClass, ProbeReport
from fastapi_tune.plan.model import AdmissionCap, Advice

# The cap is this share of the highest level per worker that held (and always below the lowest that
# fell over): the collapse point moves with the machine's load and the mix, and a bisection step that
# held for a second or two is not proof that it holds for an hour.
CAP_MARGIN: Final = 0.75
# Nor more than this many times the most in flight per worker at which any route's throughput still
# grew (its knee): past the knee more requests in the app only share the same CPU, threads and
# connections, and cost goodput in switching (FIELD-NOTES: a semaphore of 8 kept 161 req/s at c=64).
KNEE_HEADROOM: Final = 2.0
# A request waits at most this long for a slot before its 503: below the 30 s that clients, load
# balancers and gunicorn's own timeout commonly allow, so the client gets a clear answer (and a
# Retry-After) before it gives up on its own; long enough for a burst to drain through the cap.
ADMISSION_WAIT_S: Final = 10.0


def _knee_per_worker(report: ProbeReport) -> float | None:
    """The most in flight per worker at which a route's throughput still grew; None when one never
    stopped growing (then the knee bounds nothing)."""
    knees: list[float] = []
    workers = report.server.workers or 1
    for e in report.endpoints:
        # Any confidence: a knee is a measured bend, whatever the class it is read as.
        if e.verdict is None or e.verdict.cls in (EndpointClass.INCONCLUSIVE, EndpointClass.STALLED):
            continue  # no curve to read a knee from
        knee = e.verdict.evidence.knee_concurrency
        if knee is None:
            return None  # still growing at the top: the app may use all it gets
        knees.append(knee / workers)
    return max(knees) if knees else None


def _limit(collapse: float, held: float | None, knee: float | None) -> tuple[int, str]:
    """CAP_MARGIN x the highest level that held (or just below N when none did), no more than
    KNEE_HEADROOM x the knee, at least 1."""
    base = held if held is not None else max(1.0, collapse - 1)
    safe = max(1, min(math.floor(CAP_MARGIN * base), math.ceil(collapse) - 1))
    useful = None if knee is None else max(1, math.ceil(KNEE_HEADROOM * knee))
    limit = safe if useful is None else min(safe, useful)
    held_text = f" and held at {held:g}" if held is not None else ""
    why = (
        f"The probe saw the app fall over at {collapse:g} requests in flight per worker{held_text};"
        f" {CAP_MARGIN:g} x {base:g} rounded down = {safe} keeps every worker under that point with a margin"
    )
    if useful is not None and useful < safe:
        why += (
            f", and {limit} = {KNEE_HEADROOM:g} x {knee:g} (the most in flight per worker at which a"
            " route's throughput still grew) is all the app can use: more would only contend for the same"
            " CPU, threads and connections"
        )
    return limit, why


def decide_admission(report: ProbeReport | None) -> AdmissionCap | None:
    """The cap where the overload step saw a collapse; None where the app held or was not tested."""
    run = report.overload if report is not None else None
    verdict = run.verdict if run is not None else None
    if verdict is None or not fell_over(verdict.behaviour) or verdict.collapse_per_worker is None:
        return None
    assert report is not None
    limit, why = _limit(verdict.collapse_per_worker, verdict.held_per_worker, _knee_per_worker(report))
    wait_why = (
        f"a request beyond the cap queues (first come, first served) for at most {ADMISSION_WAIT_S:g} s, then"
        " gets 503 with Retry-After: 1; queueing keeps goodput where a cap that refuses at once (uvicorn's"
        " --limit-concurrency) turns bursts of keep-alive clients into 503s"
    )
    return AdmissionCap(
        limit=limit,
        wait_s=ADMISSION_WAIT_S,
        collapse_per_worker=verdict.collapse_per_worker,
        held_per_worker=verdict.held_per_worker,
        why_limit=why,
        why_wait=wait_why,
        cause=verdict.cause,
        fixes=verdict.fixes,
    )


def admission_advice(
    report: ProbeReport | None, cap: AdmissionCap | None
) -> tuple[tuple[Advice, ...], tuple[str, ...]]:
    """(advice, unknowns): the code fix behind a cap, or what the plan does not know about overload."""
    run = report.overload if report is not None else None
    if report is None or report.source != "probe":
        return (), ()
    if run is None:
        # Reports from before the step have no such setting: nothing to say about them.
        off = "overload" in report.settings and report.settings["overload"] is None
        return (), (
            ("how the app behaves far past its knee: the probe ran with --no-overload",) if off else ()
        )
    if run.verdict is None:
        return (), (
            f"how the app behaves far past its knee: the overload step did not finish ({run.skipped})",
        )
    if cap is None:
        return (), ()
    fixes = "; ".join(f"({i}) {fix}" for i, fix in enumerate(cap.fixes, 1))
    text = (
        f"The app falls over at {cap.collapse_per_worker:g} requests in flight per worker"
        + (f": {cap.cause}" if cap.cause else "")
        + f" The cap of {cap.limit} ({cap.module}.py) keeps it up; the code fix removes the need for it"
        + (f": {fixes}." if fixes else " (the stacks did not name the wait: see the probe report).")
    )
    return (Advice(text),), ()
