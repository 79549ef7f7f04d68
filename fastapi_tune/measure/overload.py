"""The overload step: after every route's ladder, drive the app far past its knee and see if it falls.

The ladder stops where throughput stops growing, so it never reaches the level where an app
collapses (fastapi/fastapi#3205: 10 pooled connections, 11 clients, a deadlock). This step loads
the whole mix at a stress level (64 in flight per worker by default) for about a second; an app
that holds costs only that. When the mix falls over, each route is loaded alone at the stress
level while py-spy samples the workers (which thread waits where) and the connections held to the
database are counted, and a route that collapses is searched for its collapse point N by
bisection. After a trial that fell over, one request at c=1 says whether the server still answers
(wedged when not, within the timeout); a server the tool started is restarted and the step goes
on, one it did not start is given time to recover, and the step stops when it does not.

Measurement only: the rule that reads a trial (holds / degrades / collapses / wedged) is
core.rules.overload_behaviour, shared with the judge, because the bisection needs it to go on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import httpx

from fastapi_tune.core.deadline import within
from fastapi_tune.core.errors import ServerFailedError
from fastapi_tune.core.rules import OverloadBehaviour, fell_over, overload_behaviour
from fastapi_tune.discover.openapi import Operation
from fastapi_tune.measure.held import held_connections
from fastapi_tune.measure.ladder import Session
from fastapi_tune.measure.launch import Running
from fastapi_tune.measure.levels import ERROR_STOP_RATIO
from fastapi_tune.measure.loadgen import TEARDOWN_GRACE_S, LiveCount, RequestSpec, opening_s, run_burst
from fastapi_tune.measure.observe import find_server
from fastapi_tune.measure.overload_report import HeldConnections, OverloadRun, OverloadTrial, RouteOverload
from fastapi_tune.measure.report import Endpoint, Level, ServerInfo
from fastapi_tune.measure.stack_attribution import RouteProfile, attribute
from fastapi_tune.measure.stacks import StackSample, Unavailable, sample_workers
from fastapi_tune.measure.stats import summarize

# Restarts a server the tool started (same command, same port) and says what now serves it.
Restart = Callable[[], ServerInfo]

# A trial: its connections open, a short warm-up, then a counted window long enough for ~15
# completions at the route's plateau (0.4-3 s), then a drain that waits for the requests in flight.
# The mix's trial is all an app that holds pays for (~0.8 s); the collapse search's steps count
# longer, since a deadlock near its threshold may take a moment to form.
# (0.6 s, not 0.4: a 0.4 s window once missed #3205's deadlock on a busy machine.)
_WARMUP_S: Final = 0.1
_WINDOW_S: Final = 0.6
_SEARCH_WINDOW_S: Final = 1.5
_MAX_WINDOW_S: Final = 3.0
_MIN_COMPLETIONS: Final = 15
# The drain waits up to this many times the closed-loop latency the plateau predicts at the level
# (Little's law: in flight / plateau), at least _MIN_DRAIN_S, at most the request timeout.
_DRAIN_FACTOR: Final = 3.0
_MIN_DRAIN_S: Final = 0.5
# Stacks after a fall, at the probe's rate, over one second (a stuck server's stacks do not move).
_STACKS_HZ: Final = 50
_STACKS_S: Final = 1.0
# The plateau is the median of this many best clean levels.
_PLATEAU_TOP: Final = 3
# The bisection stops when the bounds are this close (ratio) or one apart.
SEARCH_RESOLUTION: Final = 1.3
# Time kept from the ladders for the mix trial and its wedge check (an app that holds spends ~1.5 s).
RESERVE_S: Final = 3.0
# A server the tool did not start gets this long to answer again after a wedge (SQLAlchemy's
# pool timeout is 30 s: its waiters then fail and the deadlock unwinds), within the budget.
RECOVERY_S: Final = 35.0


@dataclass(frozen=True)
class OverloadTarget:
    """One route the step may drive: what the ladder measured and the bytes to send."""

    op: Operation
    spec: RequestSpec
    endpoint: Endpoint


@dataclass
class _State:
    """What the step knows of the server as it goes (its pids change with a restart)."""

    session: Session
    restart: Restart | None
    restarts: int = 0
    recovered_after_s: float | None = None
    wedged_left: bool = False
    stopped: str | None = None  # why the step stopped early
    per_route: list[RouteOverload] = field(default_factory=list)

    @property
    def workers(self) -> int:
        return max(1, self.session.workers or 1)

    @property
    def pids(self) -> tuple[int, ...]:
        return self.session.worker_pids


def restarter(running: Running) -> Restart | None:
    """A Restart for a server the tool started: the same command on the same port, then found again."""
    again = running.restart
    if again is None:
        return None

    def restart() -> ServerInfo:
        started = again()
        return find_server(started.port)

    return restart


def follow(session: Session, info: ServerInfo) -> Session:
    """The session watching a restarted server: its CPU, demand and stacks come from the new pids."""
    pids = info.worker_pids if info.local and info.pid else ()
    if session.watcher is not None:
        session.watcher.follow(info)
    if session.demand is not None:
        session.demand.worker_pids = pids
    return replace(session, worker_pids=pids, workers=info.workers or session.workers)


def plateau(levels: Sequence[Level]) -> tuple[float, int] | None:
    """(throughput, concurrency) the route sustains: the median of its best three clean levels, so
    that one level lucky on a busy machine does not set the bar (measured: 967 req/s at c=8 between
    588 and 771, with the same route at 300-400 req/s everywhere after)."""
    clean = [
        lv
        for lv in levels
        if lv.requests
        and not lv.stalled
        and not lv.client_saturated
        and lv.errors <= ERROR_STOP_RATIO * lv.requests
        and lv.throughput_rps > 0
    ]
    if not clean:
        return None
    top = sorted(clean, key=lambda lv: lv.throughput_rps, reverse=True)[:_PLATEAU_TOP]
    mid = top[len(top) // 2]
    return mid.throughput_rps, mid.concurrency


def mix_plateau(plateaus: Sequence[float]) -> float | None:
    """The mix's expected goodput when every connection sends each route in turn: k / sum(1 / X_i),
    exact when the routes share one bottleneck and a lower bound otherwise."""
    if not plateaus or any(p <= 0 for p in plateaus):
        return None
    return len(plateaus) / sum(1.0 / p for p in plateaus)


def _window_s(plateau_rps: float | None, least: float = _WINDOW_S) -> float:
    if not plateau_rps:
        return least
    return min(_MAX_WINDOW_S, max(least, _MIN_COMPLETIONS / plateau_rps))


def _drain_s(concurrency: int, plateau_rps: float | None, timeout_s: float) -> float:
    expected = concurrency / plateau_rps if plateau_rps else timeout_s
    return min(timeout_s, max(_MIN_DRAIN_S, _DRAIN_FACTOR * expected))


def trial_cost_s(concurrency: int, plateau_rps: float | None, least: float = _WINDOW_S) -> float:
    """What one trial needs before its drain (which gets what is left of the budget, up to its own
    bound): the connections, the warm-up, the window and the teardown."""
    return opening_s(concurrency) + _WARMUP_S + _window_s(plateau_rps, least) + TEARDOWN_GRACE_S


def answer_after(spec: RequestSpec, timeout_s: float) -> float | None:
    """Seconds until one request is answered (any status), None when none comes within `timeout_s`."""
    started = time.monotonic()

    def ask() -> int:
        with httpx.Client(verify=spec.verify_tls, timeout=timeout_s) as client:
            response = client.request(spec.method, spec.url, headers=list(spec.headers), content=spec.body)
            return response.status_code

    try:
        within(timeout_s, f"{spec.method} {spec.url}", ask)
    except Exception:  # no answer for any reason (timeout, refused, reset) is the fact itself
        return None
    return round(time.monotonic() - started, 3)


class _Stacks:
    """py-spy over every worker right after a trial fell over (the server is still stuck: a deadlock
    does not end with the load), and the database connections the workers hold."""

    def __init__(self, session: Session) -> None:
        self.sample: StackSample | Unavailable | None = None
        self.held: HeldConnections | None = None
        pids, port, app_files = session.worker_pids, session.port, session.app_files
        profile = session.options.profile

        def run() -> None:
            self.held = held_connections(pids, port)
            if profile:
                self.sample = sample_workers(pids, _STACKS_S, _STACKS_HZ, app_files)

        self.thread = threading.Thread(target=run, name="overload stacks", daemon=True)
        self.app_files = app_files
        self.thread.start()

    def wait(self) -> None:
        """Waits for the sampler (it bounds py-spy): whatever the trial's outcome, py-spy must not
        still be attached to the workers when the next trial or the next step starts."""
        self.thread.join(30)

    def profile(self) -> tuple[RouteProfile | None, str | None]:
        """What the stacks say (or why there are none)."""
        self.wait()
        sample = self.sample
        if sample is None:
            return None, "py-spy did not finish in time"
        if isinstance(sample, Unavailable):
            return None, f"{sample.reason} ({sample.how_to_enable})"
        return attribute(sample, self.app_files), None


def burst_trial(
    specs: Sequence[RequestSpec],
    concurrency: int,
    workers: int,
    window_s: float,
    drain_s: float,
    stop: threading.Event | None = None,
    live: LiveCount | None = None,
) -> OverloadTrial | None:
    """One closed-loop burst at `concurrency` counted as the overload step counts it: the window,
    then a drain that waits for the requests in flight (their completions count however late)."""
    result = run_burst(specs, concurrency, _WARMUP_S, window_s, stop, live, drain_s, count_drain=True)
    if (stop is not None and stop.is_set()) or result.duration_s <= 0:
        return None
    b = summarize(result)
    return OverloadTrial(
        concurrency=concurrency,
        per_worker=round(concurrency / max(1, workers), 3),
        seconds=round(result.duration_s, 3),
        drained_s=round(result.drain_s or 0.0, 3),
        completed=b.ok,
        errors=b.errors,
        goodput_rps=round(b.ok / result.duration_s, 3),
        p50_ms=None if b.p50_ms is None else round(b.p50_ms, 2),
        p99_ms=None if b.p99_ms is None else round(b.p99_ms, 2),
        errors_by_status=dict(b.errors_by_status),
        errors_by_kind=dict(b.errors_by_kind),
        in_flight_left=result.in_flight_at_end,
    )


def _trial(
    state: _State,
    specs: Sequence[RequestSpec],
    concurrency: int,
    plateau_rps: float | None,
    shown: Operation,
    least: float = _WINDOW_S,
) -> OverloadTrial | None:
    """One burst at `concurrency`, drained; None when it does not fit the budget or was stopped."""
    s = state.session
    left = s.budget.deadline - time.monotonic() - trial_cost_s(concurrency, plateau_rps, least)
    if left < 0 or s.budget.stop.is_set():
        return None
    live = LiveCount()
    s.events.level_started(shown, concurrency, live.read)
    drain = min(_drain_s(concurrency, plateau_rps, s.options.timeout_s), max(left, 0.1))
    window = _window_s(plateau_rps, least)
    trial = burst_trial(specs, concurrency, state.workers, window, drain, s.budget.stop, live)
    if trial is not None:
        s.budget.requests += trial.completed + trial.errors
    return trial


def _check_wedge(state: _State, trial: OverloadTrial, spec: RequestSpec) -> OverloadTrial:
    """The trial with the answer to one request sent after the load stopped (within the timeout,
    and within the budget: a wedged server never holds the tool past --max-seconds)."""
    s = state.session
    timeout = min(s.options.timeout_s, max(0.5, s.budget.deadline - time.monotonic()))
    return replace(trial, wedge_checked=True, answer_after_s=answer_after(spec, timeout))


def _recover(state: _State, spec: RequestSpec) -> bool:
    """Make the server answer again after a trial that fell over: restart it when the tool started
    it, else wait for it (its own timeouts) within RECOVERY_S and the budget."""
    s = state.session
    if state.restart is not None:
        try:
            state.session = follow(state.session, state.restart())
        except ServerFailedError as e:  # the report must survive a server that does not come back
            state.stopped = f"the server did not come back after a restart: {str(e).splitlines()[0]}"
            return False
        state.restarts += 1
        return True
    started = time.monotonic()
    end = min(started + RECOVERY_S, s.budget.deadline)
    while time.monotonic() < end and not s.budget.stop.is_set():
        if answer_after(spec, min(2.0, max(0.2, end - time.monotonic()))) is not None:
            state.recovered_after_s = round(time.monotonic() - started, 1)
            return True
    state.wedged_left = not s.budget.stop.is_set()
    state.stopped = (
        f"the server stopped answering and did not recover within {time.monotonic() - started:.0f} s:"
        " restart it"
    )
    return False


def _behaviour(trial: OverloadTrial, plateau_rps: float | None) -> OverloadBehaviour:
    return overload_behaviour(trial.goodput_rps, plateau_rps, trial.completed, trial.wedged)


def _search(
    state: _State, high: float, t: OverloadTarget, plateau_rps: float | None, low: float
) -> tuple[list[OverloadTrial], float, float, str | None]:
    """Bisect (geometric) between the highest level per worker that held and the lowest that fell."""
    workers = state.workers
    trials: list[OverloadTrial] = []
    shown = Operation(t.op.method, f"{t.op.path} (collapse point)", t.op.url)
    while high / max(low, 1e-9) > SEARCH_RESOLUTION and high - low > 1:
        mid = max(1, round(math.sqrt(low * high)))
        if mid <= low or mid >= high:
            break
        trial = _trial(state, [t.spec], mid * workers, plateau_rps, shown, _SEARCH_WINDOW_S)
        if trial is None:
            return (
                trials,
                low,
                high,
                "time budget" if not state.session.budget.stop.is_set() else "interrupted",
            )
        trials.append(trial)
        if fell_over(_behaviour(trial, plateau_rps)):
            high = mid
            if not _recover(state, t.spec):
                return trials, low, high, state.stopped
        else:
            low = mid
    return trials, low, high, None


def _route(
    state: _State, t: OverloadTarget, concurrency: int, mix: OverloadTrial | None
) -> RouteOverload | None:
    """One route alone at the stress level (the mix's trial when it is the only route), then the
    search for its collapse point when it falls over."""
    found = plateau(t.endpoint.levels)
    plateau_rps, plateau_at = (None, state.workers) if found is None else found
    trial = mix if mix is not None else _trial(state, [t.spec], concurrency, plateau_rps, t.op)
    if trial is None:
        return None
    route = RouteOverload(t.op.method, t.op.path, plateau_rps, (trial,))
    if not fell_over(_behaviour(trial, plateau_rps)):
        return route
    if mix is None and not _recover(state, t.spec):
        return replace(route, search_cut=state.stopped)
    clean = [lv.concurrency for lv in t.endpoint.levels if not lv.stalled and lv.requests]
    low = max(1.0, max(clean, default=state.workers) / state.workers)
    stall = min((lv.concurrency for lv in t.endpoint.levels if lv.stalled), default=None)
    # A ladder that already stalled below the stress level bounds the search from above.
    high = stall / state.workers if stall is not None and stall < concurrency else trial.per_worker
    low = min(low, high)
    # The search compares each step with the route's goodput now, at its plateau's level: the ladder
    # ran a while ago, and a busy machine moves by more than the 30% a collapse is judged by.
    now = _trial(
        state, [t.spec], plateau_at, plateau_rps, Operation(t.op.method, f"{t.op.path} (baseline)", "")
    )
    bar = now.goodput_rps if now is not None and now.completed else plateau_rps
    found_trials, low, high, cut = _search(state, high, t, bar, low)
    baseline = () if now is None else (now,)
    return RouteOverload(
        route.method, route.path, plateau_rps, (trial, *baseline, *found_trials), low, high, cut, bar
    )


@dataclass(frozen=True)
class _MixResult:
    trial: OverloadTrial | None
    expected: float | None
    profile: RouteProfile | None = None
    profile_unavailable: str | None = None
    held: HeldConnections | None = None


def _mix(state: _State, targets: Sequence[OverloadTarget], concurrency: int) -> _MixResult:
    """The whole mix at the stress level; after a fall, the wedge check with the stacks beside it."""
    plateaus = [p[0] for t in targets if (p := plateau(t.endpoint.levels)) is not None]
    expected = mix_plateau(plateaus) if len(plateaus) == len(targets) else None
    shown = Operation("overload", f"mix of {len(targets)} route(s)", "")
    specs = [t.spec for t in targets]
    trial = _trial(state, specs, concurrency, expected, shown)
    if trial is not None and _behaviour(trial, expected) is OverloadBehaviour.DEGRADES:
        # A fall in goodput may be a deadlock still forming: #3205's app (N ~50 per worker) served
        # 77% through one 0.6 s window at 64 per worker, and fell over in the next run's. Measured
        # once more over the search's longer window; only apps that degrade pay for it.
        longer = _trial(state, specs, concurrency, expected, shown, _SEARCH_WINDOW_S)
        if longer is not None and fell_over(_behaviour(longer, expected)):
            trial = longer
    if trial is None or not fell_over(_behaviour(trial, expected)):
        return _MixResult(trial, expected)
    stacks = _Stacks(state.session) if state.session.worker_pids else None
    trial = _check_wedge(state, trial, targets[0].spec)
    if stacks is not None:
        stacks.wait()  # py-spy detached before anything else loads the workers (a trial, the next step)
    if trial.wedged is False and trial.completed:
        # It answered and went on answering: a fall this short may be the machine's, not the app's
        # (measured: one 0.6 s window at 28% of the plateau, the same app at 111% a minute later).
        # Once more; a second fall stands, with the first trial's stacks.
        again = _trial(state, specs, concurrency, expected, shown)
        if again is not None and not fell_over(_behaviour(again, expected)):
            return _MixResult(again, expected)
    if stacks is None:
        return _MixResult(trial, expected, profile_unavailable="the server is not on this machine")
    if not state.session.options.profile:
        return _MixResult(trial, expected, profile_unavailable="--no-profile", held=stacks.held)
    profile, unavailable = stacks.profile()
    return _MixResult(trial, expected, profile, unavailable, stacks.held)


def run_overload(
    session: Session, targets: Sequence[OverloadTarget], per_worker: int, restart: Restart | None = None
) -> OverloadRun:
    """The mix at `per_worker` in flight per worker; when it falls over, each route alone and the
    search for the collapse point of those that fall."""
    state = _State(session, restart)
    concurrency = per_worker * state.workers
    run = OverloadRun(per_worker=per_worker, workers=state.workers, concurrency=concurrency)
    drivable = [t for t in targets if plateau(t.endpoint.levels) is not None]
    if not drivable:
        return _done(run, state, skipped="no route had a clean level to compare with")
    mix = _mix(state, drivable, concurrency)
    run = replace(
        run,
        plateau_rps=None if mix.expected is None else round(mix.expected, 3),
        mix=mix.trial,
        profile=mix.profile,
        profile_unavailable=mix.profile_unavailable,
        held=mix.held,
    )
    if mix.trial is None:
        return _done(run, state, skipped=_why_not(session))
    if not fell_over(_behaviour(mix.trial, mix.expected)) or not _recover(state, drivable[0].spec):
        return _done(run, state)
    alone = mix.trial if len(drivable) == 1 else None
    for t in drivable:
        if session.budget.stop.is_set() or state.stopped:
            break
        route = _route(state, t, concurrency, alone)
        if route is None:
            state.stopped = state.stopped or _why_not(session)
            break
        state.per_route.append(route)
    return _done(run, state)


def _why_not(session: Session) -> str:
    if session.budget.stop.is_set():
        return "interrupted"
    return "time budget: no time left in --max-seconds (raise it)"


def _done(run: OverloadRun, state: _State, *, skipped: str | None = None) -> OverloadRun:
    return replace(
        run,
        routes=tuple(state.per_route),
        skipped=skipped or state.stopped,
        restarts=state.restarts,
        recovered_after_s=state.recovered_after_s,
        wedged_left=state.wedged_left,
    )


def reserve_s(per_worker: int | None, max_seconds: float) -> float:
    """Time the ladders leave for the step: the mix trial and its wedge check, a tenth of the budget
    at most (a short --max-seconds is for the ladders)."""
    return 0.0 if per_worker is None else min(RESERVE_S, 0.1 * max_seconds)


def overload_step(
    session: Session,
    ops: Sequence[Operation],
    specs: Sequence[RequestSpec],
    climbed: Sequence[Endpoint],
    per_worker: int | None,
    restart: Restart | None = None,
) -> OverloadRun | None:
    """The step after every ladder (run_probe's one call); None when off or the probe was stopped."""
    if per_worker is None or session.budget.stop.is_set():
        return None
    if session.worker_pids:  # a ladder may have restarted the server: watch what serves it now
        session = follow(session, find_server(session.port))
    targets = [OverloadTarget(op, spec, ep) for op, spec, ep in zip(ops, specs, climbed, strict=True)]
    return run_overload(session, targets, per_worker, restart)
