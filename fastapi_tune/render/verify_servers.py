"""verify --servers' result: one table (server, workers, req/s, p50/p99, errors, total RSS, boot time,
CPU), the open loop at --rate when there is one, the verdict, and the JSON. Formatting only."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastapi_tune.render.probe import bar
from fastapi_tune.render.verify import rate_json
from fastapi_tune.verify.judge import error_text
from fastapi_tune.verify.servers import ServersResult
from fastapi_tune.verify.servers_judge import ServerRun


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0f}"


def _err(r: ServerRun) -> str:
    run = r.run
    if not run.errors:
        return "0"
    kinds = [f"{s}x{n}" for s, n in sorted(run.errors_by_status.items())]
    kinds += [f"{k}x{n}" for k, n in sorted(run.errors_by_kind.items()) if not k[0].isdigit()]
    return f"[red]{run.error_ratio:.1%} {' '.join(kinds)}[/]"


def _table(result: ServersResult) -> Table:
    title = (
        f"Same load on every server: {escape(', '.join(result.endpoints))} at c={result.concurrency},"
        f" {result.duration_s:g} s each, median of {result.repeat} interleaved round(s) (latency ms; RSS:"
        " the whole process tree, MiB; boot: start until every worker answered, s; CPU cores)."
    )
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in (
        ("server", "left"), ("wkrs", "right"), ("req/s", "right"), ("", "left"), ("p50", "right"),
        ("p99", "right"), ("err", "left"), ("RSS", "right"), ("boot", "right"), ("CPU", "right"),
    ):  # fmt: skip
        t.add_column(name, justify=justify, no_wrap=name != "err")  # type: ignore[arg-type]
    if result.rate_rps is not None:
        for name in (f"@{result.rate_rps:g}/s p99", "failed"):
            t.add_column(name, justify="right", no_wrap=True)
    top = max((r.run.throughput_rps for r in result.runs), default=0.0)
    v = result.verdict
    for r in result.runs:
        mark = " ★" if v is not None and v.best == r.server else " ≈" if v and r.server in v.tied else ""
        cells = [
            r.server + mark,
            str(r.run.workers),
            f"{r.run.throughput_rps:.1f}",
            f"[cyan]{bar(r.run.throughput_rps, top, 8)}[/]",
            _ms(r.run.p50_ms),
            _ms(r.run.p99_ms),
            _err(r),
            f"{r.run.rss_mib:.0f}",
            f"{r.boot_s:.1f}",
            f"{r.run.server_cpu_cores:.2f}",
        ]
        check = r.run.at_rate
        if result.rate_rps is not None:
            p99 = check.percentiles().get(99.0) if check is not None else None
            failed = f"{check.failed / check.intended:.1%}" if check is not None and check.intended else "-"
            cells += [_ms(p99), failed]
        t.add_row(*cells)
    return t


def print_servers(console: Console, result: ServersResult) -> None:
    """The table, the commands as run, and the verdict."""
    console.print(_table(result))
    for r in result.runs:
        left = f" (left out while measuring: {', '.join(r.left_out)})" if r.left_out else ""
        console.print(f"  [dim]{escape(r.command)}{escape(left)}[/]", soft_wrap=True, highlight=False)
    v = result.verdict
    if v is not None:
        console.print(f"[bold]Verdict[/] ({escape(v.basis)}): {escape(v.line)}")
    if result.interrupted:
        console.print("[yellow]Interrupted: the table shows the rounds finished before Ctrl-C.[/]")


def _run_json(r: ServerRun) -> dict[str, Any]:
    run = r.run
    return {
        "server": r.server,
        "workers": run.workers,
        "requests": run.requests,
        "throughput_rps": round(run.throughput_rps, 3),
        "throughput_rps_rounds": list(run.rounds_rps),
        "latency_ms": {"p50": run.p50_ms, "p99": run.p99_ms},
        "errors": run.errors,
        "error_ratio": round(run.error_ratio, 6),
        "errors_text": error_text(run),
        "comparable": run.comparable,
        "rss_mib": run.rss_mib,
        "rss_mib_rounds": list(r.rss_rounds),
        "boot_s": r.boot_s,
        "server_cpu_cores": run.server_cpu_cores,
        "client_cpu_cores": run.client_cpu_cores,
        "command": r.command,
        "left_out_while_measuring": list(r.left_out),
        "at_rate": rate_json(run.at_rate),
        "capacity_rps": run.capacity.rate_rps if run.capacity is not None else None,
    }


def servers_to_json(result: ServersResult) -> dict[str, Any]:
    """The JSON `verify --servers ... --json` prints."""
    v = result.verdict
    return {
        "endpoints": list(result.endpoints),
        "concurrency": result.concurrency,
        "duration_s": result.duration_s,
        "repeat": result.repeat,
        "interrupted": result.interrupted,
        "rate_rps": result.rate_rps,
        "objective": result.objective,
        "runs": [_run_json(r) for r in result.runs],
        "basis": v.basis if v else None,
        "scores": [{"server": s, "score": round(x, 6)} for s, x in v.scores] if v else [],
        "best": v.best if v else None,
        "tied_within_noise": list(v.tied) if v and len(v.tied) > 1 else [],
        "noise": round(v.noise, 4) if v and v.noise is not None else None,
        "not_comparable": list(v.not_comparable) if v else [],
        "slo_met": v.slo_met if v else None,
        "verdict": v.line if v else None,
    }
