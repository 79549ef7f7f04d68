"""The overload step in the HTML page: its verdict, the trials, the cause and the fix (from the JSON)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: object, digits: int = 0) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.{digits}f}"


def _row(name: str, t: Mapping[str, Any], plateau: object) -> str:
    goodput = t.get("goodput_rps")
    ratio = (
        f"{goodput / plateau:.0%}"
        if isinstance(goodput, (int, float)) and isinstance(plateau, (int, float)) and plateau
        else "-"
    )
    after = (
        "-"
        if not t.get("wedge_checked")
        else _n(t.get("answer_after_s"), 2)
        if t.get("answer_after_s") is not None
        else "none"
    )
    cells = [_n(t.get("per_worker")), _n(goodput, 1), ratio, _n(t.get("p50_ms")), _n(t.get("p99_ms")),
             _n(t.get("errors")), _n(t.get("in_flight_left")), after]  # fmt: skip
    return (
        f"<tr><td><code>{_e(name)}</code></td>"
        + "".join(f'<td class="num">{c}</td>' for c in cells)
        + "</tr>"
    )


def _rows(run: Mapping[str, Any]) -> list[str]:
    rows = []
    if isinstance(run.get("mix"), dict):
        rows.append(_row("the mix", run["mix"], run.get("plateau_rps")))
    for r in run.get("routes") or []:
        if not isinstance(r, dict):
            continue
        for i, t in enumerate(r.get("trials") or []):
            if isinstance(t, dict) and not (i == 0 and t == run.get("mix")):  # a lone route's is the mix's
                rows.append(_row(f"{r.get('method')} {r.get('path')}", t, r.get("plateau_rps")))
    return rows


_HEAD = "".join(
    f"<th>{h}</th>"
    for h in ("trial", "in flight/worker", "goodput req/s", "of plateau", "p50 ms", "p99 ms", "errors",
              "unanswered", "answer after s")
)  # fmt: skip


def _verdict(verdict: Mapping[str, Any]) -> list[str]:
    parts = []
    if verdict:
        parts.append(
            f"<p><strong>{_e(verdict.get('behaviour'))}</strong>: {_e(verdict.get('summary') or '')}</p>"
        )
    if verdict.get("cause"):
        parts.append(f"<p><strong>Why:</strong> {_e(verdict['cause'])}</p>")
    fixes = [f for f in verdict.get("fixes") or [] if isinstance(f, str)]
    if fixes:
        parts.append(
            "<p><strong>The code fix:</strong></p><ul>"
            + "".join(f"<li>{_e(f)}</li>" for f in fixes)
            + "</ul>"
        )
    return parts


def overload_section(report: Mapping[str, Any]) -> str:
    """The `overload` object of a report as a section; empty when the report has none."""
    run = report.get("overload")
    if not isinstance(run, dict):
        return ""
    verdict = run["verdict"] if isinstance(run.get("verdict"), dict) else {}
    parts = [f"<h2>Overload: {_e(run.get('per_worker'))} in flight per worker</h2>", *_verdict(verdict)]
    rows = _rows(run)
    if rows:
        parts.insert(
            2, f'<table class="levels"><thead><tr>{_HEAD}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        )
    if run.get("skipped"):
        parts.append(f'<p class="muted">stopped: {_e(run["skipped"])}</p>')
    if run.get("wedged_left"):
        parts.append("<p><strong>The server still does not answer: restart it.</strong></p>")
    return '<section class="overload">' + "".join(parts) + "</section>"


def verify_overload_section(verify: Mapping[str, Any] | None) -> str:
    """verify's overload checks (the config and the same config uncapped) as a table; empty without."""
    checks = [c for c in (verify or {}).get("overload") or [] if isinstance(c, dict)]
    if not checks:
        return ""
    rows = []
    for c in checks:
        base: Mapping[str, Any] = c["base"] if isinstance(c.get("base"), dict) else {}
        stress: Mapping[str, Any] = c["stress"] if isinstance(c.get("stress"), dict) else {}
        kept = c.get("kept")
        cells = [
            _n(c.get("cap")) if c.get("cap") is not None else "-",
            _n(base.get("goodput_rps"), 1),
            _n(stress.get("per_worker")),
            _n(stress.get("goodput_rps"), 1),
            f"{kept:.0%}" if isinstance(kept, (int, float)) else "-",
            f"{c.get('share_503', 0):.1%}" if isinstance(c.get("share_503"), (int, float)) else "-",
            _n(stress.get("p99_ms")),
            "yes" if c.get("wedged") else "no",
        ]
        rows.append(
            f"<tr><td>{_e(c.get('label'))}</td>"
            + "".join(f'<td class="num">{x}</td>' for x in cells)
            + f"<td>{_e(c.get('behaviour'))}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("config", "cap/worker", "req/s at 4", "in flight/worker", "req/s", "kept", "503s", "p99 ms",
                  "wedged", "behaviour")
    )  # fmt: skip
    return (
        '<section class="overload"><h2>Past the knee</h2>'
        f'<table class="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>'
    )
