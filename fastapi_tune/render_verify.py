"""Showing verify's runs side by side, with bars for throughput and memory, and the verdict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fastapi_tune.render_probe import bar
from fastapi_tune.verify import RECOMMENDED, Run, VerifyResult


class VerifyProgress:
    """VerifyEvents on a spinner (stderr): which configuration runs, with live request counts."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        )
        self.task = self.progress.add_task("starting")
        self.console = console

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
            description=f"round {round_no}/{rounds}: {label} ({shown}): booting gunicorn, then load",
        )

    def run_done(self, run: Run) -> None:
        self.console.print(
            f"  {run.label}: {run.workers} workers, {run.throughput_rps:.1f} req/s,"
            f" p50 {run.p50_ms if run.p50_ms is not None else '-'} ms, {run.errors} errors"
        )


def print_verify(console: Console, result: VerifyResult) -> None:
    """The side-by-side table (the bars are the chart) and the one-line verdict."""
    title = (
        f"Same load on every run: {escape(', '.join(result.endpoints))} at c={result.concurrency},"
        f" {result.duration_s:g} s each, median of {result.repeat} interleaved round(s)"
        " (latency ms, workers' RSS MiB, server CPU cores)"
    )
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = (
        ("run", "left"), ("wkrs", "right"), ("req/s", "right"), ("", "left"), ("p50", "right"),
        ("p99", "right"), ("err", "right"), ("RSS", "right"), ("CPU", "right"),
    )  # fmt: skip
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    top_x = max((r.throughput_rps for r in result.runs), default=0.0)
    best = result.verdict.best.label if result.verdict else None
    for r in result.runs:
        style = "bold" if r.label == RECOMMENDED else ""
        name = r.label + (" ★" if r.label == best else "")
        t.add_row(
            name,
            str(r.workers),
            f"{r.throughput_rps:.1f}",
            f"[cyan]{bar(r.throughput_rps, top_x, 8)}[/]",
            "-" if r.p50_ms is None else f"{r.p50_ms:.0f}",
            "-" if r.p99_ms is None else f"{r.p99_ms:.0f}",
            str(r.errors) if not r.errors else f"[red]{r.errors}[/]",
            f"{r.rss_mib:.0f}",
            f"{r.server_cpu_cores:.2f}",
            style=style,
        )
    console.print(t)
    if result.verdict is not None:
        console.print(f"[bold]Verdict:[/] {result.verdict.line}")
    if result.interrupted:
        console.print("[yellow]Interrupted: the table shows the runs finished before Ctrl-C.[/]")


def verify_to_json(result: VerifyResult) -> dict[str, Any]:
    """The JSON `verify --json` prints: runs[] with the documented names, and the verdict."""
    v = result.verdict
    return {
        "endpoints": list(result.endpoints),
        "concurrency": result.concurrency,
        "duration_s": result.duration_s,
        "repeat": result.repeat,
        "interrupted": result.interrupted,
        "runs": [
            {
                "label": r.label,
                "workers": r.workers,
                "requests": r.requests,
                "throughput_rps": round(r.throughput_rps, 3),
                "throughput_rps_rounds": list(r.rounds_rps),
                "latency_ms": {"p50": r.p50_ms, "p99": r.p99_ms},
                "errors": r.errors,
                "rss_mib": r.rss_mib,
                "server_cpu_cores": r.server_cpu_cores,
                "client_cpu_cores": r.client_cpu_cores,
            }
            for r in result.runs
        ],
        "best": v.best.label if v else None,
        "recommended_vs_best": round(v.ratio_to_best, 4) if v and v.ratio_to_best is not None else None,
        "recommended_memory_vs_rule_of_thumb": (
            round(v.memory_vs_rule, 4) if v and v.memory_vs_rule is not None else None
        ),
        "verdict": v.line if v else None,
    }
