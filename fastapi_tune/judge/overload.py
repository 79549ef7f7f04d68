"""How the app behaved past its knee, and why it fell over: a pure judgement of the overload step.

Each trial is read by the rule the probe's bisection uses (core.rules.overload_behaviour: holds at
80% of the plateau or more, collapses below 30% or with no completion, wedged when one request
after the load got no answer). Where a route fell over, the stacks sampled during its collapse say
which thread waited where (the event loop in a pool's checkout, a lock or a queue; AnyIO's threads
in a pool's checkout), and the connections held to the database say how big the pool really is:
together they name the known deadlocks (fastapi/fastapi#3205 and the async-dependency form) and
their code fix. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER, OverloadBehaviour, fell_over, overload_behaviour
from fastapi_tune.judge.thresholds import LOCK_CALLS, POOL_CALLS, POOL_THREADS_EXHAUSTED, STACKS_AGREE
from fastapi_tune.measure.overload_report import (
    HeldConnections,
    OverloadRun,
    OverloadTrial,
    OverloadVerdict,
    RouteOverload,
    with_verdicts,
)
from fastapi_tune.measure.stack_attribution import Hotspot, RouteProfile, ThreadKind


def _ratio(trial: OverloadTrial, plateau: float | None) -> float | None:
    return None if not plateau else round(trial.goodput_rps / plateau, 3)


def _behaviour(trial: OverloadTrial, plateau: float | None) -> OverloadBehaviour:
    return overload_behaviour(trial.goodput_rps, plateau, trial.completed, trial.wedged)


def _pw(value: float) -> str:
    return f"{value:g}"


def _trial_line(trial: OverloadTrial, plateau: float | None) -> str:
    """'0 req/s at 64 in flight per worker against 580 at its plateau (0%)'."""
    where = f"{trial.goodput_rps:.0f} req/s at {_pw(trial.per_worker)} in flight per worker"
    if not plateau:
        return where
    return f"{where} against {plateau:.0f} at its plateau ({trial.goodput_rps / plateau:.0%})"


def _tail(trial: OverloadTrial, behaviour: OverloadBehaviour) -> str:
    """What else the trial showed: the latency a queue adds, errors, the wedge."""
    parts: list[str] = []
    if behaviour is OverloadBehaviour.HOLDS and trial.p50_ms is not None:
        parts.append(f"p50 {trial.p50_ms:.0f} ms: the queue adds latency, not failures")
    if trial.errors:
        statuses = ", ".join(f"{s}x{n}" for s, n in sorted(trial.errors_by_status.items()))
        parts.append(f"{trial.errors} errors" + (f" ({statuses})" if statuses else ""))
    if trial.in_flight_left and behaviour is not OverloadBehaviour.HOLDS:
        parts.append(f"{trial.in_flight_left} requests still unanswered when the load stopped")
    if trial.wedged:
        parts.append("wedged: one request after the load got no answer within the timeout")
    elif trial.wedge_checked and trial.answer_after_s is not None and fell_over(behaviour):
        parts.append(f"it answered again {trial.answer_after_s:g} s after the load stopped")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------
# The cause: which thread waited where during the collapse.


def _first(profile: RouteProfile, kind: ThreadKind) -> Hotspot | None:
    return next((h for h in profile.hotspots if h.thread is kind), None)


def _is(call: str | None, names: Sequence[str]) -> bool:
    return call is not None and any(n in call for n in names)


def _short(call: str | None) -> str:
    """`sqlalchemy.pool.impl.QueuePool._do_get` -> `QueuePool._do_get`."""
    if call is None:
        return "?"
    parts = call.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 else call


def _at(spot: Hotspot) -> str:
    return f"{spot.function} ({spot.file}:{spot.line})"


def _pool_line(held: HeldConnections | None, per_worker: float) -> str:
    if held is None:
        return ""
    return (
        f" {held.count} connections were open to {held.target} per worker during the collapse (the pool's"
        f" size + overflow, all checked out), against AnyIO's {THREAD_TOKENS_PER_WORKER} threads and"
        f" {_pw(per_worker)} requests in flight per worker."
    )


def _limiter_fix(held: HeldConnections | None) -> str:
    size = held.count if held is not None else "the pool's size"
    return (
        f"make the pool at least the threads that can hold it: pool_size + max_overflow >="
        f" {THREAD_TOKENS_PER_WORKER} per worker, or AnyIO's limiter no larger than the pool (in lifespan:"
        f" `anyio.to_thread.current_default_thread_limiter().total_tokens = {size}`)"
    )


def _loop_in_pool(
    spot: Hotspot, held: HeldConnections | None, per_worker: float
) -> tuple[str, tuple[str, ...]]:
    cause = (
        f"the event loop waits for a database connection ({_short(spot.call)}) in {_at(spot)}: a sync"
        " database call in `async def` code. While it waits nothing else on this worker runs, not even the"
        " requests that hold the pool's connections and need the loop to finish and give them back."
        + _pool_line(held, per_worker)
    )
    return cause, (
        f"declare `{spot.function}` with `def` (FastAPI then runs it in a thread, off the event loop), or"
        " query through an async driver (SQLAlchemy's AsyncSession, asyncpg)",
        "scope the session inside the route (`with Session(engine) as session:` in its body) so each"
        " connection goes back before the response is built",
        _limiter_fix(held),
    )


def _threads_in_pool(
    profile: RouteProfile, spot: Hotspot | None, held: HeldConnections | None, per_worker: float
) -> tuple[str, tuple[str, ...]]:
    where = f" in {_at(spot)}" if spot is not None else ""
    cause = (
        f"{profile.threadpool.pool_wait_threads:.0f} of AnyIO's {THREAD_TOKENS_PER_WORKER} threads per"
        f" worker wait for a database connection ({_short(spot.call if spot else None)}){where}, while the"
        " requests that hold the connections wait for a thread to finish: a `def` route's response"
        " validation and its yield dependency's cleanup run in the same threads (fastapi/fastapi#3205)."
        + _pool_line(held, per_worker)
    )
    return cause, (
        "scope the session inside the route (`with Session(engine) as session:` in its body) so its"
        " connection goes back before the response is validated",
        _limiter_fix(held),
    )


def _waits_on_lock(spot: Hotspot) -> tuple[str, tuple[str, ...]]:
    who = "the event loop" if spot.thread is ThreadKind.EVENT_LOOP else "the pool threads"
    cause = (
        f"{who} wait on {_short(spot.call)} in {_at(spot)}: a blocking lock or queue held across the requests"
    )
    fix = (
        "on the event loop use asyncio.Lock / asyncio.Queue (they yield instead of blocking the loop), or"
        " move the blocking section into a `def` function"
        if spot.thread is ThreadKind.EVENT_LOOP
        else "hold the lock only around the shared state, never across I/O or a pool checkout"
    )
    return cause, (fix,)


def name_cause(
    profile: RouteProfile | None, held: HeldConnections | None, per_worker: float
) -> tuple[str | None, tuple[str, ...]]:
    """Which thread waited where during the collapse, and the code fix; (None, ()) when the stacks
    show no known wait."""
    if profile is None:
        return None, ()
    loop_spot = _first(profile, ThreadKind.EVENT_LOOP)
    pool_spot = _first(profile, ThreadKind.THREADPOOL)
    loop_held = profile.loop.app >= STACKS_AGREE
    if loop_spot is not None and loop_held and _is(loop_spot.call, POOL_CALLS):
        return _loop_in_pool(loop_spot, held, per_worker)
    if profile.threadpool.pool_wait_threads >= POOL_THREADS_EXHAUSTED * THREAD_TOKENS_PER_WORKER:
        return _threads_in_pool(profile, pool_spot, held, per_worker)
    if loop_spot is not None and loop_held and _is(loop_spot.call, LOCK_CALLS):
        return _waits_on_lock(loop_spot)
    if pool_spot is not None and _is(pool_spot.call, (*LOCK_CALLS, *POOL_CALLS)):
        return _waits_on_lock(pool_spot)
    return None, ()


# ---------------------------------------------------------------------------------------
# Verdicts


def judge_route(r: RouteOverload) -> OverloadVerdict | None:
    """One route driven alone: its behaviour at the stress level, its collapse point, the cause."""
    if not r.trials:
        return None
    stress = r.trials[0]
    behaviour = _behaviour(stress, r.plateau_rps)
    summary = f"{behaviour}: {_trial_line(stress, r.plateau_rps)}"
    tail = _tail(stress, behaviour)
    if tail:
        summary += f"; {tail}"
    if not fell_over(behaviour):
        return OverloadVerdict(behaviour, _ratio(stress, r.plateau_rps), summary + ".")
    collapse = r.collapsed_per_worker or stress.per_worker
    held = r.held_per_worker
    summary += f". It falls over at {_pw(collapse)} in flight per worker"
    summary += f" (held at {_pw(held)})" if held is not None else ""
    summary += f"; the search stopped early ({r.search_cut})." if r.search_cut else "."
    return OverloadVerdict(behaviour, _ratio(stress, r.plateau_rps), summary, collapse, held)


def judge_run(
    run: OverloadRun, routes: Sequence[tuple[RouteOverload, OverloadVerdict | None]]
) -> OverloadVerdict | None:
    """The whole app: the mix at the stress level, the lowest collapse point of its routes."""
    if run.mix is None:
        return None
    behaviour = _behaviour(run.mix, run.plateau_rps)
    summary = f"{behaviour}: the mix at {_trial_line(run.mix, run.plateau_rps)}"
    tail = _tail(run.mix, behaviour)
    summary += f"; {tail}." if tail else "."
    ratio = _ratio(run.mix, run.plateau_rps)
    if not fell_over(behaviour):
        return OverloadVerdict(behaviour, ratio, summary)
    cause, fixes = name_cause(run.profile, run.held, run.mix.per_worker)
    if cause is None and run.profile_unavailable:
        cause = f"not named: no stacks ({run.profile_unavailable})"
    fallen = [(r, v) for r, v in routes if v is not None and fell_over(v.behaviour)]
    if not fallen:
        if len(routes) > 1:
            summary += " Alone, every route driven held: the routes only fall over together."
        return OverloadVerdict(behaviour, ratio, summary, run.mix.per_worker, None, cause, fixes)
    worst = min(v.collapse_per_worker or run.mix.per_worker for _, v in fallen)
    held = min((v.held_per_worker for _, v in fallen if v.held_per_worker is not None), default=None)
    if len(routes) > 1:
        summary += " Falls over alone: " + ", ".join(f"{r.method} {r.path}" for r, _ in fallen) + "."
    summary += f" Collapse point: {_pw(worst)} in flight per worker" + (
        f" (held at {_pw(held)})." if held is not None else "."
    )
    return OverloadVerdict(behaviour, ratio, summary, worst, held, cause, fixes)


def judge_overload(run: OverloadRun | None) -> OverloadRun | None:
    """The overload step with its verdicts: each route's, then the app's."""
    if run is None:
        return None
    routes = [(r, judge_route(r)) for r in run.routes]
    verdicts = {(r.method, r.path): v for r, v in routes if v is not None}
    return with_verdicts(run, judge_run(run, routes), verdicts)
