"""Showing a comparison with a baseline: the terminal table, JSON, JUnit XML, GitHub annotations and
the Markdown step summary. Every reader takes the same BaselineComparison; none re-judges it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Final

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastapi_tune.judge.compare import (
    BaselineComparison,
    Change,
    MetricJudgement,
    RouteComparison,
    RouteStatus,
    metric_line,
)
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.measure.stack_attribution import Hotspot

STATUS_STYLE: Final = {
    RouteStatus.REGRESSED: "bold red",
    RouteStatus.IMPROVED: "green",
    RouteStatus.UNCHANGED: "",
    RouteStatus.NEW: "cyan",
    RouteStatus.GONE: "dim",
    RouteStatus.INCONCLUSIVE: "yellow",
}
_CHANGE_STYLE: Final = {
    Change.WORSE: "red",
    Change.BETTER: "green",
    Change.SAME: "",
    Change.NOT_JUDGED: "dim",
}
# Where a locate function maps an app file to the repository path GitHub annotates (None: outside it).
Locate = Callable[[str], str | None]


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def metric_cell(m: MetricJudgement) -> str:
    """`0.51 -> 0.85 ms +69%`, or `-` when not judged."""
    if m.outcome is Change.NOT_JUDGED or m.change is None:
        return "-"
    return f"{_num(m.base)} -> {_num(m.new)} {m.unit} {m.change:+.0%}"


def class_cell(r: RouteComparison) -> str:
    if r.klass is None:
        return "-"
    base, new = r.klass.base, r.klass.new
    if base is None or base == new:
        return str(new or "-")
    unsure = " (not judged)" if r.klass.outcome is Change.NOT_JUDGED else ""
    return f"{base} -> {new or '-'}{unsure}"


def where_text(spot: Hotspot | None, is_new: bool) -> str:
    """`check_app.py:37 get_order -> time.sleep (new in the stacks)`."""
    if spot is None:
        return ""
    call = f" -> {spot.call}" if spot.call else ""
    return f"{spot.file}:{spot.line} {spot.function}{call}" + (" (new in the stacks)" if is_new else "")


_COUNT_ORDER: Final = (
    RouteStatus.REGRESSED,
    RouteStatus.IMPROVED,
    RouteStatus.UNCHANGED,
    RouteStatus.NEW,
    RouteStatus.GONE,
    RouteStatus.INCONCLUSIVE,
)


def counts_line(c: BaselineComparison) -> str:
    """`1 regressed, 2 unchanged, 1 new`."""
    parts = [f"{c.count(s)} {s}" for s in _COUNT_ORDER if c.count(s)]
    return ", ".join(parts) or "no routes"


# ---------------------------------------------------------------------------------------
# Terminal


def _styled(text: str, style: str) -> str:
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def print_comparison(out: Console, c: BaselineComparison, base_name: str, new_name: str) -> None:
    """The routes side by side, then each regressed, improved or inconclusive route's reasons."""
    table = Table(
        title=f"{escape(new_name)} against {escape(base_name)}",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    table.add_column("route", no_wrap=True)
    for name in ("status", "class", "CPU / request", "p50", "peak throughput"):
        table.add_column(name, overflow="fold")
    for r in c.routes:
        cells = [_styled(metric_cell(m), _CHANGE_STYLE[m.outcome]) for m in r.metrics] or ["", "", ""]
        moved = r.klass is not None and r.klass.outcome in (Change.WORSE, Change.BETTER)
        klass = _styled(class_cell(r), _CHANGE_STYLE[r.klass.outcome] if r.klass and moved else "")
        table.add_row(escape(r.key), _styled(str(r.status), STATUS_STYLE[r.status]), klass, *cells)
    out.print(table)
    for r in c.routes:
        if not r.reasons or r.status in (RouteStatus.NEW, RouteStatus.GONE):
            continue
        out.print(_styled(f"{r.key} {r.status}", STATUS_STYLE[r.status]) + ":")
        for reason in r.reasons:
            out.print(f"  - {escape(reason)}", highlight=False)
        if r.culprit is not None:
            out.print(f"  - at {escape(where_text(r.culprit, r.culprit_is_new))}", highlight=False)
    if c.busy:
        out.print(f"[yellow]note:[/] {escape(c.busy)}", highlight=False)
    out.print(counts_line(c))


def print_baseline_saved(out: Console, report: ProbeReport, path: str, replaced: bool) -> None:
    """What the new baseline holds: one line per route with its class."""
    verb = "replaced" if replaced else "saved"
    out.print(f"Baseline {verb}: [bold]{escape(path)}[/] ({len(report.endpoints)} routes); commit it.")
    for e in report.endpoints:
        cls = e.verdict.cls if e.verdict is not None else "-"
        conf = f" ({e.verdict.confidence:.0%})" if e.verdict is not None else ""
        out.print(f"  {escape(e.method)} {escape(e.path)}: {cls}{conf}", highlight=False)


# ---------------------------------------------------------------------------------------
# JSON


def _metric_json(m: MetricJudgement) -> dict[str, Any]:
    return {
        "outcome": str(m.outcome),
        "base": m.base,
        "new": m.new,
        "change": m.change,
        "noise": m.noise,
        "band": m.band,
        "levels": list(m.levels),
        "note": m.note or None,
    }


def route_to_json(r: RouteComparison) -> dict[str, Any]:
    k = r.klass
    spot = r.culprit
    return {
        "method": r.method,
        "path": r.path,
        "status": str(r.status),
        "class": None
        if k is None
        else {
            "base": k.base,
            "new": k.new,
            "base_confidence": k.base_confidence,
            "new_confidence": k.new_confidence,
            "outcome": str(k.outcome),
            "note": k.note or None,
        },
        "metrics": {str(m.metric): _metric_json(m) for m in r.metrics},
        "errors": r.errors,
        "reasons": list(r.reasons),
        "where": None
        if spot is None
        else {
            "file": spot.file,
            "line": spot.line,
            "function": spot.function,
            "call": spot.call,
            "thread": str(spot.thread),
            "new_in_stacks": r.culprit_is_new,
        },
    }


def comparison_to_json(c: BaselineComparison) -> dict[str, Any]:
    """The comparison as the JSON `check --json` and `compare --json` print (the README lists it)."""
    return {
        "outcome": str(c.outcome),
        "busy": c.busy,
        "counts": {str(s): c.count(s) for s in RouteStatus},
        "routes": [route_to_json(r) for r in c.routes],
    }


# ---------------------------------------------------------------------------------------
# JUnit XML: one testcase per route, a <failure> per regression


def _details(r: RouteComparison) -> str:
    lines = list(r.reasons)
    if r.culprit is not None:
        lines.append("at " + where_text(r.culprit, r.culprit_is_new))
    lines += [f"{metric_line(m)}: {m.outcome}" for m in r.metrics if m.outcome is not Change.NOT_JUDGED]
    return "\n".join(lines)


def junit_xml(c: BaselineComparison, suite: str) -> str:
    """JUnit XML that CI systems read: regressed routes fail, gone and inconclusive ones are skipped."""
    failures = c.count(RouteStatus.REGRESSED)
    skipped = c.count(RouteStatus.GONE) + c.count(RouteStatus.INCONCLUSIVE)
    counts = {"tests": str(len(c.routes)), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    root = ET.Element("testsuites", {"name": "fastapi-tune", **counts})
    ts = ET.SubElement(root, "testsuite", {"name": suite, **counts})
    for r in c.routes:
        attrs = {"classname": "fastapi-tune.routes", "name": r.key}
        if r.culprit is not None:
            attrs |= {"file": r.culprit.file, "line": str(r.culprit.line)}
        case = ET.SubElement(ts, "testcase", attrs)
        if r.status is RouteStatus.REGRESSED:
            fail = ET.SubElement(case, "failure", {"type": "regressed", "message": "; ".join(r.reasons)})
            fail.text = _details(r)
        elif r.status in (RouteStatus.GONE, RouteStatus.INCONCLUSIVE):
            ET.SubElement(case, "skipped", {"message": f"{r.status}: " + "; ".join(r.reasons)})
        else:
            ET.SubElement(case, "system-out").text = f"{r.status}\n{_details(r)}".strip()
    if c.busy:
        ET.SubElement(ts, "system-err").text = c.busy
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------
# GitHub: workflow commands on stdout, and the job's Markdown summary


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(level: str, message: str, title: str, file: str | None = None, line: int | None = None) -> str:
    props = [f"file={_escape_property(file)}", f"line={line}"] if file is not None and line else []
    props.append(f"title={_escape_property(title)}")
    return f"::{level} {','.join(props)}::{_escape_data(message)}"


def github_annotations(c: BaselineComparison, locate: Locate) -> list[str]:
    """`::error file=app/orders.py,line=42,...::` at the line the stacks name for each regressed route
    (a route-level `::error` when there is none in the repository), `::warning` for what was not judged."""
    lines = []
    for r in c.routes:
        if r.status is RouteStatus.REGRESSED:
            spot = r.culprit
            file = locate(spot.file) if spot is not None else None
            message = "; ".join(r.reasons)
            if spot is not None:
                message += f" (at {where_text(spot, r.culprit_is_new)})"
            lines.append(_command("error", message, f"{r.key} regressed", file, spot.line if spot else None))
        elif r.status is RouteStatus.INCONCLUSIVE:
            lines.append(_command("warning", "; ".join(r.reasons), f"{r.key} not judged"))
    if c.busy:
        lines.append(_command("warning", c.busy, "fastapi-tune: busy runner"))
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_MD_STATUS: Final = {RouteStatus.REGRESSED: "**regressed**", RouteStatus.IMPROVED: "improved"}


def markdown_summary(c: BaselineComparison, title: str) -> str:
    """The job summary: a table of routes, then what regressed and why."""
    head = {
        "regressed": f"{c.count(RouteStatus.REGRESSED)} route(s) regressed",
        "not judged": "the runner was too busy to judge",
        "passed": "no regression",
    }[str(c.outcome)]
    rows = [
        f"### {_md(title)}: {head}",
        "",
        "| route | status | class | CPU / request | p50 | peak throughput |",
        "|---|---|---|---|---|---|",
    ]
    for r in c.routes:
        cells = [metric_cell(m) for m in r.metrics] or ["", "", ""]
        status = _MD_STATUS.get(r.status, str(r.status))
        rows.append(
            f"| `{_md(r.key)}` | {status} | {_md(class_cell(r))} | " + " | ".join(map(_md, cells)) + " |"
        )
    rows.append("")
    for r in c.routes:
        if r.status not in (RouteStatus.REGRESSED, RouteStatus.INCONCLUSIVE):
            continue
        rows.append(f"**`{_md(r.key)}` {r.status}**")
        rows += [f"- {_md(reason)}" for reason in r.reasons]
        if r.culprit is not None:
            rows.append(f"- at `{_md(where_text(r.culprit, r.culprit_is_new))}`")
        rows.append("")
    if c.busy:
        rows += [f"> {_md(c.busy)}", ""]
    rows.append(counts_line(c))
    return "\n".join(rows) + "\n"
