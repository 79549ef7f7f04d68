"""Showing a probe to people: live progress while it runs, then per-endpoint tables and verdicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
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

from fastapi_tune.core.rules import P99_MIN_SAMPLES, littles_law_ok
from fastapi_tune.discover.openapi import Operation, Skipped
from fastapi_tune.measure.demand import HostBusy
from fastapi_tune.measure.report import (
    Endpoint,
    EndpointClass,
    Level,
    ProbeReport,
    ServerInfo,
    evidence_rows,
)
from fastapi_tune.render.overload import overload_panel

CLASS_STYLE: Final = {
    EndpointClass.IO_BOUND: "green",
    EndpointClass.CPU_BOUND: "yellow",
    EndpointClass.LOOP_BLOCKING: "red",
    EndpointClass.THREADPOOL_BOUND: "magenta",
    EndpointClass.SERIALIZED: "yellow",
    EndpointClass.POOL_BOUND: "cyan",
    EndpointClass.STALLED: "bold red",
    EndpointClass.INCONCLUSIVE: "dim",
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
        self.console.print(f"[bold]Probing {len(ops)} endpoint(s)[/]; server: {where}")
        for line in skipped_lines(skipped):
            self.console.print(Text(f"  {line}", style="dim"))
        self._task = self.progress.add_task("starting", total=len(ops))

    def host_checked(self, busy: HostBusy) -> None:
        if not busy.busy:
            return
        self.console.print(
            f"[yellow]warning:[/] {host_load_line(busy)}; verdicts lean on CPU demand, not use"
        )

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


def level_table(ep: Endpoint) -> tuple[Table, list[str]]:
    """Per level: throughput and p50 with bars (the chart), p99, errors, CPU, memory; plus notes."""
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
    if thin:
        notes.append(
            f"p99 '-' at c={','.join(map(str, thin))}: fewer than {P99_MIN_SAMPLES} samples cannot support it"
        )
    for lv in ep.levels:
        lat = lv.latency_ms
        errs = ", ".join(f"{k} {v}" for k, v in sorted(lv.errors_by_kind.items())) or "0"
        mark = ""
        if lv.stalled:
            mark = " [bold red]STALL[/]"
            notes.append(
                f"c={lv.concurrency}: STALLED: {lv.in_flight_at_end} requests in flight, none completed"
                + (f" (the oldest waited {lv.oldest_in_flight_ms:.0f} ms)" if lv.oldest_in_flight_ms else "")
            )
        elif lv.in_flight_at_end:
            notes.append(
                f"c={lv.concurrency}: {lv.in_flight_at_end} requests were still in flight at the end"
            )
        if lv.client_saturated:
            mark = " [red]![/]"
            notes.append(
                f"c={lv.concurrency}: the load generator used {lv.client_cpu_cores:.2f} cores and was the"
                " limit; not used as evidence"
            )
        if lv.worker_imbalance and lv.server_cpu_by_worker:
            split = ", ".join(f"{c:.2f}" for c in lv.server_cpu_by_worker)
            notes.append(
                f"c={lv.concurrency}: workers unevenly loaded (cores per worker: {split}): keep-alive"
                " connections stayed on the worker that accepted them, so this level understates the server"
            )
        if lv.littles_law_ratio is not None and not littles_law_ok(lv.littles_law_ratio):
            notes.append(
                f"c={lv.concurrency}: Little's law check off (throughput x mean latency / c ="
                f" {lv.littles_law_ratio:.2f}, ~1 expected): requests stalled or the window was short"
            )
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
        for _, label, value in evidence_rows(ep.verdict.evidence):
            t.add_row(_number(value), label)
    return t


def endpoint_panel(ep: Endpoint) -> Panel:
    """One endpoint: its levels, its verdict with confidence, the evidence and the advice."""
    table, notes = level_table(ep)
    parts: list[Table | Text] = [table, *(Text(n, style="dim") for n in notes)]
    v = ep.verdict
    if v is not None:
        style = CLASS_STYLE[v.cls]
        head = Text.assemble(
            ("verdict: ", "bold"),
            (v.cls, f"bold {style}"),
            (f"  (confidence {v.confidence:.0%})", "dim"),
        )
        parts += [Text(""), head, Text(v.summary), _evidence_table(ep)]
        parts += [Text(f"  → {a}") for a in v.advice]
    detail = f" ({ep.stop_detail})" if ep.stop_detail else ""
    parts.append(Text(f"ladder stopped: {ep.stop_reason}{detail}", style="dim"))
    title = f"[bold]{escape(ep.method)} {escape(ep.path)}[/]"
    return Panel(Group(*parts), title=title, title_align="left", expand=True)


# Past this many skipped operations (a document of thousands under a short budget) the screen
# shows a count per reason; the report keeps every one.
SKIPPED_SHOWN: Final = 20


def skipped_lines(skipped: Sequence[Skipped]) -> list[str]:
    """'skipped METHOD /path: reason' (plain text: paths come from the document), then counts."""
    lines = [f"skipped {s.method} {s.path}: {s.reason}" for s in skipped[:SKIPPED_SHOWN]]
    rest = Counter(s.reason.split(":", 1)[0] for s in skipped[SKIPPED_SHOWN:])
    lines += [f"skipped {n} more: {reason}" for reason, n in rest.most_common()]
    return lines


def print_report(console: Console, report: ProbeReport) -> None:
    """Every endpoint's panel, then a one-line-per-endpoint summary of the verdicts."""
    for ep in report.endpoints:
        console.print(endpoint_panel(ep))
    summary = Table(title="Verdicts", title_justify="left")
    summary.add_column("endpoint")
    summary.add_column("class")
    summary.add_column("confidence", justify="right")
    summary.add_column("peak req/s", justify="right")
    for ep in report.endpoints:
        peak = max((lv.throughput_rps for lv in ep.levels), default=0.0)
        cls = ep.verdict.cls if ep.verdict else None
        summary.add_row(
            Text(f"{ep.method} {ep.path}"),
            Text(cls or "-", style=CLASS_STYLE[cls] if cls else ""),
            f"{ep.verdict.confidence:.0%}" if ep.verdict else "-",
            f"{peak:.1f}",
        )
    console.print(summary)
    if report.overload is not None:
        console.print(overload_panel(report.overload))
    for line in skipped_lines(report.skipped):
        console.print(Text(line, style="dim"))
    reasons = {e.profile_unavailable for e in report.endpoints if e.profile_unavailable}
    for reason in sorted(reasons):
        console.print(f"[dim]Stacks not sampled: {escape(reason)}[/]")
    if report.host_load is not None:
        style = "yellow" if report.host_load.busy else "dim"
        console.print(f"[{style}]At the start, {host_load_line(report.host_load)}.[/]")
    if report.interrupted:
        console.print("[yellow]Interrupted: the report holds the levels measured before Ctrl-C.[/]")
