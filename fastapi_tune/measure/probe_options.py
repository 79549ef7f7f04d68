"""What a probe is asked to do (its options, checked once) and whom it tells as it goes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from fastapi_tune.core import checks
from fastapi_tune.core.errors import FastapiTuneError, UsageError
from fastapi_tune.core.rules import OVERLOAD_PER_WORKER
from fastapi_tune.discover.openapi import (
    Operation,
    Skipped,
)
from fastapi_tune.measure.demand import (
    HostBusy,
)
from fastapi_tune.measure.report import Endpoint, Level, ProbeReport, ServerInfo

DEFAULT_MAX_CONCURRENCY: Final = 128


@dataclass(frozen=True)
class ProbeOptions:
    """What the user asked for; validated by `check_options`."""

    url: str
    openapi: str | None = None
    endpoints: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    levels: tuple[int, ...] | None = None
    max_concurrency: int | None = None
    duration_s: float | None = None
    warmup_s: float = 0.2
    max_seconds: float | None = None  # None: the default budget, grown with the route count
    max_requests: int = 500_000
    timeout_s: float = 10.0
    verify_tls: bool = True
    allow_remote: bool = False
    base_duration_s: float = 0.5
    unsafe: bool = False  # drive POST/PUT/PATCH/DELETE from the document too
    params: tuple[str, ...] = ()  # --param NAME=VALUE
    bodies: tuple[str, ...] = ()  # --body "POST /items=@body.json"
    preflight: bool = True  # one request per endpoint first; failing ones are skipped
    profile: bool = True  # sample the server's stacks at each route's most loaded clean level
    # MODULE:ATTRIBUTE the server serves, when the caller started it (demo, tune): its files are found
    # as the server resolves them, for naming the app's lines (default: read off the server's command line)
    app: str | None = None
    # The overload step after every ladder: in flight per worker (--overload C); None: --no-overload.
    overload: int | None = OVERLOAD_PER_WORKER
    # Route name ("GET /orders/{oid}", as the report names it) -> weight, e.g. its share of the
    # traffic in the access logs or --mix. When given, endpoints are preflighted and triaged
    # heaviest first, and the weight moves a route up the order of full ladders after the triage;
    # routes without a weight come last, in the document's order.
    route_weights: Mapping[str, float] | None = None


@dataclass(frozen=True)
class DeepenPick:
    """A triaged route chosen for a full ladder, and why (the order is the priority)."""

    index: int  # into the triaged endpoints, as discovered
    why: str  # a few words: "uncertain", "serialised", "slowest"


class DeepenOrder(Protocol):
    """Which triaged routes get a full ladder first (the judge decides; the probe only measures)."""

    def __call__(
        self, triaged: Sequence[Endpoint], server: ServerInfo, weights: Mapping[str, float]
    ) -> Sequence[DeepenPick]: ...


@dataclass(frozen=True)
class BudgetPlan:
    """What the probe will do with its time, said before it starts and again after the triage."""

    routes: int
    budget_s: float  # the whole probe, discovery included
    grown: bool  # the default budget grew with the route count (no --max-seconds)
    triage_s: float  # estimated for the triage of every route
    ladder_s: float  # estimated for one full ladder after the triage
    ladders: int  # full ladders expected to fit after the triage
    spent_s: float = 0.0  # discovery and preflight, before the triage
    # After the triage: how long it took and the routes picked for a full ladder, in order.
    triage_took_s: float | None = None
    picks: tuple[DeepenPick, ...] = ()

    @property
    def estimate_s(self) -> float:
        """The whole probe, as planned: the triage and the ladders that fit, within the budget."""
        return min(self.budget_s, self.spent_s + self.triage_s + self.ladders * self.ladder_s)


class ProbeEvents(Protocol):
    """What a renderer can show while the probe runs (the probe itself never prints)."""

    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None: ...

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None: ...

    def level_done(self, op: Operation, level: Level) -> None: ...

    def endpoint_done(self, endpoint: Endpoint) -> None: ...

    def host_checked(self, busy: HostBusy) -> None: ...

    def planned(self, plan: BudgetPlan) -> None: ...


class Quiet:
    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None:
        pass

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None:
        pass

    def level_done(self, op: Operation, level: Level) -> None:
        pass

    def endpoint_done(self, endpoint: Endpoint) -> None:
        pass

    def host_checked(self, busy: HostBusy) -> None:
        pass

    def planned(self, plan: BudgetPlan) -> None:
        pass


def check_options(o: ProbeOptions) -> None:
    """Reject option values that cannot work (NaN, infinity, out of range), before anything is sent."""
    if o.levels is not None and not o.levels:
        raise UsageError("--levels: expected positive integers such as 1,8,64")
    for n in o.levels or ():
        checks.whole(n, "--levels", 1, checks.MAX_CONCURRENCY)
    if o.max_concurrency is not None:
        checks.whole(o.max_concurrency, "--max-concurrency", 1, checks.MAX_CONCURRENCY)
    if o.duration_s is not None:
        checks.number(o.duration_s, "--duration", 0.05, 600, " seconds")
    if o.max_seconds is not None:
        checks.number(o.max_seconds, "--max-seconds", checks.MIN_BUDGET_S, checks.MAX_SECONDS, " seconds")
    for key, weight in (o.route_weights or {}).items():
        checks.number(weight, f"traffic weight of {key}", 0, 1e12)
    checks.whole(o.max_requests, "--max-requests", 1, checks.MAX_REQUESTS)
    checks.number(o.timeout_s, "--timeout", checks.MIN_TIMEOUT_S, checks.MAX_TIMEOUT_S, " seconds")
    checks.number(o.warmup_s, "warm-up", 0, 600, " seconds")
    if o.overload is not None:
        checks.whole(o.overload, "--overload", 1, checks.MAX_CONCURRENCY)
    top = max(o.levels) if o.levels else (o.max_concurrency or DEFAULT_MAX_CONCURRENCY)
    checks.open_files_allow(top, "--levels" if o.levels else "--max-concurrency")


@dataclass(frozen=True)
class ProbeOutcome:
    report: ProbeReport
    # The server died mid-probe (the report is partial), or nothing could be measured (the report
    # says why for each route): raised by the command once the report is saved.
    error: FastapiTuneError | None = None
