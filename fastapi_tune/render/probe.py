"""Showing a probe to people: one live line while it runs, then the report sized for the app.

The report: panels for the few routes that matter (every one with --verbose), the verdicts table
(one line per route, render.verdict_table), the skipped routes grouped by reason; render.overview
holds the order, grouping and panel rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from fastapi_tune.core.redact import redact_text
from fastapi_tune.core.rules import (
    P99_MIN_SAMPLES,
    STUCK_IN_FLIGHT_FACTOR,
    littles_law_ok,
    stuck_in_flight,
)
from fastapi_tune.discover.openapi import Operation, Skipped
from fastapi_tune.measure.demand import HostBusy
from fastapi_tune.measure.probe_options import BudgetPlan
from fastapi_tune.measure.report import (
    Endpoint,
    EvidenceDepth,
    Level,
    ProbeReport,
    ServerInfo,
    evidence_rows,
)
from fastapi_tune.render.overload import overload_panel
from fastapi_tune.render.overview import (
    PANELS_MAX,
    SKIP_GROUPS_SHOWN,
    choose_panels,
    ordered,
    panel_candidates,
    skip_groups,
    unusual_stop,
)
from fastapi_tune.render.styles import CLASS_STYLE
from fastapi_tune.render.verdict_table import verdict_lines

# What the evidence of a verdict rests on, when it is less than a full ladder.
DEPTH_LABEL: Final = {
    EvidenceDepth.TRIAGE: "evidence: the triage's short levels only (no full ladder)",
    EvidenceDepth.LADDER: "evidence: a full ladder",
}
_BAR_WIDTH: Final = 16
_BLOCKS: Final = " ▏▎▍▌▋▊▉█"


def bar(value: float, top: float, width: int = _BAR_WIDTH) -> str:
    """A horizontal bar in eighths of a cell: the per-level chart of the tables."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(min(1.0, value / top) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (_BLOCKS[part] if part else "")


class _StatusColumn(ProgressColumn):
    """The level under way with its live request and error counts, read at each refresh."""

    def __init__(self, owner: LiveProgress) -> None:
        super().__init__()
        self.owner = owner

    def render(self, task: Task) -> Text:
        if self.owner.live is None:
            return Text(self.owner.last)
        requests, errors = self.owner.live()
        return Text(f"c={self.owner.concurrency}: {requests} req, {errors} err")


