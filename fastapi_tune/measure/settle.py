"""Waiting for a server to settle between two measurements: its workers' CPU back near idle.

A closed-loop burst at c=64 on a serialised route leaves up to 64 requests' work in the server when
the client stops counting (FIELD-NOTES: ~0.65 s on a 10 ms CPU route, one worker); an open loop
started at once measures that backlog as its own latency (p99 370 ms where k6 reads 12.7 ms). The
client drains its own requests first (run_burst's drain_s; the open loop settles its window's
requests before it returns); this waits for what the client cannot see: the workers still busy
with requests it gave up on (timed out, aborted), background tasks, a boot's imports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import psutil

from fastapi_tune.measure.observe import cpu_seconds

__all__ = ["IDLE_SERVER_CORES", "SETTLE_MAX_S", "Settled", "Settler", "wait_until_idle"]

# Idle workers (uvicorn's loop in epoll, gunicorn's heartbeat) use well under 0.01 core; a worker
# serving anything uses a large share of one. 0.1 core over SAMPLE_S is one or two 10 ms clock
# ticks of the /proc counters: below it, nothing the next measurement would feel is running.
IDLE_SERVER_CORES: Final = 0.1
SAMPLE_S: Final = 0.2
# The longest wait for a server to settle before measuring anyway (and saying so): longer than a
# c=64 backlog of 50 ms requests on one worker (3.2 s), short enough to stay a pause.
SETTLE_MAX_S: Final = 10.0


@dataclass(frozen=True)
class Settled:
    """How a wait for idle workers ended."""

    waited_s: float
    settled: bool  # False: still busy when the wait ended (or a stop came)
    cpu_cores: float  # the workers' CPU over the last sample

    def note(self, before: str) -> str | None:
        """One line when the server did not settle, naming the measurement that follows."""
        if self.settled:
            return None
        return (
            f"{before} started on a busy server: its workers still used {self.cpu_cores:.2f} core"
            f" after {self.waited_s:.1f} s of waiting for them to go idle (below {IDLE_SERVER_CORES:g})"
        )


def wait_until_idle(
    procs: Sequence[psutil.Process],
    max_wait_s: float = SETTLE_MAX_S,
    stop: threading.Event | None = None,
) -> Settled:
    """Sample the workers' CPU every SAMPLE_S until a sample is below IDLE_SERVER_CORES."""
    started = time.perf_counter()
    before = sum(cpu_seconds(procs).values())
    cores = 0.0
    while not (stop is not None and stop.is_set()):
        mark = time.perf_counter()
        if stop is not None:
            stop.wait(SAMPLE_S)
        else:
            time.sleep(SAMPLE_S)
        after = sum(cpu_seconds(procs).values())
        cores = max(0.0, after - before) / max(1e-6, time.perf_counter() - mark)
        before = after
        if cores < IDLE_SERVER_CORES:
            return Settled(round(time.perf_counter() - started, 3), True, round(cores, 3))
        if time.perf_counter() - started >= max_wait_s:
            break
    return Settled(round(time.perf_counter() - started, 3), False, round(cores, 3))


class Settler:
    """Waits for the workers to go idle before each measurement of a run; keeps a note when not."""

    def __init__(
        self,
        workers: Callable[[], Sequence[psutil.Process]],
        stop: threading.Event,
        step: Callable[[str], None],
    ) -> None:
        self.workers, self.stop, self.step = workers, stop, step
        self.notes: list[str] = []

    def __call__(self, before: str) -> None:
        """Wait (at most SETTLE_MAX_S) before the measurement named `before`."""
        self.step(f"waiting for the server to go idle before the {before}")
        settled = wait_until_idle(self.workers(), SETTLE_MAX_S, self.stop)
        note = None if self.stop.is_set() else settled.note(before)
        if note is not None:
            self.notes.append(note)
