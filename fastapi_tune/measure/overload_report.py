"""The overload step's part of the probe report: what was measured past the knee, and its JSON.

Types only (frozen dataclasses) and their JSON both ways, read back tolerantly: a report written
before the overload step existed has no `overload` key and loads as before. The measuring is
measure/overload.py's, the judgement (the `verdict` fields) judge/overload.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.core.jsonread import JsonReader
from fastapi_tune.core.rules import OverloadBehaviour
from fastapi_tune.measure.stack_attribution import RouteProfile, profile_from_json, profile_to_json

_MAX_COUNT: Final = 10**12
_MAX_CONCURRENCY: Final = 1_000_000


@dataclass(frozen=True)
class OverloadTrial:
    """One closed-loop burst at a stress level; completions counted however late (the drain)."""

    concurrency: int  # in flight, all workers together
    per_worker: float
    seconds: float  # counted: the window and the drain after the last send
    drained_s: float  # of `seconds`: waiting for the requests still in flight
    completed: int  # successful answers
    errors: int
    goodput_rps: float  # completed / seconds
    p50_ms: float | None = None
    p99_ms: float | None = None  # None below 200 completions
    errors_by_status: Mapping[int, int] = field(default_factory=dict)
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    in_flight_left: int = 0  # still unanswered when the drain ended
    # One request at c=1 after the load stopped: its answer's seconds, None when none came within
    # the timeout (wedged). `wedge_checked` is False where the step did not ask (bisection steps).
    wedge_checked: bool = False
    answer_after_s: float | None = None

    @property
    def wedged(self) -> bool | None:
        """No answer to one request after the load stopped; None when not checked."""
        return (self.answer_after_s is None) if self.wedge_checked else None


@dataclass(frozen=True)
class HeldConnections:
    """Connections a worker held open to one database while the route collapsed: a full pool."""

    count: int  # the largest per worker
    target: str  # a database file's name, or host:port


@dataclass(frozen=True)
class OverloadVerdict:
    """How a route (or the whole mix) behaved past its knee, why, and the code fix (judge/overload.py)."""

    behaviour: OverloadBehaviour
    goodput_ratio: float | None  # goodput at the stress level / the plateau
    summary: str
    collapse_per_worker: float | None = None  # N: the lowest level per worker seen to collapse
    held_per_worker: float | None = None  # the highest level per worker seen to hold
    cause: str | None = None  # which thread waits where, from the stacks during the collapse
    fixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteOverload:
    """One route driven alone at the stress level, then searched for its collapse point."""

    method: str
    path: str
    plateau_rps: float | None  # its best clean throughput in the ladder
    # The stress level first; when it fell over, the baseline (the plateau's level, now), then the
    # bisection's steps.
    trials: tuple[OverloadTrial, ...]
    held_per_worker: float | None = None  # the highest level per worker that held
    collapsed_per_worker: float | None = None  # the lowest level per worker that collapsed
    search_cut: str | None = None  # why the bisection stopped before its resolution
    search_bar_rps: float | None = None  # the goodput the search judged its steps against
    verdict: OverloadVerdict | None = None


@dataclass(frozen=True)
class OverloadRun:
    """The overload step of one probe: the mix at the stress level, then each route when it fell over."""

    per_worker: int
    workers: int
    concurrency: int
    plateau_rps: float | None = None  # the mix's expected goodput from the routes' plateaus
    mix: OverloadTrial | None = None
    # Sampled right after the mix fell over, while the server was still stuck: who waits where,
    # and the connections each worker held to its database.
    profile: RouteProfile | None = None
    profile_unavailable: str | None = None
    held: HeldConnections | None = None
    routes: tuple[RouteOverload, ...] = ()
    skipped: str | None = None  # why the step did not run, or stopped early
    restarts: int = 0  # servers the tool started and restarted after a wedge
    recovered_after_s: float | None = None  # a server not started by the tool answered again after
    wedged_left: bool = False  # a server the tool did not start still did not answer at the end
    verdict: OverloadVerdict | None = None

    def route(self, method: str, path: str) -> RouteOverload | None:
        """The route's own result, when the step drove it alone."""
        return next((r for r in self.routes if (r.method, r.path) == (method, path)), None)


# ---------------------------------------------------------------------------------------
# JSON


