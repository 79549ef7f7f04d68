"""The ladder: closed-loop bursts at rising concurrency for one endpoint, within its share of the budget."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER
from fastapi_tune.discover.openapi import (
    Operation,
)
from fastapi_tune.measure.appfiles import AppFiles
from fastapi_tune.measure.demand import (
    DemandWatcher,
    demand_between,
)
from fastapi_tune.measure.levels import (
    ERROR_STOP_RATIO,
    EXTENSION_CAP,
    KNEE_MARGIN,
    STALL_CONFIRM_S,
    default_levels,
    level_duration,
    make_level,
    saturated,
    still_scaling,
)
from fastapi_tune.measure.loadgen import (
    BurstResult,
    LiveCount,
    RequestSpec,
    opening_s,
    run_burst,
)
from fastapi_tune.measure.observe import ServerWatcher
from fastapi_tune.measure.probe_options import DEFAULT_MAX_CONCURRENCY, ProbeEvents, ProbeOptions
from fastapi_tune.measure.report import Endpoint, Level, StopReason


class _StopAt(threading.Event):
    """A burst's stop flag: set by the user's stop (Ctrl-C, SIGTERM), or once `deadline` passes.

    The ladder only starts a level that should fit the budget; this holds the budget when it
    does not (a busy machine opening thousands of connections slowly). run_burst polls is_set.
    """

    def __init__(self, user: threading.Event, deadline: float) -> None:
        super().__init__()
        self.user = user
        self.deadline = deadline

    def is_set(self) -> bool:
        return self.user.is_set() or time.monotonic() >= self.deadline


@dataclass
class Budget:
    deadline: float
    max_requests: int
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _server_gone(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except OSError:
        return True


@dataclass(frozen=True)
class Session:
    """What every ladder of one probe shares."""

    options: ProbeOptions
    workers: int | None
    watcher: ServerWatcher | None
    budget: Budget
    events: ProbeEvents
    host: str
    port: int
    demand: DemandWatcher | None = None
    worker_pids: tuple[int, ...] = ()  # whose stacks to sample; empty: not local, no profile
    app_files: AppFiles | None = None  # where the app's own code is, as the server found it


def _planned_levels(options: ProbeOptions) -> list[int]:
    if options.levels is not None:
        return list(options.levels)
    return default_levels(options.max_concurrency or DEFAULT_MAX_CONCURRENCY)


@dataclass(frozen=True)
class Pace:
    """How a short level is timed: its warm-up, and a window that ends once it has enough answers.

    The window lasts at least min_s (stacks sampled over it need that long) and at most max_s; in
    between it ends at the first tick with `completions` answers counted.
    """

    warmup_s: float
    min_s: float
    max_s: float
    completions: int


class _Enough(_StopAt):
    """A burst's stop flag that is also set once the window holds enough answers (see Pace)."""

    def __init__(
        self, user: threading.Event, deadline: float, live: LiveCount, pace: Pace, ready: Callable[[], bool]
    ) -> None:
        super().__init__(user, deadline)
        self.live = live
        self.pace = pace
        self.ready = ready
        self.enough = False

    def is_set(self) -> bool:
        if not self.enough and self.live.counted_s() >= self.pace.min_s:
            self.enough = self.live.read()[0] >= self.pace.completions and self.ready()
        return self.enough or super().is_set()


