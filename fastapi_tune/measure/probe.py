"""The probe: discovery, then a ladder of closed-loop bursts per endpoint, measured honestly.

Measurement only: the probe returns levels, and the command's flow hands them to classify.py. The
ladder's stopping rules look at throughput and errors (to spend the time budget where it tells
something), but the reading of a curve is not theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from fastapi_tune import __version__
from fastapi_tune.core.errors import TargetUnreachableError
from fastapi_tune.core.redact import redact_headers, redact_url
from fastapi_tune.core.signals import stop_on_signals
from fastapi_tune.discover.openapi import (
    Operation,
    SkipCause,
    Skipped,
    parse_header,
    resolve_target,
)
from fastapi_tune.measure.appfiles import find_app_files
from fastapi_tune.measure.demand import (
    DemandWatcher,
    host_busy_now,
    supported,
)
from fastapi_tune.measure.drain import wait_drained
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.ladder import Budget, Ladder, ServerDied, Session
from fastapi_tune.measure.levels import ERROR_STOP_RATIO
from fastapi_tune.measure.loadgen import (
    BurstResult,
    LiveCount,
    RequestSpec,
    run_burst,
)
from fastapi_tune.measure.observe import ServerWatcher, find_server
from fastapi_tune.measure.operations import find_operations, with_body
from fastapi_tune.measure.overload import Restart, follow, overload_step, reserve_s
from fastapi_tune.measure.probe_options import (
    BudgetPlan,
    DeepenOrder,
    ProbeEvents,
    ProbeOptions,
    ProbeOutcome,
    Quiet,
    check_options,
)
from fastapi_tune.measure.report import Endpoint, EvidenceDepth, Level, ProbeReport, ServerInfo, StopReason
from fastapi_tune.measure.schedule import after_triage, budget_s, initial_plan, ladder_deadline, picks_for
from fastapi_tune.measure.stack_attribution import attribute
from fastapi_tune.measure.stacks import StackSample, Unavailable, sample_workers
from fastapi_tune.measure.triage import TriageClock, triage_route
from fastapi_tune.measure.unmeasured import nothing_measured

# How long the host is watched before the probe, to warn when other work already takes its CPU.
HOST_CHECK_S: Final = 0.5


def _settings(
    options: ProbeOptions, headers: Sequence[tuple[str, str]], openapi_url: str | None, budget_s: float
) -> dict[str, Any]:
    """The options as the report records them (header values redacted)."""
    return {
        "budget_s": round(budget_s, 1),
        "levels": list(options.levels) if options.levels else None,
        "max_concurrency": options.max_concurrency,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "max_seconds": options.max_seconds,
        "max_requests": options.max_requests,
        "timeout_s": options.timeout_s,
        "verify_tls": options.verify_tls,
        "headers": redact_headers(headers),
        "openapi": None if openapi_url is None else redact_url(openapi_url),
        "params": sorted({p.partition("=")[0] for p in options.params}),
        "unsafe": options.unsafe,
        "excludes": list(options.excludes),
        "overload": options.overload,
    }


def _spec(op: Operation, headers: tuple[tuple[str, str], ...], options: ProbeOptions) -> RequestSpec:
    """The bytes to send for `op`: -H headers, and its body with its Content-Type when it has one."""
    extra = (("Content-Type", op.content_type),) if op.content_type else ()
    return RequestSpec(
        op.method,
        op.url,
        (*headers, *extra),
        op.body,
        timeout_s=options.timeout_s,
        verify_tls=options.verify_tls,
    )


# Stack sampling: the window, its rate (50 Hz nonblocking changed throughput by less than the
# run-to-run noise: benchmarks/stacks_overhead.py) and the warm-up before it opens.
PROFILE_S: Final = 1.5


PROFILE_HZ: Final = 50


_PROFILE_WARMUP_S: Final = 0.3


def _profile_level(levels: Sequence[Level]) -> Level | None:
    """The most loaded level the probe would keep going from: not client-bound, stalled or failing."""
    usable = [
        lv
        for lv in levels
        if not lv.client_saturated
        and not lv.stalled
        and lv.requests
        and lv.errors <= ERROR_STOP_RATIO * lv.requests
    ]
    return max(usable, key=lambda lv: lv.concurrency, default=None)


def _with_profile(session: Session, spec: RequestSpec, ep: Endpoint) -> Endpoint:
    """Re-drive the route at its most loaded clean level while py-spy samples every worker."""
    if not session.options.profile:
        return ep
    if not session.worker_pids:
        return replace(ep, profile_unavailable="the server is not on this machine: its stacks cannot be read")
    level = _profile_level(ep.levels)
    budget = session.budget
    if level is None or budget.stop.is_set():
        return ep
    if time.monotonic() + PROFILE_S + _PROFILE_WARMUP_S + 1 > budget.deadline:
        return replace(ep, profile_unavailable="no time left in --max-seconds to sample the stacks")
    box: list[StackSample | Unavailable] = []
    sampler = threading.Thread(
        target=lambda: box.append(
            sample_workers(session.worker_pids, PROFILE_S, PROFILE_HZ, session.app_files)
        ),
        name="stacks",
        daemon=True,
    )
    result_holder: list[BurstResult] = []

    def load() -> None:
        result_holder.append(
            run_burst(spec, level.concurrency, _PROFILE_WARMUP_S, PROFILE_S + 0.5, budget.stop, LiveCount())
        )

    loader = threading.Thread(target=load, name="profile load", daemon=True)
    loader.start()
    time.sleep(_PROFILE_WARMUP_S)
    sampler.start()
    sampler.join(PROFILE_S + 15)  # sample_workers kills py-spy itself past its own grace
    loader.join(PROFILE_S + session.options.timeout_s + 5)
    sample = box[0] if box else Unavailable("py-spy did not finish in time", "probe again")
    if isinstance(sample, Unavailable):
        return replace(ep, profile_unavailable=f"{sample.reason} ({sample.how_to_enable})")
    return replace(ep, profile=attribute(sample, session.app_files))


# After a stall the server may stay stuck until its own pool timeout (SQLAlchemy: 30 s) frees the
# threads: wait that long at most for one answer, so the next route is not measured on a stuck server.
RECOVERY_S: Final = 35.0


def _await_recovery(session: Session, spec: RequestSpec) -> None:
    """Send one request at a time until one is answered, within RECOVERY_S and the budget."""
    budget = session.budget
    end = min(time.monotonic() + RECOVERY_S, budget.deadline)
    while time.monotonic() < end and not budget.stop.is_set():
        probe_once = run_burst(
            spec, 1, 0.0, min(1.0, max(end - time.monotonic(), 0.05)), budget.stop, LiveCount()
        )
        if probe_once.latencies_ms:
            return


def _climb_all(
    session: Session,
    ops: Sequence[Operation],
    headers: tuple[tuple[str, str], ...],
    restart: Restart | None = None,
) -> tuple[list[Endpoint], TargetUnreachableError | None]:
    """Every endpoint's ladder, in two passes over the time budget; stops at a dead server."""
    options, budget = session.options, session.budget
    results: dict[int, Endpoint] = {}
    error: TargetUnreachableError | None = None
    # Pass 1 shares the time evenly; routes that saturate early leave time over, and pass 2
    # gives it to the ladders that stopped at their share (a 100 ms route needs the time to
    # climb past the threadpool knee).
    for first_pass in (True, False):
        todo = (
            list(range(len(ops)))
            if first_pass
            else [i for i, e in sorted(results.items()) if e.stop_reason == StopReason.TIME_BUDGET]
        )
        for k, i in enumerate(todo):
            if budget.stop.is_set() or error is not None:
                break
            op = ops[i]
            share = (budget.deadline - time.monotonic()) / (len(todo) - k)
            spec = _spec(op, headers, options)
            prior = results.get(i)
            try:
                ep = Ladder(session, op, spec, time.monotonic() + share, prior.levels if prior else ()).run()
                if prior is None:
                    ep = _with_profile(session, spec, ep)
                else:  # the second pass keeps the stacks the first one sampled
                    ep = replace(ep, profile=prior.profile, profile_unavailable=prior.profile_unavailable)
                ep = replace(ep, evidence_depth=EvidenceDepth.LADDER)
            except ServerDied as died:
                ep, error = _died(op, died)
            results[i] = with_body(ep, op)
            if first_pass:
                session.events.endpoint_done(ep)
            session = _unstick(session, ep, spec, restart)
    return [results.get(i) or _unreached(op, budget, error) for i, op in enumerate(ops)], error