class LiveProgress:
    """ProbeEvents on a rich progress bar (stderr): endpoint, level, requests, errors."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            _StatusColumn(self),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._done = 0
        self.live: Callable[[], tuple[int, int]] | None = None
        self.concurrency = 0
        self.last = ""

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def started(self, ops: Sequence[Operation], skipped: Sequence[Skipped], server: ServerInfo) -> None:
        where = (
            f"{server.kind or 'a server'} pid {server.pid}, {server.workers} worker(s)"
            if server.local and server.pid
            else "not found on this machine (no server CPU or memory)"
            if server.local
            else "remote (no server CPU or memory)"
        )
        head = f"Probing {len(ops)} endpoint(s)" if ops else "No endpoint left to probe"
        self.console.print(f"[bold]{head}[/]; server: {where}")
        for line in skipped_lines(skipped):
            self.console.print(Text(f"  {line}", style="dim"))
        self._task = self.progress.add_task("starting", total=len(ops))

    def host_checked(self, busy: HostBusy) -> None:
        if not busy.busy:
            return
        self.console.print(
            f"[yellow]warning:[/] {host_load_line(busy)}; verdicts lean on CPU demand, not use"
        )

    def planned(self, plan: BudgetPlan) -> None:
        self.console.print(plan_line(plan), highlight=False)

    def level_started(self, op: Operation, concurrency: int, live: Callable[[], tuple[int, int]]) -> None:
        self.live, self.concurrency = live, concurrency
        if self._task is not None:
            self.progress.update(self._task, description=escape(f"{op.method} {op.path}"))

    def level_done(self, op: Operation, level: Level) -> None:
        self.live = None
        self.last = (
            f"c={level.concurrency}: {level.requests} req, {level.errors} err,"
            f" {level.throughput_rps:.0f} req/s"
        )

    def endpoint_done(self, endpoint: Endpoint) -> None:
        if self._task is not None:
            self._done += 1
            self.progress.update(self._task, completed=self._done)


def plan_line(plan: BudgetPlan) -> str:
    """What the probe will do with its time: before the triage, and again once it is done."""
    budget = f"budget {plan.budget_s:.0f} s" + (", grown with the route count" if plan.grown else "")
    if plan.triage_took_s is None:
        ladders = (
            f"then full ladders for about {plan.ladders} of them (~{plan.ladder_s:.0f} s each)"
            if plan.ladders < plan.routes
            else "then a full ladder for each"
        )
        return (
            f"{plan.routes} route(s): a triage of each first (~{plan.triage_s:.0f} s), {ladders};"
            f" about {plan.estimate_s:.0f} s ({budget})"
        )
    took = f"Triage done in {plan.triage_took_s:.0f} s"
    if not plan.picks:
        return f"{took}; no time left for full ladders: every verdict rests on the triage"
    why = Counter(p.why for p in plan.picks)
    reasons = ", ".join(f"{n} {w}" for w, n in why.most_common())
    return (
        f"{took}; full ladders next for {len(plan.picks)} of {plan.routes} ({reasons});"
        f" about {len(plan.picks) * plan.ladder_s:.0f} s more"
    )


def host_load_line(busy: HostBusy) -> str:
    """'the host is busy: other processes use 1.4 cores (postgres 0.8, ...), CPU pressure 35%'."""
    top = ", ".join(f"{c.name} {c.cores:.2f}" for c in busy.top_others)
    pressure = f", CPU pressure {busy.cpu_pressure:.0%}" if busy.cpu_pressure is not None else ""
    return (
        f"the host is {'busy' if busy.busy else 'quiet'}: other processes use {busy.others_cores:.2f} of"
        f" {busy.cpus} cores{f' ({top})' if top else ''}{pressure}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def level_table(ep: Endpoint, full: bool = True) -> tuple[Table, list[str]]:
    """Per level: throughput and p50 with bars (the chart), p99, errors, CPU, memory; plus notes.

    The notes say what is unusual (a stall, a stuck request, a saturated client, uneven workers, a
    failed Little's law check); `full` adds what is normal but worth a word (thin p99 samples).
    """
    t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    t.add_column("c", justify="right")
    t.add_column("req/s", justify="right")
    t.add_column("", justify="left", no_wrap=True)
    t.add_column("p50 ms", justify="right")
    t.add_column("", justify="left", no_wrap=True)
    t.add_column("p99", justify="right")
    t.add_column("errors", justify="left")
    t.add_column("srv CPU", justify="right")
    t.add_column("RSS/wkr", justify="right")
    top_x = max((lv.throughput_rps for lv in ep.levels), default=0.0)
    top_r = max((lv.latency_ms.p50 for lv in ep.levels if lv.latency_ms), default=0.0)
    notes: list[str] = []
    thin = [lv.concurrency for lv in ep.levels if lv.latency_ms is not None and not lv.p99_supported]
    if thin and full:
        notes.append(
            f"p99 '-' at c={','.join(map(str, thin))}: fewer than {P99_MIN_SAMPLES} samples cannot support it"
        )
    for lv in ep.levels:
        lat = lv.latency_ms
        errs = ", ".join(f"{k} {v}" for k, v in sorted(lv.errors_by_kind.items())) or "0"
        notes += level_notes(lv)
        mark = " [bold red]STALL[/]" if lv.stalled else " [red]![/]" if lv.client_saturated else ""
        t.add_row(
            f"{lv.concurrency}{mark}",
            f"{lv.throughput_rps:.1f}",
            f"[cyan]{bar(lv.throughput_rps, top_x, 10)}[/]",
            _ms(lat.p50 if lat else None),
            f"[blue]{bar(lat.p50, top_r, 8) if lat else ''}[/]",
            _ms(lat.p99 if lat else None),
            errs if lv.errors == 0 else f"[red]{errs}[/]",
            "-" if lv.server_cpu_cores is None else f"{lv.server_cpu_cores:.2f}",
            f"{max(lv.server_rss_bytes) / 2**20:.0f} MiB" if lv.server_rss_bytes else "-",
        )
    return t, notes


def level_notes(lv: Level) -> list[str]:
    """What is news about one level. Requests in flight at its end are not: a closed loop at c=N
    always has N of them; only a stuck one (core.rules.stuck_in_flight) is."""
    notes: list[str] = []
    c = lv.concurrency
    lat = lv.latency_ms
    oldest = f" (the oldest waited {lv.oldest_in_flight_ms:.0f} ms)" if lv.oldest_in_flight_ms else ""
    if lv.stalled:
        notes.append(f"c={c}: STALLED: {lv.in_flight_at_end} requests in flight, none completed{oldest}")
    elif lv.in_flight_at_end and stuck_in_flight(
        lv.oldest_in_flight_ms, lat.p99 if lat else None, lat.max if lat else None
    ):
        usual = "p99" if lat is not None and lat.p99 is not None else "slowest answer"
        usual_ms = (lat.p99 if lat.p99 is not None else lat.max) if lat is not None else 0.0
        notes.append(
            f"c={c}: a request was stuck: the oldest of {lv.in_flight_at_end} still in flight at the end"
            f" had waited {lv.oldest_in_flight_ms or 0:.0f} ms, over {STUCK_IN_FLIGHT_FACTOR:g} x the"
            f" level's {usual} ({usual_ms:.0f} ms)"
        )
    if lv.client_saturated:
        notes.append(
            f"c={c}: the load generator used {lv.client_cpu_cores:.2f} cores and was the limit;"
            " not used as evidence"
        )
    if lv.worker_imbalance and lv.server_cpu_by_worker:
        split = ", ".join(f"{x:.2f}" for x in lv.server_cpu_by_worker)
        notes.append(
            f"c={c}: workers unevenly loaded (cores per worker: {split}): keep-alive"
            " connections stayed on the worker that accepted them, so this level understates the server"
        )
    if lv.littles_law_ratio is not None and not littles_law_ok(lv.littles_law_ratio):
        notes.append(
            f"c={c}: Little's law check off (throughput x mean latency / c ="
            f" {lv.littles_law_ratio:.2f}, ~1 expected): requests stalled or the window was short"
        )
    return notes


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _evidence_table(ep: Endpoint) -> Table:
    """The numbers behind the verdict, each with what it means."""
    t = Table(show_edge=False, pad_edge=False, box=None, show_header=False)
    t.add_column("value", justify="right", style="cyan")
    t.add_column("meaning", style="dim")
    if ep.verdict is not None:
        ev = ep.verdict.evidence
        for _, label, value in evidence_rows(ev):
            t.add_row(_number(value), label)
        if ev.workers is None:  # evidence_rows leaves out what was not measured; this one was assumed
            t.add_row("?", "worker processes: not seen (a remote or unreadable server), 1 assumed")
    return t


def _panel_title(ep: Endpoint) -> Text:
    title = Text.assemble((ep.route, "bold"))
    v = ep.verdict
    if v is not None:
        title.append("  ")
        title.append(v.cls, style=f"bold {CLASS_STYLE[v.cls]}")
        title.append(f" (confidence {v.confidence:.0%})", style="dim")
    return title


def endpoint_panel(ep: Endpoint, full: bool = True) -> Panel:
    """One endpoint: its levels, its verdict with confidence, and the advice.

    `full` adds every number of the evidence with its meaning, the normal notes and the ladder's end;
    without it the panel keeps what is unusual and the summary, whose numbers carry the verdict.
    """
    table, notes = level_table(ep, full)
    parts: list[Table | Text] = [table, *(Text(n, style="dim") for n in notes)]
    v = ep.verdict
    if v is not None:
        parts += [Text(""), Text(v.summary)] if full else [Text(v.summary)]
        if full:
            parts.append(_evidence_table(ep))
        parts += [Text(f"  → {a}") for a in v.advice]
    stop = unusual_stop(ep)
    if full or stop is not None:
        detail = f" ({redact_text(ep.stop_detail)})" if ep.stop_detail else ""
        parts.append(Text(f"ladder stopped: {ep.stop_reason}{detail}", style="dim"))
    if full and ep.evidence_depth is EvidenceDepth.TRIAGE:
        parts.append(Text(DEPTH_LABEL[ep.evidence_depth], style="dim"))
    return Panel(Group(*parts), title=_panel_title(ep), title_align="left", expand=True)


def _took(s: Skipped) -> str:
    """How long its preflight took: a hang shows as the whole --timeout."""
    if s.elapsed_ms is None:
        return ""
    return f" ({s.elapsed_ms:.0f} ms)" if s.elapsed_ms < 1000 else f" ({s.elapsed_ms / 1000:.1f} s)"


def skipped_lines(skipped: Sequence[Skipped], every: bool = False) -> list[str]:
    """The skipped routes grouped by reason, with a count and one example (plain text: paths come
    from the document; reasons may quote the server, so they are redacted as the JSON is); `every`
    lists each one instead, with its preflight's time."""
    if every:
        return [f"skipped {s.method} {s.path}{_took(s)}: {redact_text(s.reason)}" for s in skipped]
    groups = skip_groups(skipped)
    lines = [
        f"skipped {g.example.method} {g.example.path}{_took(g.example)}: {redact_text(g.example.reason)}"
        if g.count == 1
        else f"skipped {g.count}: {redact_text(g.reason)}, e.g. {g.example.method} {g.example.path}"
        + (f" ({redact_text(g.detail)})" if g.detail else "")
        for g in groups[:SKIP_GROUPS_SHOWN]
    ]
    rest = groups[SKIP_GROUPS_SHOWN:]
    if rest:
        lines.append(
            f"skipped {sum(g.count for g in rest)} more for {len(rest)} other reasons"
            " (--verbose or the report's skipped[] lists each)"
        )
    return lines


def _height(console: Console, panel: Panel) -> int:
    return len(console.render_lines(panel, console.options, pad=False))


def _panels(console: Console, ranked: Sequence[Endpoint], verbose: bool) -> list[Panel]:
    """Every route's full panel with --verbose; otherwise compact panels of the few that matter."""
    if verbose:
        return [endpoint_panel(ep) for ep in ranked]
    candidates = panel_candidates(ranked)[:PANELS_MAX]
    drawn = [endpoint_panel(ranked[i], full=False) for i in candidates]
    chosen = choose_panels(candidates, [_height(console, p) for p in drawn])
    return [drawn[candidates.index(i)] for i in chosen]


def _legend(report: ProbeReport, panels: int) -> list[str]:
    """What the compact view left out, and where it is."""
    lines: list[str] = []
    routes = len(report.endpoints)
    if panels < routes:
        shown = (
            f"Panels for {panels} of {routes} routes (problems, then the routes that size the workers)"
            if panels
            else "No panels: no route is a problem or sizes the workers"
        )
        lines.append(f"{shown}; --verbose shows every one in full; the JSON and --html hold every number.")
    if any(lv.latency_ms and not lv.p99_supported for e in report.endpoints for lv in e.levels):
        lines.append(f"p99 '-': fewer than {P99_MIN_SAMPLES} samples at that level cannot support it.")
    return lines


def print_report(console: Console, report: ProbeReport, verbose: bool = False) -> None:
    """The panels of the routes that matter (all with `verbose`), then one line per route, problems
    first, and the skipped routes grouped by reason (render.overview holds the rules)."""
    ranked = ordered(report.endpoints)
    if not ranked:
        # Nothing was measured: each route's reason is the finding, not a footnote.
        if report.skipped:
            console.print("[bold red]No endpoint was measured.[/] Why, route by route:")
        for line in skipped_lines(report.skipped, every=True):
            console.print(Text(line))
    else:
        panels = _panels(console, ranked, verbose)
        for panel in panels:
            console.print(panel)
        console.print(Group(*verdict_lines(ranked, console.width)))  # a Group keeps each line's no_wrap
        if report.overload is not None:
            console.print(overload_panel(report.overload))
        for line in skipped_lines(report.skipped, every=verbose):
            console.print(Text(line, style="dim"))
        if not verbose:
            for line in _legend(report, len(panels)):
                console.print(Text(line, style="dim"))
    reasons = {e.profile_unavailable for e in report.endpoints if e.profile_unavailable}
    for reason in sorted(reasons):
        console.print(f"[dim]Stacks not sampled: {escape(reason)}[/]")
    if report.host_load is not None:
        style = "yellow" if report.host_load.busy else "dim"
        console.print(f"[{style}]At the start, {host_load_line(report.host_load)}.[/]")
    if report.interrupted:
        console.print("[yellow]Interrupted: the report holds the levels measured before Ctrl-C.[/]")
