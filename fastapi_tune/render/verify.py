"""Showing verify's runs side by side, with bars for throughput and memory, and the verdict."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fastapi_tune.render.overload import check_to_json, overload_table
from fastapi_tune.render.probe import bar
from fastapi_tune.verify.judge import RateCheck, error_text, fell_behind, objective_verdict
from fastapi_tune.verify.overload import checks_verdict
from fastapi_tune.verify.run import RECOMMENDED, Run, VerifyResult


class VerifyProgress:
    """VerifyEvents on a spinner (stderr): which configuration runs, and the last run's result.

    One live line: the table at the end holds every run; `verbose` also prints each run as it ends.
    """

    def __init__(self, console: Console, verbose: bool = False) -> None:
        # Transient: the spinner's last line goes away, so an error is the first thing after it.
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("starting")
        self.console = console
        self.verbose = verbose
        self.last = ""

    def __enter__(self) -> VerifyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_started(
        self, label: str, workers: int | None, round_no: int, rounds: int, live: Callable[[], tuple[int, int]]
    ) -> None:
        shown = "config's workers" if workers is None else f"{workers} worker(s)"
        self.progress.update(
            self.task,
            description=f"round {round_no}/{rounds}: {label} ({shown}): booting the server, then load"
            + self.last,
        )

    def step(self, text: str) -> None:
        self.progress.update(self.task, description=f"  {text}")

    def run_done(self, run: Run) -> None:
        line = (
            f"{run.names}: {run.workers} workers, {run.throughput_rps:.1f} req/s,"
            f" p50 {run.p50_ms if run.p50_ms is not None else '-'} ms, errors {error_text(run)}"
        )
        self.last = f" (last: {line})"
        if self.verbose:
            self.console.print(f"  {line}")


def note_lines(notes: Sequence[str], every: bool = False) -> list[str]:
    """verify's notes, those about routes ('GET /a: left out, inconclusive in the probe') grouped by
    what they say, with a count and one example; `every` keeps one line per note."""
    if every:
        return list(notes)
    groups: dict[str, list[str]] = {}
    for note in notes:
        route, _, said = note.partition(": ")
        about_a_route = " /" in route and said
        groups.setdefault(said if about_a_route else note, []).append(route if about_a_route else "")
    lines: list[str] = []
    for said, routes in groups.items():
        if not routes[0]:
            lines.append(said)
        elif len(routes) == 1:
            lines.append(f"{routes[0]}: {said}")
        else:
            lines.append(f"{len(routes)} routes {said}, e.g. {routes[0]} (--verbose names each)")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}"


def _err_cell(run: Run) -> str:
    """Errors over all rounds as a share of their requests, with the status codes and kinds."""
    if not run.errors:
        return "0"
    kinds = [f"{s}x{n}" for s, n in sorted(run.errors_by_status.items())]
    kinds += [f"{k}x{n}" for k, n in sorted(run.errors_by_kind.items()) if not k[0].isdigit()]
    return f"[red]{run.error_ratio:.1%} {' '.join(kinds)}[/]"


# Past this many endpoints the table's title names a few and counts the rest (--verbose names all).
ENDPOINTS_NAMED: Final = 6


def _driven(endpoints: Sequence[str], every: bool) -> str:
    if every or len(endpoints) <= ENDPOINTS_NAMED:
        return ", ".join(endpoints)
    named = ", ".join(endpoints[:ENDPOINTS_NAMED])
    return f"{len(endpoints)} endpoints ({named} and {len(endpoints) - ENDPOINTS_NAMED} more)"


def _title(result: VerifyResult, verbose: bool) -> str:
    return (
        f"Same load on every run: {escape(_driven(result.endpoints, verbose))} at c={result.concurrency},"
        f" {result.duration_s:g} s each, median of {result.repeat} interleaved round(s)"
        " (latency ms, workers' RSS MiB, server CPU cores; err: failed requests of all rounds, % of"
        f" their requests, by status or kind). Worker recycling {result.recycling}."
    )


def _closed_table(result: VerifyResult, verbose: bool) -> Table:
    t = Table(title=_title(result, verbose), title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = (
        ("run", "left"), ("wkrs", "right"), ("req/s", "right"), ("", "left"), ("p50", "right"),
        ("p99", "right"), ("err", "left"), ("RSS", "right"), ("CPU", "right"),
    )  # fmt: skip
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=name != "err")  # type: ignore[arg-type]
    top_x = max((r.throughput_rps for r in result.runs), default=0.0)
    v = result.verdict
    for r in result.runs:
        mark = ""
        if v is not None and r.label == v.best.label and v.best_is_clear:
            mark = " ★"
        elif v is not None and len(v.tied) > 1 and r.label in v.tied:
            mark = " ≈"
        t.add_row(
            r.names + mark,
            str(r.workers),
            f"{r.throughput_rps:.1f}",
            f"[cyan]{bar(r.throughput_rps, top_x, 8)}[/]",
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            _err_cell(r),
            f"{r.rss_mib:.0f}",
            f"{r.server_cpu_cores:.2f}",
            style="bold" if r.label == RECOMMENDED else "",
        )
    return t


def _open_table(result: VerifyResult) -> Table | None:
    """The open loop at --rate and the capacity at the objective, one row per configuration."""
    capacity = any(r.capacity is not None for r in result.runs)
    if result.rate_rps is None and not capacity:
        return None
    title = "At an arrival rate (open loop: latency ms from each request's start, rounds merged)"
    if result.objective is not None:
        title += f"; objective {result.objective.describe()}"
    if result.rate_rps is not None:
        title += (
            f". At {result.rate_rps:g}/s: arrived = requests started per second, served = responses"
            " that ended inside the window per second, queued = requests in flight at its end"
        )
    behind = [
        f"{r.names}: {line}"
        for r in result.runs
        if r.at_rate is not None and (line := fell_behind(r.at_rate)) is not None
    ]
    t = Table(
        title=title,
        title_justify="left",
        caption="\n".join(f"[red]{escape(b)}[/]" for b in behind) or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    t.add_column("run", no_wrap=True)
    if result.rate_rps is not None:
        for name in _RATE_COLUMNS:
            t.add_column(name, justify="right", no_wrap=True)
    if capacity:
        t.add_column("capacity at SLO", justify="right", no_wrap=True)
    for r in result.runs:
        t.add_row(r.names, *_rate_cells(result, r), style="bold" if r.label == RECOMMENDED else "")
    return t


_RATE_COLUMNS = ("arrived", "served", "queued", "p50", "p99", "p99.9", "failed", "late", "SLO")


def _rate_cells(result: VerifyResult, run: Run) -> list[str]:
    cells: list[str] = []
    check = run.at_rate
    if result.rate_rps is not None and check is not None:
        pct = check.percentiles()
        verdict = objective_verdict(run, result.objective) if result.objective is not None else None
        served = f"{check.served_rps:.1f}"
        cells += [
            f"{check.arrival_rps:.1f}",
            served if fell_behind(check) is None else f"[red]{served}[/]",
            str(check.backlog_at_end),
            _ms(pct.get(50.0)),
            _ms(pct.get(99.0)),
            _ms(pct.get(99.9)),
            f"{check.failed / check.intended:.1%}" if check.intended else "-",
            str(check.late),
            "-" if verdict is None else "[green]met[/]" if verdict[0] else "[red]missed[/]",
        ]
    elif result.rate_rps is not None:
        cells += ["-"] * len(_RATE_COLUMNS)
    if any(r.capacity is not None for r in result.runs):
        cap = run.capacity
        cells.append("-" if cap is None else "none" if cap.rate_rps is None else f"{cap.rate_rps:.0f} req/s")
    return cells


def print_verify(console: Console, result: VerifyResult, verbose: bool = False) -> None:
    """The side-by-side tables (the bars are the chart), the verdict and the objective's."""
    console.print(_closed_table(result, verbose))
    open_table = _open_table(result)
    if open_table is not None:
        console.print(open_table)
    v = result.verdict
    if v is not None:
        legend = " (★ best beyond the noise, ≈ tied within it)" if v.best_is_clear or len(v.tied) > 1 else ""
        console.print(f"[bold]Verdict:[/]{legend} {v.line}")
    elif result.runs:
        console.print(
            "[bold red]Verdict:[/] no run is comparable: every one failed more than 1% of its requests"
        )
    for r in result.runs:
        if r.capacity is not None and result.objective is not None:
            steps = ", ".join(f"{rate:g} {'ok' if ok else 'missed'}" for rate, ok, _ in r.capacity.steps)
            console.print(f"  capacity search of {r.names} (req/s): {steps}")
    if result.slo_line is not None:
        colour = "green" if result.slo_met else "red"
        console.print(f"[bold {colour}]Objective:[/] {escape(result.slo_line)}")
    for r in result.runs:
        for note in r.notes:
            console.print(f"[yellow]note:[/] {escape(r.names)}: {escape(note)}")
    if result.overload:
        console.print(overload_table(result.overload))
        console.print(f"[bold]Overload:[/] {escape(checks_verdict(result.overload) or '')}")
    if result.interrupted:
        console.print("[yellow]Interrupted: the table shows the runs finished before Ctrl-C.[/]")