def _maybe_stuck(ep: Endpoint) -> bool:
    """The ladder ended on a level that left the server stuck: nothing completed, or only timeouts."""
    if ep.stop_reason is StopReason.STALLED:
        return True
    last = ep.levels[-1] if ep.levels else None
    return (
        ep.stop_reason is StopReason.ERRORS
        and last is not None
        and last.errors_by_kind.get("timeout", 0) * 2 > last.requests
    )


def _unstick(session: Session, ep: Endpoint, spec: RequestSpec, restart: Restart | None) -> Session:
    """After a ladder that left the server stuck: a server the tool started is restarted at once
    (the session then follows its new processes); another is waited for after a stall only (a wait
    on timeouts could spend the budget the overload step needs to say that the server is wedged)."""
    if restart is not None and _maybe_stuck(ep):
        return follow(session, restart())
    if ep.stop_reason is StopReason.STALLED:
        _await_recovery(session, spec)
    return session


def _died(op: Operation, died: ServerDied) -> tuple[Endpoint, TargetUnreachableError]:
    ep = Endpoint(op.method, op.path, op.url, tuple(died.levels), StopReason.SERVER_DIED)
    return ep, TargetUnreachableError(f"the server stopped answering during {died} (connection refused)")


def _triage_all(
    session: Session, ops: Sequence[Operation], headers: tuple[tuple[str, str], ...], restart: Restart | None
) -> tuple[dict[int, Endpoint], TargetUnreachableError | None, Session]:
    """Every route's triage, each within its share of what is left; stops at a dead server. The
    session returned follows a server restarted after a route left it stuck."""
    budget, clock = session.budget, TriageClock()
    results: dict[int, Endpoint] = {}
    for i, op in enumerate(ops):
        if budget.stop.is_set():
            break
        # A route's first two levels may overrun its share of what is left, as long as every
        # later route keeps what they have cost so far (TriageClock); its third gives way first.
        left = len(ops) - i
        now = time.monotonic()
        fair, reserve = (budget.deadline - now) / left, clock.reserve_s()
        # When the budget cannot give every later route its reserve, reserving would shut them all
        # out one after the other: the routes reached then take what they need, first come.
        must = budget.deadline - reserve * (left - 1) if fair >= reserve else budget.deadline
        share = now + fair
        spec = _spec(op, headers, session.options)
        try:
            ep = triage_route(session, op, spec, share, must, clock)
        except ServerDied as died:
            ep, error = _died(op, died)
            results[i] = ep
            return results, error, session
        results[i] = with_body(ep, op)
        session.events.endpoint_done(ep)
        session = _unstick(session, ep, spec, restart)
    return results, None, session


