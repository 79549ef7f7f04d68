"""What the sampled stacks say about a verdict: how strongly they back it, or that they contradict it.

A stack sample taken while several requests are in flight tells the kinds apart directly (FIELD-NOTES,
"Apps are big; budgets are small"): the event loop thread computing in app code (cpu-bound),
blocked off the CPU inside app code (loop-blocking), idle in its selector with no pool thread
busy (io-bound), or pool threads busy inside the app while the loop idles (a `def` route: the
thread limiter). Pure: reads a RouteProfile, returns numbers and a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fastapi_tune.judge.thresholds import (
    POOL_WAIT_THREADS,
    STACKS_AGREE,
    STACKS_FRAMEWORK,
    STACKS_FULL_SAMPLES,
    STACKS_IDLE_CONTRADICTS,
    STACKS_IO_IDLE,
    STACKS_THREADS_BUSY,
    STACKS_WEIGHT,
)
from fastapi_tune.measure.report import EndpointClass
from fastapi_tune.measure.stack_attribution import RouteProfile, ThreadKind, describe, loop_hotspot


@dataclass(frozen=True)
class StackWord:
    """The stacks' word on one class: support in [0, STACKS_WEIGHT], or a contradiction."""

    support: float
    contradicts: bool
    sentence: str  # appended to the verdict's summary ("" when there were no stacks)


_SILENT = StackWord(0.0, False, "")


def seen(profile: RouteProfile | None) -> bool:
    """Whether the sample holds the event loop's stacks at all (else it says nothing)."""
    return profile is not None and profile.loop.samples > 0


def in_threads(profile: RouteProfile) -> bool:
    """Pool threads were busy inside the app while requests were in flight: a `def` route."""
    return profile.threadpool.busy_threads >= STACKS_THREADS_BUSY and profile.loop.app < STACKS_AGREE


def async_only(profile: RouteProfile) -> bool:
    """No pool thread was busy in the app: the route runs on the event loop, not in threads."""
    return profile.threadpool.busy_threads < STACKS_THREADS_BUSY / 2


# Calls that block the thread off the CPU. The scheduler's clock (app_blocked) undercounts a block on
# a starved host, where a thread woken from its sleep waits for a CPU and counts as active; the call
# a line was in, read from its stack or its source text, does not depend on the host.
BLOCKING_CALLS: Final = (
    "time.sleep",
    "socket.",
    "ssl.",
    "select.",
    "selectors.",
    "subprocess.",
    "http.client.",
    "urllib.",
    "requests.",
    "psycopg2.",
    "pymysql.",
    "sqlite3.",
    "redis.",
)


def _blocking_spot(profile: RouteProfile) -> float:
    """The loop's share at its top app line when that line sits in a blocking call (else 0)."""
    spot = next((h for h in profile.hotspots if h.thread is ThreadKind.EVENT_LOOP), None)
    if spot is None or spot.call is None or not spot.call.startswith(BLOCKING_CALLS):
        return 0.0
    return spot.share


def threads_blocked(profile: RouteProfile) -> bool:
    """The pool threads' top app line sits in a blocking call: a `def` route waiting, not computing."""
    spot = next((h for h in profile.hotspots if h.thread is ThreadKind.THREADPOOL), None)
    return spot is not None and spot.call is not None and spot.call.startswith(BLOCKING_CALLS)


def loop_blocked(profile: RouteProfile) -> float:
    """The loop's share blocked off the CPU in app code: its clock's count, or its blocking call's."""
    return max(profile.loop.app_blocked or 0.0, _blocking_spot(profile))


def loop_running(profile: RouteProfile) -> float:
    """The loop's share computing: in app code on a CPU, or (a cheap route) in the framework."""
    app_running = profile.loop.app_running
    app = profile.loop.app if app_running is None else app_running
    app = max(0.0, min(app, profile.loop.app - _blocking_spot(profile)))
    framework = profile.loop.framework if profile.loop.framework >= STACKS_FRAMEWORK else 0.0
    return max(app, framework)


