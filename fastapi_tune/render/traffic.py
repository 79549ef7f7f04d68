"""Rendering what the access logs said (rich). JSON comes from traffic.traffic_to_json."""

from __future__ import annotations

from typing import Final

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastapi_tune.measure.logformats import DESCRIPTIONS
from fastapi_tune.measure.traffic import TrafficProfile

_STATUSES_SHOWN: Final = 3
_UNMATCHED_IN_LINE: Final = 3


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def counts_line(p: TrafficProfile) -> str:
    """'15,616 lines: 14,700 used, 155 unreadable, 761 unmatched (4.9%; most: GET /.env 240, ...)'."""
    text = f"{p.lines:,} lines: {p.used:,} used, {p.unreadable:,} unreadable, {p.unmatched:,} unmatched"
    if p.unmatched:
        top = ", ".join(f"{label} {n:,}" for label, n in p.unmatched_top[:_UNMATCHED_IN_LINE])
        text += f" ({_pct(p.unmatched, p.lines)}; most: {top})"
    return text


def peak_line(p: TrafficProfile) -> str:
    """The peak with when it happened, or why there is none."""
    if p.peak is None:
        return f"peak rate unknown: {p.peak_unknown}"
    line = f"peak {p.peak.rps:g} req/s over {p.peak.window_s} s from {p.peak.start}"
    if p.off_peak:
        line += f" ({p.off_peak:,} lines more than a few minutes out of time order left out of it)"
    return line


def formats_text(p: TrafficProfile) -> str:
    """'combined (nginx 'combined' / gunicorn's default access log)'."""
    return "; ".join(f"{name} ({DESCRIPTIONS.get(name, name)})" for name in p.formats)


def traffic_summary(p: TrafficProfile) -> str:
    """One line for a progress display: the format, the counts, the peak."""
    return f"access log: {formats_text(p)}, {counts_line(p)}; {peak_line(p)}"


def _statuses(statuses: dict[int, int], total: int) -> str:
    top = sorted(statuses.items(), key=lambda kv: -kv[1])[:_STATUSES_SHOWN]
    return ", ".join(f"{code} {_pct(n, total)}" for code, n in top)


def print_traffic(console: Console, p: TrafficProfile) -> None:
    """The `traffic` command's output: sources, counts, peak, and a row per route."""
    for s in p.sources:
        console.print(
            f"[bold]{escape(s.name)}[/]: {s.format} ({DESCRIPTIONS.get(s.format, s.format)}),"
            f" {s.lines:,} lines, {s.unreadable:,} unreadable" + ("" if s.timed else ", no times"),
            highlight=False,
        )
    console.print(escape(counts_line(p)), highlight=False)
    console.print(escape(peak_line(p)), highlight=False)
    if p.first and p.last:
        console.print(f"from {p.first} to {p.last}", highlight=False)
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="Routes by share", title_justify="left")
    for name, justify in (("route", "left"), ("share", "right"), ("requests", "right"), ("statuses", "left")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    timed = any(r.latency_ms for r in p.routes)
    if timed:
        for q in ("p50", "p90", "p99"):
            t.add_column(f"{q} ms", justify="right")
    for r in p.routes:
        row = [
            escape(r.route),
            f"{100 * r.share:.1f}%",
            f"{r.requests:,}",
            _statuses(dict(r.statuses), r.requests),
        ]
        if timed:
            lat = r.latency_ms or {}
            row += [f"{lat[q]:.1f}" if q in lat else "" for q in ("p50", "p90", "p99")]
        t.add_row(*row)
    console.print(t)
    if timed and p.durations:
        console.print(f"durations from {escape(p.durations)}", highlight=False)
    if p.unmatched_top:
        exact = "" if p.unmatched_top_exact else " (at least: rare paths were dropped to keep memory flat)"
        console.print(f"[bold]Unmatched[/], most frequent{exact}:", highlight=False)
        for label, n in p.unmatched_top:
            console.print(f"  {escape(label)}  {n:,}", highlight=False)
    for note in p.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