# A full ladder ended on its own terms (not cut by the budget or a stop) is "ladder" evidence.
_CUT: Final = frozenset({StopReason.TIME_BUDGET, StopReason.INTERRUPTED, StopReason.REQUEST_BUDGET})


def _deepen(session: Session, op: Operation, spec: RequestSpec, prior: Endpoint, until: float) -> Endpoint:
    """A full ladder resumed from the route's triage levels; its stacks are the triage's.

    Its c=1 level is measured again at full length: the service time it gives is the base of every
    ratio the judge reads (scaling, latency inflation, a pool's size), and the triage's c=1 ends
    after a handful of answers.
    """
    resumed = tuple(lv for lv in prior.levels if lv.concurrency != 1)
    ep = Ladder(session, op, spec, until, resumed).run()
    if not any(lv.concurrency == 1 for lv in ep.levels):  # stopped before it: keep the triage's
        kept = [lv for lv in prior.levels if lv.concurrency == 1]
        ep = replace(ep, levels=tuple(sorted((*kept, *ep.levels), key=lambda lv: lv.concurrency)))
    depth = EvidenceDepth.TRIAGE if ep.stop_reason in _CUT else EvidenceDepth.LADDER
    ep = replace(
        ep, profile=prior.profile, profile_unavailable=prior.profile_unavailable, evidence_depth=depth
    )
    if ep.stop_reason is not StopReason.STALLED:  # a stalled server is the caller's to restart or wait for
        wait_drained(session.worker_pids, ep.levels[-1] if ep.levels else None, session.budget.stop,
                     session.budget.deadline)  # fmt: skip
    return with_body(ep, op)