class Ladder:
    """One endpoint's climb through concurrency levels until it saturates, errs or runs out of budget.

    `prior` resumes a ladder that an earlier pass (or the triage) left: its levels count as
    measured, and the stop rules read every level at or below the one just measured.
    """

    def __init__(
        self,
        session: Session,
        op: Operation,
        spec: RequestSpec,
        deadline: float,
        prior: Sequence[Level] = (),
    ) -> None:
        self.s = session
        self.op = op
        self.spec = spec
        self.deadline = deadline
        self.fixed = session.options.levels is not None
        self.levels: list[Level] = list(prior)
        self.plan = _planned_levels(session.options)

    def _upto(self, n: int) -> list[Level]:
        """The levels measured at concurrency n or below, by rising concurrency."""
        return sorted((lv for lv in self.levels if lv.concurrency <= n), key=lambda lv: lv.concurrency)

    def _previous(self, n: int) -> Level | None:
        """The level just below n: its latency sizes level n's window."""
        below = [lv for lv in self._upto(n) if lv.concurrency < n]
        return below[-1] if below else None

    def run(self) -> Endpoint:
        """Measure level after level; the endpoint with its levels and why the climb ended."""
        done = {lv.concurrency for lv in self.levels}
        todo = [n for n in self.plan if n not in done]
        top = max((lv.concurrency for lv in self.levels), default=0)
        if self.levels and not todo and not self.fixed and still_scaling(self._upto(top)):
            todo.append(top * 2)  # _extend decides again after it
        reason, detail = StopReason.MAX_LEVEL, ""
        while todo:
            n = todo.pop(0)
            if any(lv.concurrency == n for lv in self.levels):  # the triage's, reached by extending
                if not todo and self._extend(n):
                    todo.append(n * 2)
                continue
            before = self.cannot_start(n)
            if before is not None:
                reason = before
                break
            level, result = self.measure(n)
            if level is None:
                reason = StopReason.INTERRUPTED if self.s.budget.stop.is_set() else StopReason.TIME_BUDGET
                break
            stop = self.stop_after(level, result)
            if stop is not None:
                reason, detail = stop
                break
            if not todo and self._extend(n):
                todo.append(n * 2)
        op = self.op
        levels = tuple(sorted(self.levels, key=lambda lv: lv.concurrency))
        return Endpoint(op.method, op.path, op.url, levels, reason, detail)

    def cannot_start(self, n: int, pace: Pace | None = None, until: float | None = None) -> StopReason | None:
        """Why level `n` must not start: a stop request, or a budget it would overrun.

        `until` (the triage's) replaces the ladder's own deadline, within the probe's budget.
        """
        budget, options = self.s.budget, self.s.options
        if budget.stop.is_set():
            return StopReason.INTERRUPTED
        if pace is None:
            duration, warmup = level_duration(options, n, self._previous(n)), options.warmup_s
        else:  # a short level needs its shortest window; it ends early only with enough answers
            duration, warmup = pace.min_s, pace.warmup_s
        # An endpoint's first level may overrun its share (every endpoint gets one when the time
        # allows), never the whole probe's budget.
        if until is None:
            until = min(self.deadline, budget.deadline) if self.levels else budget.deadline
        if time.monotonic() + opening_s(n) + warmup + duration > min(until, budget.deadline):
            return StopReason.TIME_BUDGET
        if budget.requests >= budget.max_requests:
            return StopReason.REQUEST_BUDGET
        return None

    def measure(
        self, n: int, pace: Pace | None = None, ready: Callable[[], bool] = lambda: True
    ) -> tuple[Level | None, BurstResult]:
        """One burst at concurrency `n`, cut out of the server's CPU samples; None when stopped early.

        With a pace (the triage's short levels) the window ends once it holds enough answers and
        `ready` agrees (the stacks sampled over it have their share), at most at pace.max_s.
        """
        options, watcher = self.s.options, self.s.watcher
        previous = self._previous(n)
        duration = level_duration(options, n, previous) if pace is None else pace.max_s
        warmup = options.warmup_s if pace is None else pace.warmup_s
        live = LiveCount()
        self.s.events.level_started(self.op, n, live.read)
        # Demand is read around the whole burst (the warm-up carries the same load): two reads of
        # /proc cost a few ms, where a sampling thread would compete with the load generator.
        before = self.s.demand.snapshot() if self.s.demand is not None else None
        stop = (
            _StopAt(self.s.budget.stop, self.s.budget.deadline)
            if pace is None
            else _Enough(self.s.budget.stop, self.s.budget.deadline, live, pace, ready)
        )
        result = run_burst(self.spec, n, warmup, duration, stop, live)
        if result.stalled and not self.s.budget.stop.is_set():
            # Nothing answered in the short window: a slow route, or a stuck one. Measure once more
            # for longer, so that "slow" is measured and "stuck" is sure.
            confirm = options.timeout_s if not self.levels else STALL_CONFIRM_S
            longer = max(duration, min(confirm, self.s.budget.deadline - time.monotonic() - 1))
            result = run_burst(self.spec, n, 0.0, longer, stop, live)
        if result.duration_s <= 0:  # stopped during the warm-up: nothing was counted
            return None, result
        enough = isinstance(stop, _Enough) and stop.enough
        if result.duration_s < 0.5 * duration and not enough and not self.s.budget.stop.is_set():
            return None, result  # cut short by the time budget: too little to be evidence
        demand = None
        if before is not None and self.s.demand is not None:
            demand = demand_between(before, self.s.demand.snapshot())
        server_cpu = by_worker = rss = None
        if pace is not None and demand is not None and demand.workers:
            # A short level reads the workers' CPU from the same schedstat window as its demand:
            # the watcher's samples would first have to pass the window's end (up to 0.15 s).
            server_cpu = demand.on_cpu_cores
            by_worker = tuple(w.on_cpu_cores for w in demand.workers)
        elif watcher is not None:
            cut = watcher.cpu_cores_between(result.window_start, result.window_end)
            if cut is not None:
                server_cpu, by_worker = cut
        if watcher is not None:
            rss = watcher.worker_rss()
        level = make_level(result, server_cpu, rss, by_worker, demand, previous)
        self.levels.append(level)
        self.s.budget.requests += level.requests
        self.s.events.level_done(self.op, level)
        return level, result

    def stop_after(self, level: Level, result: BurstResult) -> tuple[StopReason, str] | None:
        """Whether the level just measured ends the ladder (and why), or raises ServerDied."""
        n = level.concurrency
        if self.s.budget.stop.is_set():
            return StopReason.INTERRUPTED, ""
        transport = level.errors_by_kind.get("connect", 0) + level.errors_by_kind.get("reset", 0)
        if (
            level.requests
            and level.requests == level.errors == transport
            and _server_gone(self.s.host, self.s.port)
        ):
            raise ServerDied(self.op, n, self.levels)
        if level.stalled:
            # Nothing completed while requests waited: more load only deepens the stall.
            return StopReason.STALLED, (
                f"{level.in_flight_at_end} requests in flight, none completed, at c={n}"
            )
        if level.errors_by_kind.get("429"):
            wait = f"Retry-After {result.retry_after_s:g} s" if result.retry_after_s else ""
            return StopReason.RATE_LIMITED, wait
        if level.errors > ERROR_STOP_RATIO * max(level.requests, 1):
            top_kind = max(level.errors_by_kind.items(), key=lambda kv: kv[1])[0]
            return StopReason.ERRORS, f"{level.errors}/{level.requests} failed, mostly {top_kind}, at c={n}"
        if not self.fixed and saturated(self._upto(n)):
            return StopReason.SATURATED, ""
        return None

    def _extend(self, n: int) -> bool:
        """Still scaling at the top: a `def` route's threadpool knee (40 x workers) may lie beyond."""
        workers, options = self.s.workers, self.s.options
        return (
            not self.fixed
            and options.max_concurrency is None
            and workers is not None
            and n < KNEE_MARGIN * THREAD_TOKENS_PER_WORKER * workers
            and n * 2 <= EXTENSION_CAP
            and still_scaling(self._upto(n))
        )


class ServerDied(Exception):
    """Every request of a level failed to connect and the port no longer answers."""

    def __init__(self, op: Operation, concurrency: int, levels: list[Level]) -> None:
        super().__init__(f"{op.method} {op.path} at c={concurrency}")
        self.op = op
        self.concurrency = concurrency
        self.levels = levels
