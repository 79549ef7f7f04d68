"""Where a curve's cap sits, and where the CPU at c=1 and the stacks overrule it: a pure decision."""

from __future__ import annotations

from enum import Enum

from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER
from fastapi_tune.judge.case import Case
from fastapi_tune.judge.stack_evidence import (
    async_only,
    in_threads,
    loop_blocked,
    loop_running,
    seen,
    threads_blocked,
)
from fastapi_tune.judge.thresholds import (
    CPU_BOUND_SPLIT,
    POOL_WAIT_THREADS,
    SERIAL_MAX_PER_WORKER,
    SERIAL_MAX_UNKNOWN_WORKERS,
    STACKS_IO_IDLE,
    STACKS_LOOP_HELD,
    THREADPOOL_BAND,
)
from fastapi_tune.measure.stack_attribution import RouteProfile


class Shape(Enum):
    """Where the curve's cap sits, relative to the workers and the thread limiter."""

    SERIAL = "about one request per worker"
    THREADPOOL = "about 40 requests per worker"
    BETWEEN = "between one and 40 per worker"
    UNCAPPED = "no cap, or one far past the thread limiter"
    CPU_WORK = "the whole request is CPU work, whatever the curve shows"


def _serial_cap(workers: int | None, p: int) -> float:
    return SERIAL_MAX_UNKNOWN_WORKERS if workers is None else SERIAL_MAX_PER_WORKER * p


def implied_workers(case: Case) -> int:
    """Unknown workers: the knee must sit near 40 x some whole number of workers."""
    if case.workers is not None:
        return case.p
    return max(1, round(case.curve.fit.knee / THREAD_TOKENS_PER_WORKER))


def shape(case: Case) -> Shape:
    """The curve's kind: a pure decision on the knee, which every builder then explains.

    Two levels (the triage's serialised routes) cannot place a knee: a line through two points
    bends wherever the second one falls short. They tell only whether the route scaled.
    """
    knee, lo, hi = case.curve.fit.knee, THREADPOOL_BAND[0], THREADPOOL_BAND[1]
    if len(case.curve.levels) == 2:  # the curve's plateau then says whether it scaled (fit_curve)
        return Shape.SERIAL if case.curve.plateau else Shape.UNCAPPED
    if not case.curve.plateau:
        return Shape.UNCAPPED
    if knee <= _serial_cap(case.workers, case.p):
        return Shape.SERIAL
    band_knee = THREAD_TOKENS_PER_WORKER * implied_workers(case)
    if lo * band_knee <= knee <= hi * band_knee:
        return Shape.THREADPOOL
    if knee < lo * THREAD_TOKENS_PER_WORKER * case.p:
        return Shape.BETWEEN
    return Shape.UNCAPPED


def shape_with_stacks(case: Case) -> Shape:
    """The curve's shape, corrected by what a worker did at c=1 and by what the stacks saw."""
    found = shape(case)
    if found is not Shape.SERIAL and case.cpu_at_one is not None and case.cpu_at_one >= CPU_BOUND_SPLIT:
        # One request at a time kept a worker on the CPU: a cheap route's framework work or a
        # handler computing, which "scaled" past c=1 only because c=1 waited on the round trip.
        return Shape.CPU_WORK
    profile = case.profile
    return found if profile is None or not seen(profile) else _stacks_shape(case, found, profile)


def _stacks_shape(case: Case, found: Shape, profile: RouteProfile) -> Shape:
    """Where the stacks overrule the curve's shape: who held the requests in flight."""
    cpu_high = case.cpu is not None and case.cpu >= CPU_BOUND_SPLIT
    held = loop_blocked(profile) + loop_running(profile)
    two = len(case.curve.levels) == 2
    if found is Shape.UNCAPPED and two and held >= STACKS_LOOP_HELD:
        return Shape.SERIAL  # two levels that seemed to scale, but the loop was held: it serialises
    if found is Shape.SERIAL and two and in_threads(profile) and held < STACKS_LOOP_HELD:
        return Shape.UNCAPPED  # two levels that seemed flat, but threads worked while the loop was free
    # A `def` route whose threads wait in a blocking call: what CPU it shows is the threads'
    # hand-offs (on a busy host, their fight for the GIL), not work that more workers would share.
    waiting_threads = in_threads(profile) and (not cpu_high or threads_blocked(profile))
    if found is Shape.BETWEEN and waiting_threads:
        if profile.threadpool.pool_wait_threads < POOL_WAIT_THREADS:
            return Shape.THREADPOOL  # a `def` route whose threads bent the curve early, no pool seen
    elif found is Shape.THREADPOOL and async_only(profile):
        return Shape.UNCAPPED  # no pool thread busy: not the limiter, the server's CPU (an async route)
    elif found is Shape.BETWEEN and async_only(profile) and cpu_high and profile.loop.idle >= STACKS_IO_IDLE:
        return Shape.UNCAPPED  # an async route whose server ran out of CPU, not a pool or a hot handler
    return found