def _triage_then_deepen(
    session: Session,
    ops: Sequence[Operation],
    headers: tuple[tuple[str, str], ...],
    server: ServerInfo,
    plan: BudgetPlan,
    order: DeepenOrder | None,
    restart: Restart | None = None,
) -> tuple[list[Endpoint], TargetUnreachableError | None, Session]:
    """Triage every route, then full ladders in the judge's order with what the budget has left;
    the session returned follows the server as it is now (restarted after a stuck ladder)."""
    budget, events = session.budget, session.events
    events.planned(plan)
    t0 = time.monotonic()
    results, error, session = _triage_all(session, ops, headers, restart)
    if error is None and not budget.stop.is_set() and len(results) == len(ops):
        triaged = [results[i] for i in range(len(ops))]
        picks = picks_for(order, triaged, server, session.options.route_weights or {})
        now = time.monotonic()
        events.planned(after_triage(plan, picks, now - t0, budget.deadline - now))
        for j, pick in enumerate(picks):
            until = ladder_deadline(time.monotonic(), budget.deadline, len(picks) - j)
            if until is None or budget.stop.is_set():
                break
            op, spec = ops[pick.index], _spec(ops[pick.index], headers, session.options)
            try:
                results[pick.index] = _deepen(session, op, spec, results[pick.index], until)
            except ServerDied as died:
                results[pick.index], error = _died(op, died)
                break
            session = _unstick(session, results[pick.index], spec, restart)
    return [results.get(i) or _unreached(op, budget, error) for i, op in enumerate(ops)], error, session


def _unreached(op: Operation, budget: Budget, error: TargetUnreachableError | None) -> Endpoint:
    """An endpoint the probe never came to: after a stop, a dead server, or the budget."""
    if error is not None:
        reason = StopReason.SERVER_DIED
    elif budget.stop.is_set():
        reason = StopReason.INTERRUPTED
    else:
        reason = StopReason.TIME_BUDGET
    return Endpoint(op.method, op.path, op.url, (), reason)


def not_measured(endpoints: Sequence[Endpoint]) -> tuple[list[Endpoint], list[Skipped]]:
    """Endpoints with levels, and the others as skipped with the reason no level was measured.

    The endpoint during which the server died stays an endpoint (its stop reason says where);
    the ones after it were never reached.
    """
    died = next((i for i, e in enumerate(endpoints) if e.stop_reason == StopReason.SERVER_DIED), None)
    measured = [e for i, e in enumerate(endpoints) if e.levels or i == died]
    skipped = [
        Skipped(
            e.method,
            e.path,
            f"{e.stop_reason}: no level measured" + _UNREACHED.get(e.stop_reason, ""),
            SkipCause.BUDGET
            if e.stop_reason in _UNREACHED or e.stop_reason is StopReason.INTERRUPTED
            else SkipCause.UNMEASURED,
        )
        for i, e in enumerate(endpoints)
        if not e.levels and i != died
    ]
    return measured, skipped


