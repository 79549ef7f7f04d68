"""The overload step on the terminal: how the app behaved past its knee, why, and what to do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fastapi_tune.core.rules import OverloadBehaviour
from fastapi_tune.measure.overload_report import OverloadRun, OverloadTrial, trial_to_json
from fastapi_tune.verify.overload import BASE_CLIENTS, OverloadCheck

BEHAVIOUR_STYLE: Final = {
    OverloadBehaviour.HOLDS: "green",
    OverloadBehaviour.DEGRADES: "yellow",
    OverloadBehaviour.COLLAPSES: "red",
    OverloadBehaviour.WEDGED: "bold red",
}


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(table: Table, what: str, t: OverloadTrial, plateau: float | None) -> None:
    ratio = f"{t.goodput_rps / plateau:.0%}" if plateau else "-"
    after = "-" if not t.wedge_checked else "none" if t.answer_after_s is None else f"{t.answer_after_s:g} s"
    table.add_row(
        Text(what),
        f"{t.per_worker:g}",
        _num(t.goodput_rps, 1),
        ratio,
        _num(t.p50_ms),
        _num(t.p99_ms),
        str(t.errors),
        str(t.in_flight_left),
        after,
    )


def _trials(run: OverloadRun) -> Table:
    table = Table(box=None, pad_edge=False)
    for name, justify in (
        ("trial", "left"),
        ("in flight/worker", "right"),
        ("goodput req/s", "right"),
        ("of plateau", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("errors", "right"),
        ("unanswered", "right"),
        ("answer after", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    if run.mix is not None:
        _row(table, "the mix", run.mix, run.plateau_rps)
    for r in run.routes:
        name = f"{r.method} {r.path}"
        for i, t in enumerate(r.trials):
            if i == 0 and t == run.mix:
                continue  # a lone route's stress trial is the mix's: shown once
            what = "alone" if i == 0 else "baseline" if i == 1 and r.search_bar_rps is not None else "search"
            _row(table, f"{name}: {what}", t, r.plateau_rps)
    return table


def overload_panel(run: OverloadRun) -> Panel:
    """The step's panel: the verdict, the trials, the cause with its fix, and what happened to the server."""
    title = (
        f"[bold]Overload[/]: {run.per_worker} in flight per worker x {run.workers} worker(s) ="
        f" {run.concurrency} connections"
    )
    parts: list[Text | Table] = []
    v = run.verdict
    if v is not None:
        head = Text.assemble(("behaviour: ", "bold"), (str(v.behaviour), BEHAVIOUR_STYLE[v.behaviour]))
        parts += [head, Text(v.summary)]
    if run.mix is not None:
        parts += [Text(""), _trials(run)]
    if v is not None and v.cause:
        parts += [Text(""), Text.assemble(("why: ", "bold"), v.cause)]
    if v is not None:
        parts += [Text(f"  → fix: {fix}") for fix in v.fixes]
    if run.restarts:
        parts.append(
            Text(f"the server (started by fastapi-tune) was restarted {run.restarts} time(s)", "dim")
        )
    if run.recovered_after_s is not None:
        parts.append(
            Text(f"the server answered again {run.recovered_after_s:g} s after the load stopped", "dim")
        )
    if run.skipped:
        parts.append(Text(f"stopped: {run.skipped}", style="yellow"))
    if run.wedged_left:
        parts.append(Text("the server still does not answer: restart it", style="bold red"))
    return Panel(Group(*parts), title=title, title_align="left")


def overload_table(checks: Sequence[OverloadCheck]) -> Table:
    """verify's overload step: each config at BASE_CLIENTS and at the stress level, side by side."""
    table = Table(title="Past the knee", title_justify="left")
    for name in ("config", "cap/worker", f"req/s at {BASE_CLIENTS}", "in flight/worker", "req/s", "kept",
                 "503s", "p99 ms", "answer after", "behaviour"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("config", "behaviour") else "right")
    for c in checks:
        s = c.stress
        after = "none" if s.answer_after_s is None else f"{s.answer_after_s:g} s"
        table.add_row(
            c.label, "-" if c.cap is None else str(c.cap), f"{c.base.goodput_rps:.0f}", f"{s.per_worker:g}",
            f"{s.goodput_rps:.0f}", "-" if c.kept is None else f"{c.kept:.0%}", f"{c.share_503:.1%}",
            _num(s.p99_ms), after, Text(str(c.behaviour), style=BEHAVIOUR_STYLE[c.behaviour]),
        )  # fmt: skip
    return table


def check_to_json(c: OverloadCheck) -> dict[str, Any]:
    """One config's overload check as `verify --json` prints it."""
    return {
        "label": c.label,
        "cap": c.cap,
        "workers": c.workers,
        "base": trial_to_json(c.base),
        "stress": trial_to_json(c.stress),
        "kept": None if c.kept is None else round(c.kept, 4),
        "share_503": round(c.share_503, 4),
        "behaviour": str(c.behaviour),
        "wedged": c.stress.wedged,
    }