def trial_to_json(t: OverloadTrial) -> dict[str, Any]:
    """One trial as the report (and verify --json) writes it."""
    return {
        "concurrency": t.concurrency,
        "per_worker": round(t.per_worker, 3),
        "seconds": round(t.seconds, 3),
        "drained_s": round(t.drained_s, 3),
        "completed": t.completed,
        "errors": t.errors,
        "goodput_rps": round(t.goodput_rps, 3),
        "p50_ms": t.p50_ms,
        "p99_ms": t.p99_ms,
        "errors_by_status": {str(k): v for k, v in sorted(t.errors_by_status.items())},
        "errors_by_kind": dict(t.errors_by_kind),
        "in_flight_left": t.in_flight_left,
        "wedge_checked": t.wedge_checked,
        "answer_after_s": t.answer_after_s,
        "wedged": t.wedged,
    }


def _verdict_to_json(v: OverloadVerdict | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {
        "behaviour": str(v.behaviour),
        "goodput_ratio": v.goodput_ratio,
        "summary": v.summary,
        "collapse_per_worker": v.collapse_per_worker,
        "held_per_worker": v.held_per_worker,
        "cause": v.cause,
        "fixes": list(v.fixes),
    }


def _route_to_json(r: RouteOverload) -> dict[str, Any]:
    return {
        "method": r.method,
        "path": r.path,
        "plateau_rps": r.plateau_rps,
        "trials": [trial_to_json(t) for t in r.trials],
        "held_per_worker": r.held_per_worker,
        "collapsed_per_worker": r.collapsed_per_worker,
        "search_cut": r.search_cut,
        "search_bar_rps": r.search_bar_rps,
        "verdict": _verdict_to_json(r.verdict),
    }


def overload_to_json(run: OverloadRun) -> dict[str, Any]:
    """The step as the report's `overload` object."""
    return {
        "per_worker": run.per_worker,
        "workers": run.workers,
        "concurrency": run.concurrency,
        "plateau_rps": run.plateau_rps,
        "mix": None if run.mix is None else trial_to_json(run.mix),
        "profile": None if run.profile is None else profile_to_json(run.profile),
        "profile_unavailable": run.profile_unavailable,
        "held_connections": None
        if run.held is None
        else {"count": run.held.count, "target": run.held.target},
        "routes": [_route_to_json(r) for r in run.routes],
        "skipped": run.skipped,
        "restarts": run.restarts,
        "recovered_after_s": run.recovered_after_s,
        "wedged_left": run.wedged_left,
        "verdict": _verdict_to_json(run.verdict),
    }


def _trial_from_json(r: JsonReader, raw: object, where: str) -> OverloadTrial:
    d = r.obj(raw, where)
    statuses: dict[int, int] = {}
    for k, v in r.obj(d.get("errors_by_status", {}), f"{where}.errors_by_status").items():
        if not str(k).isdigit():
            raise r.fail(f"{where}.errors_by_status.{k}", "an HTTP status code as the key")
        statuses[int(k)] = r.int_(v, f"{where}.errors_by_status.{k}", 0, _MAX_COUNT)
    kinds = r.obj(d.get("errors_by_kind", {}), f"{where}.errors_by_kind")
    return OverloadTrial(
        concurrency=r.int_(d.get("concurrency"), f"{where}.concurrency", 1, _MAX_CONCURRENCY),
        per_worker=r.num(d.get("per_worker"), f"{where}.per_worker", 0),
        seconds=r.num(d.get("seconds"), f"{where}.seconds", 0),
        drained_s=r.num(d.get("drained_s", 0.0), f"{where}.drained_s", 0),
        completed=r.int_(d.get("completed"), f"{where}.completed", 0, _MAX_COUNT),
        errors=r.int_(d.get("errors", 0), f"{where}.errors", 0, _MAX_COUNT),
        goodput_rps=r.num(d.get("goodput_rps"), f"{where}.goodput_rps", 0),
        p50_ms=r.opt_num(d.get("p50_ms"), f"{where}.p50_ms", 0),
        p99_ms=r.opt_num(d.get("p99_ms"), f"{where}.p99_ms", 0),
        errors_by_status=statuses,
        errors_by_kind={str(k): r.int_(v, f"{where}.errors_by_kind.{k}", 0) for k, v in kinds.items()},
        in_flight_left=r.int_(d.get("in_flight_left", 0), f"{where}.in_flight_left", 0, _MAX_COUNT),
        wedge_checked=r.bool_(d.get("wedge_checked", False), f"{where}.wedge_checked"),
        answer_after_s=r.opt_num(d.get("answer_after_s"), f"{where}.answer_after_s", 0),
    )


def _verdict_from_json(r: JsonReader, raw: object, where: str) -> OverloadVerdict | None:
    if raw is None:
        return None
    d = r.obj(raw, where)
    text = r.str_(d.get("behaviour"), f"{where}.behaviour")
    try:
        behaviour = OverloadBehaviour(text)
    except ValueError:
        raise r.fail(f"{where}.behaviour", "one of " + ", ".join(str(b) for b in OverloadBehaviour)) from None
    return OverloadVerdict(
        behaviour=behaviour,
        goodput_ratio=r.opt_num(d.get("goodput_ratio"), f"{where}.goodput_ratio", 0),
        summary=r.str_(d.get("summary", ""), f"{where}.summary"),
        collapse_per_worker=r.opt_num(d.get("collapse_per_worker"), f"{where}.collapse_per_worker", 0),
        held_per_worker=r.opt_num(d.get("held_per_worker"), f"{where}.held_per_worker", 0),
        cause=r.opt_str(d.get("cause"), f"{where}.cause"),
        fixes=tuple(r.str_(f, f"{where}.fixes") for f in r.list_(d.get("fixes", []), f"{where}.fixes")),
    )


def _held_from_json(r: JsonReader, raw: object, where: str) -> HeldConnections | None:
    if raw is None:
        return None
    d = r.obj(raw, where)
    return HeldConnections(
        count=r.int_(d.get("count"), f"{where}.count", 0, _MAX_COUNT),
        target=r.str_(d.get("target"), f"{where}.target"),
    )


def _route_from_json(r: JsonReader, raw: object, where: str) -> RouteOverload:
    d = r.obj(raw, where)
    return RouteOverload(
        method=r.str_(d.get("method"), f"{where}.method"),
        path=r.str_(d.get("path"), f"{where}.path"),
        plateau_rps=r.opt_num(d.get("plateau_rps"), f"{where}.plateau_rps", 0),
        trials=tuple(
            _trial_from_json(r, t, f"{where}.trials[{i}]")
            for i, t in enumerate(r.list_(d.get("trials", []), f"{where}.trials"))
        ),
        held_per_worker=r.opt_num(d.get("held_per_worker"), f"{where}.held_per_worker", 0),
        collapsed_per_worker=r.opt_num(d.get("collapsed_per_worker"), f"{where}.collapsed_per_worker", 0),
        search_cut=r.opt_str(d.get("search_cut"), f"{where}.search_cut"),
        search_bar_rps=r.opt_num(d.get("search_bar_rps"), f"{where}.search_bar_rps", 0),
        verdict=_verdict_from_json(r, d.get("verdict"), f"{where}.verdict"),
    )


def overload_from_json(r: JsonReader, raw: object) -> OverloadRun | None:
    """The report's `overload` object, checked; None when the report has none (older, or --no-overload)."""
    if raw is None:
        return None
    d = r.obj(raw, "overload")
    profile = None
    if d.get("profile") is not None:
        try:
            profile = profile_from_json(d["profile"])
        except BadInputError as e:
            raise r.fail("overload.profile", f"a stack profile ({e})") from None
    return OverloadRun(
        per_worker=r.int_(d.get("per_worker"), "overload.per_worker", 1, _MAX_CONCURRENCY),
        workers=r.int_(d.get("workers"), "overload.workers", 1, _MAX_CONCURRENCY),
        concurrency=r.int_(d.get("concurrency"), "overload.concurrency", 1, _MAX_CONCURRENCY),
        plateau_rps=r.opt_num(d.get("plateau_rps"), "overload.plateau_rps", 0),
        mix=None if d.get("mix") is None else _trial_from_json(r, d["mix"], "overload.mix"),
        profile=profile,
        profile_unavailable=r.opt_str(d.get("profile_unavailable"), "overload.profile_unavailable"),
        held=_held_from_json(r, d.get("held_connections"), "overload.held_connections"),
        routes=tuple(
            _route_from_json(r, x, f"overload.routes[{i}]")
            for i, x in enumerate(r.list_(d.get("routes", []), "overload.routes"))
        ),
        skipped=r.opt_str(d.get("skipped"), "overload.skipped"),
        restarts=r.int_(d.get("restarts", 0), "overload.restarts", 0, _MAX_COUNT),
        recovered_after_s=r.opt_num(d.get("recovered_after_s"), "overload.recovered_after_s", 0),
        wedged_left=r.bool_(d.get("wedged_left", False), "overload.wedged_left"),
        verdict=_verdict_from_json(r, d.get("verdict"), "overload.verdict"),
    )


def with_verdicts(
    run: OverloadRun, app: OverloadVerdict | None, routes: Mapping[tuple[str, str], OverloadVerdict]
) -> OverloadRun:
    """The run with the judge's verdicts attached (the whole step's, and each route's)."""
    return replace(
        run,
        verdict=app,
        routes=tuple(replace(r, verdict=routes.get((r.method, r.path))) for r in run.routes),
    )
