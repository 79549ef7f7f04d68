"""The HTML report's verify section, from `verify --json`: the runs side by side with bars, the open
loop at --rate (the arrival rate held and the rate served, named apart), and the verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi_tune.render.html_read import (
    as_list,
    as_map,
    as_maps,
    esc,
    fmt,
    num,
    prose,
    short,
    strs,
    td_num,
)


def _verify_row(run: Mapping[str, Any], top: float, best: object) -> str:
    label = str(run.get("label") or "?")
    rps = num(run.get("throughput_rps"))
    width = 0.0 if not rps or top <= 0 else min(100.0, rps / top * 100)
    lat = as_map(run.get("latency_ms"))
    star = " ★" if best is not None and label == best else ""
    rounds = ", ".join(fmt(r) for r in as_list(run.get("throughput_rps_rounds")) if num(r) is not None)
    # The bar is the table's chart: a left-aligned cell of its own after req/s.
    bar = f'<td><span class="bar" style="width:{width * 0.8:.0f}px"></span></td>'
    tds = (
        td_num(fmt(run.get("workers"), 0))
        + td_num(fmt(rps))
        + bar
        + "".join(
            td_num(c)
            for c in (
                fmt(lat.get("p50")),
                fmt(lat.get("p99")),
                fmt(run.get("errors"), 0),
                fmt(run.get("rss_mib"), 0),
                fmt(run.get("server_cpu_cores"), 2),
            )
        )
    )
    cls = ' class="recommended"' if label == "recommended" else ""
    return f'<tr{cls}><td>{esc(label + star)}</td>{tds}<td class="muted small">{rounds}</td></tr>'


def verify_section(verify: Mapping[str, Any]) -> str:
    """The verify section: the closed-loop runs side by side, the open loop at --rate, the verdict."""
    runs = as_maps(verify.get("runs"))
    top = max((num(r.get("throughput_rps")) or 0.0 for r in runs), default=0.0)
    head = "".join(
        f'<th class="num">{h}</th>'
        for h in ("workers", "req/s", "", "p50 ms", "p99 ms", "errors", "RSS MiB", "CPU")
    )
    rows = "".join(_verify_row(r, top, verify.get("best")) for r in runs)
    load = (
        f"Same load on every run: {esc(', '.join(strs(verify.get('endpoints'))) or '–')}"
        f" at c={fmt(verify.get('concurrency'), 0)}, {fmt(verify.get('duration_s'), 1)} s each,"
        f" median of {fmt(verify.get('repeat'), 0)} interleaved round(s)."
    )
    banner = (
        '<p class="banner"><strong>Interrupted:</strong> only the runs finished before Ctrl-C are shown.</p>'
        if verify.get("interrupted") is True
        else ""
    )
    verdict = f"<p><strong>Verdict:</strong> {prose(verify['verdict'])}</p>" if verify.get("verdict") else ""
    return (
        f'<section class="verify"><h2>Verification</h2>{banner}<p class="muted">{load}</p>'
        f'<table class="runs"><thead><tr><th>run</th>{head}<th>rounds req/s</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>{_verify_rate(verify, runs)}{verdict}{_verify_notes(runs)}"
        "</section>"
    )


def _verify_rate(verify: Mapping[str, Any], runs: list[Mapping[str, Any]]) -> str:
    """The open loop at --rate: both rates side by side, and a line for each run that fell behind."""
    rated = [(str(r.get("label") or "?"), as_map(r.get("at_rate"))) for r in runs if as_map(r.get("at_rate"))]
    if not rated:
        return ""
    heads = ("arrived/s", "served/s", "queued at end", "drained s", "p50 ms", "p99 ms", "failed")
    head = "".join(f'<th class="num">{h}</th>' for h in heads)
    rows = "".join(
        f"<tr><td>{esc(label)}</td>"
        + "".join(
            td_num(c)
            for c in (
                fmt(at.get("arrival_rps")),
                fmt(at.get("served_rps")),
                fmt(at.get("backlog_at_end"), 0),
                fmt(at.get("drain_s")),
                fmt(as_map(at.get("latency_ms")).get("p50")),
                fmt(as_map(at.get("latency_ms")).get("p99")),
                fmt(at.get("failed"), 0),
            )
        )
        + "</tr>"
        for label, at in rated
    )
    behind = "".join(
        f'<p class="banner"><strong>{esc(label)}</strong>: {prose(at["beyond_capacity"])}</p>'
        for label, at in rated
        if at.get("beyond_capacity")
    )
    rate = short(rated[0][1].get("rate_rps"))
    slo = as_map(verify.get("slo"))
    objective = (
        f"<p><strong>Objective {esc(slo.get('objective') or '')}:</strong> {prose(slo.get('verdict'))}</p>"
        if slo.get("verdict")
        else ""
    )
    return (
        f'<p class="muted">Open loop at {rate} req/s: arrived = requests started per second; served ='
        " responses that ended inside the window per second; latency from each request's intended"
        " start.</p>"
        f'<table class="runs"><thead><tr><th>run</th>{head}</tr></thead><tbody>{rows}</tbody></table>'
        f"{behind}{objective}"
    )


def _verify_notes(runs: list[Mapping[str, Any]]) -> str:
    notes = [f"{r.get('label') or '?'}: {n}" for r in runs for n in strs(r.get("notes"))]
    return "".join(f'<p class="muted small">note: {prose(n)}</p>' for n in notes)