_UNREACHED: Final = {
    StopReason.TIME_BUDGET: " within --max-seconds (raise it, or probe fewer endpoints with -e/--exclude)",
    StopReason.REQUEST_BUDGET: " within --max-requests",
}


def run_probe(
    options: ProbeOptions,
    host: HostFacts,
    events: ProbeEvents | None = None,
    order: DeepenOrder | None = None,
    restart: Restart | None = None,
) -> ProbeOutcome:
    """Discover, then measure every endpoint; Ctrl-C and a dying server still give a report.

    The report's endpoints carry no verdicts: judging them is classify.classify_report's job. With
    the default levels every route is triaged first, then `order` (the judge's) says which get a
    full ladder first; with --levels every route climbs exactly those. After all of it, the overload
    step (which may wedge the server) within the budget; `restart` restarts a server the tool started.
    """
    events = events or Quiet()
    check_options(options)
    started = time.monotonic()  # the budget covers discovery and preflight too
    target = resolve_target(options.url, options.allow_remote)
    headers = tuple(parse_header(h) for h in options.headers)
    ops, skipped, openapi_url = find_operations(options, target.base_url, headers, started)
    # With nothing to drive the report is still written: every route's reason is the finding.
    server = find_server(target.port) if target.loopback else ServerInfo(local=False)
    observed = bool(ops) and server.local and server.pid is not None and supported()
    host_load = (
        host_busy_now(HOST_CHECK_S, exclude_pids=(server.pid,) if server.pid else ()) if observed else None
    )
    events.started(ops, skipped, server)
    if host_load is not None:
        events.host_checked(host_load)
    total_s, grown = budget_s(len(ops), options.max_seconds)
    reserve = reserve_s(options.overload, total_s)  # kept from the ladders for the overload step
    budget = Budget(deadline=started + total_s - reserve, max_requests=options.max_requests)
    watcher = ServerWatcher(server) if server.local and server.pid else None
    with stop_on_signals(budget.stop), watcher if watcher is not None else nullcontext():
        demand = DemandWatcher(server.worker_pids, (server.pid,)) if observed and server.pid else None
        session = Session(
            options, server.workers, watcher, budget, events, target.host, target.port, demand,
            server.worker_pids if server.local and server.pid else (),
            find_app_files(server.pid, options.app) if ops and server.pid and options.profile else None,
        )  # fmt: skip
        if options.levels is not None or not ops:
            climbed, error = _climb_all(session, ops, headers, restart)
        else:
            # The ladders that fit are counted without the reserve; the budget shown is the whole.
            plan = initial_plan(len(ops), total_s - reserve, grown, time.monotonic() - started)
            plan = replace(plan, budget_s=total_s)
            climbed, error, session = _triage_then_deepen(session, ops, headers, server, plan, order, restart)
        budget.deadline += reserve
        overload = None
        if error is None and ops:
            specs = [_spec(op, headers, options) for op in ops]
            overload = overload_step(session, ops, specs, climbed, options.overload, restart)
    endpoints, unreached = not_measured(climbed)
    report = ProbeReport(
        target=target.base_url,
        host=host,
        server=server,
        endpoints=tuple(endpoints),
        skipped=(*skipped, *unreached),
        settings=_settings(options, headers, openapi_url, total_s),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        interrupted=budget.stop.is_set(),
        elapsed_s=time.monotonic() - started,
        host_load=host_load,
        overload=overload,
    )
    return ProbeOutcome(report=report, error=error or nothing_measured(report))