def _latency_json(values: Mapping[float, float]) -> dict[str, float | None]:
    return {f"p{q:g}": (None if math.isnan(v) else v) for q, v in values.items()}


def rate_json(check: RateCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    behind = fell_behind(check)
    return {
        "rate_rps": check.rate_rps,
        "arrival_rps": round(check.arrival_rps, 3),
        "served_rps": round(check.served_rps, 3),
        "duration_s": round(check.duration_s, 3),
        "intended": check.intended,
        "sent": check.sent,
        "served_in_window": check.served,
        "completed": check.completed,
        "failed": check.failed,
        "late_starts": check.late,
        "dropped_starts": check.dropped,
        "backlog_at_end": check.backlog_at_end,
        "drain_s": None if check.drain_s is None else round(check.drain_s, 3),
        "fell_behind": behind is not None,
        "beyond_capacity": behind,
        "latency_ms": _latency_json(check.percentiles()),
        "latency_first_second_ms": _latency_json(check.first_second.percentiles((50.0, 99.0))),
        "latency_last_second_ms": _latency_json(check.last_second.percentiles((50.0, 99.0))),
    }


def _run_json(r: Run) -> dict[str, Any]:
    cap = r.capacity
    return {
        "label": r.label,
        "same_as": list(r.aliases),
        "workers": r.workers,
        "requests": r.requests,
        "throughput_rps": round(r.throughput_rps, 3),
        "throughput_rps_rounds": list(r.rounds_rps),
        "latency_ms": {"p50": r.p50_ms, "p99": r.p99_ms},
        "errors": r.errors,
        "error_ratio": round(r.error_ratio, 6),
        "errors_by_status": {str(k): v for k, v in sorted(r.errors_by_status.items())},
        "errors_by_kind": dict(sorted(r.errors_by_kind.items())),
        "comparable": r.comparable,
        "rss_mib": r.rss_mib,
        "server_cpu_cores": r.server_cpu_cores,
        "client_cpu_cores": r.client_cpu_cores,
        "at_rate": rate_json(r.at_rate),
        "notes": list(r.notes),
        "capacity": None
        if cap is None
        else {
            "rate_rps": cap.rate_rps,
            "steps": [{"rate_rps": rate, "met": ok, "verdict": text} for rate, ok, text in cap.steps],
        },
    }


def verify_to_json(result: VerifyResult) -> dict[str, Any]:
    """The JSON `verify --json` prints: runs[] with the documented names, and the verdict."""
    v = result.verdict
    return {
        "endpoints": list(result.endpoints),
        "concurrency": result.concurrency,
        "duration_s": result.duration_s,
        "repeat": result.repeat,
        "interrupted": result.interrupted,
        "worker_recycling": result.recycling,
        "runs": [_run_json(r) for r in result.runs],
        "best": v.best.label if v and v.best_is_clear else None,
        "tied_within_noise": list(v.tied) if v and len(v.tied) > 1 else [],
        "noise": round(v.noise, 4) if v and v.noise is not None else None,
        "not_comparable": list(v.not_comparable) if v else [r.label for r in result.runs],
        "recommended_vs_best": round(v.ratio_to_best, 4) if v and v.ratio_to_best is not None else None,
        "recommended_memory_vs_rule_of_thumb": (
            round(v.memory_vs_rule, 4) if v and v.memory_vs_rule is not None else None
        ),
        "verdict": v.line if v else None,
        "overload": [check_to_json(c) for c in result.overload],
        "slo": None
        if result.objective is None
        else {
            "objective": result.objective.describe(),
            "rate_rps": result.rate_rps,
            "met": result.slo_met,
            "verdict": result.slo_line,
        },
    }
