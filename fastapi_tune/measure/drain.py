"""Letting the server work off what a burst left queued, before the next route is measured.

When a closed-loop burst stops counting, the requests still in flight stay queued in the server: a
serialised route at c=64 under one worker leaves 1-2 s of work (FIELD-NOTES, "Seen while building
the breadth and CI measurements"), and a route measured at once would read that backlog as its own
latency. Little's law bounds the backlog (requests in flight / the throughput that served them);
the workers' main threads say when it is gone sooner: an event loop with nothing to do waits in
its selector, whose kernel wait channel (/proc/PID/wchan) is `do_epoll_wait`, while one working
off a backlog is running, waiting for a CPU or the GIL, or sleeping in a blocking call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from fastapi_tune.measure.report import Level

# The longest wait for a backlog; past it the next route is measured anyway (its warm-up absorbs
# the rest). A serialised route's backlog after the triage's levels is a few service times.
DRAIN_MAX_S: Final = 3.0
# Little's law's estimate is stretched by this much: the last requests may be the slowest.
DRAIN_MARGIN: Final = 1.5
# A server whose main thread never waits in a selector (not an asyncio loop) still moves on after
# the estimate, or this long when the estimate is smaller.
DRAIN_FLOOR_S: Final = 0.2
# The selector seen this many times in a row, this far apart, in every worker: nothing is queued.
IDLE_READS: Final = 2
POLL_S: Final = 0.01
# The kernel functions an idle event loop waits in (epoll on Linux; poll/select as fallbacks).
_SELECTOR_WAITS: Final = frozenset(
    {"do_epoll_wait", "ep_poll", "do_sys_poll", "do_select", "core_sys_select"}
)


def backlog_s(level: Level | None) -> float:
    """How long the server needs for what the level left in flight, by Little's law (0: none)."""
    if level is None or level.in_flight_at_end <= 0 or level.throughput_rps <= 0:
        return 0.0
    return level.in_flight_at_end / level.throughput_rps


def _wchan(pid: int, proc: Path) -> str | None:
    try:
        return (proc / str(pid) / "wchan").read_text().strip()
    except OSError:
        return None


def loops_idle(pids: Sequence[int], proc: Path = Path("/proc")) -> bool | None:
    """Whether every worker's main thread waits in its selector now; None when unreadable."""
    seen = [_wchan(pid, proc) for pid in pids]
    if not pids or any(w is None or w == "" for w in seen):
        return None
    return all(w in _SELECTOR_WAITS for w in seen)


def wait_drained(
    pids: Sequence[int],
    last: Level | None,
    stop: threading.Event,
    deadline: float,
    proc: Path = Path("/proc"),
) -> float:
    """Wait until the workers have worked off the last level's backlog (bounded); seconds waited.

    The Little's-law estimate bounds the wait; with readable wait channels it ends as soon as every
    event loop sits idle in its selector, without them (a remote server, no permission) the
    estimate is waited out.
    """
    started = time.monotonic()
    predicted = min(DRAIN_MAX_S, DRAIN_MARGIN * backlog_s(last))
    end = min(started + max(predicted, DRAIN_FLOOR_S if pids else 0.0), deadline)
    streak = 0
    while time.monotonic() < end and not stop.is_set():
        idle = loops_idle(pids, proc) if pids else None
        if idle is None:
            stop.wait(max(0.0, min(end, started + predicted) - time.monotonic()))
            break
        streak = streak + 1 if idle else 0
        if streak >= IDLE_READS:
            break
        stop.wait(POLL_S)
    return time.monotonic() - started