def _cpu(profile: RouteProfile) -> StackWord:
    where = describe(profile)
    if loop_blocked(profile) >= STACKS_AGREE and loop_blocked(profile) > loop_running(profile):
        return StackWord(
            0.0,
            True,
            f" But the stacks show the event loop blocked off the CPU {loop_blocked(profile):.0%} of samples"
            f" ({where}): part of the time is a blocking call, not computation.",
        )
    running = loop_running(profile)
    if running >= STACKS_AGREE:
        spot = loop_hotspot(profile, blocked=False) if profile.loop.app >= STACKS_AGREE else where
        return StackWord(STACKS_WEIGHT * running, False, f" The stacks agree: {spot}.")
    if in_threads(profile):  # a `def` route computing in its threads
        return StackWord(STACKS_WEIGHT * 0.5, False, f" Stacks: {where}.")
    return StackWord(0.0, False, f" Stacks: {where}.")


def _loop_blocking(profile: RouteProfile) -> StackWord:
    blocked, idle = loop_blocked(profile), profile.loop.idle
    if blocked >= STACKS_AGREE:
        return StackWord(
            STACKS_WEIGHT * blocked, False, f" The stacks agree: {loop_hotspot(profile, blocked=True)}."
        )
    if idle >= STACKS_IDLE_CONTRADICTS or loop_running(profile) >= STACKS_IDLE_CONTRADICTS:
        what = "idle, waiting for I/O" if idle >= STACKS_IDLE_CONTRADICTS else "computing"
        return StackWord(
            0.0,
            True,
            f" But the stacks show the event loop {what}, not blocked: the limit may be elsewhere"
            f" ({describe(profile)}).",
        )
    return StackWord(0.0, False, f" Stacks: {describe(profile)}.")


def _io(profile: RouteProfile) -> StackWord:
    where = describe(profile)
    if in_threads(profile) or loop_blocked(profile) >= STACKS_AGREE:
        return StackWord(0.0, True, f" But the stacks do not show an async route waiting: {where}.")
    if profile.loop.idle >= STACKS_IO_IDLE and async_only(profile):
        return StackWord(STACKS_WEIGHT * profile.loop.idle, False, f" The stacks agree: {where}.")
    return StackWord(0.0, False, f" Stacks: {where}.")


def _threadpool(profile: RouteProfile) -> StackWord:
    where = describe(profile)
    if in_threads(profile):
        return StackWord(STACKS_WEIGHT, False, f" The stacks agree: {where}.")
    if async_only(profile):
        return StackWord(0.0, True, f" But no pool thread was busy in the app: {where}.")
    return StackWord(0.0, False, f" Stacks: {where}.")


def _pool(profile: RouteProfile) -> StackWord:
    where = describe(profile)
    if profile.threadpool.pool_wait_threads >= POOL_WAIT_THREADS:
        return StackWord(STACKS_WEIGHT, False, f" The stacks agree: {where}.")
    if loop_blocked(profile) >= STACKS_AGREE or loop_running(profile) >= STACKS_IDLE_CONTRADICTS:
        return StackWord(0.0, True, f" But the stacks show the event loop held, not waiting: {where}.")
    return StackWord(0.0, False, f" Stacks: {where}.")


def stacks_word(profile: RouteProfile | None, cls: EndpointClass) -> StackWord:
    """How strongly the stacks back `cls` (or contradict it), with the sentence the summary adds."""
    if profile is None or not seen(profile):
        return _SILENT
    reader = {
        EndpointClass.CPU_BOUND: _cpu,
        EndpointClass.LOOP_BLOCKING: _loop_blocking,
        EndpointClass.IO_BOUND: _io,
        EndpointClass.THREADPOOL_BOUND: _threadpool,
        EndpointClass.POOL_BOUND: _pool,
    }.get(cls)
    if reader is None:
        return StackWord(0.0, False, f" Stacks: {describe(profile)}.")
    word = reader(profile)
    few = min(1.0, profile.loop.samples / STACKS_FULL_SAMPLES)
    return StackWord(word.support * few, word.contradicts and few >= 1, word.sentence)
