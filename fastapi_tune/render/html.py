"""A self-contained HTML report: one file to attach to a pull request or open offline.

Input is the JSON the tool already writes (probe report, `recommend --json`, `verify --json`),
read tolerantly: a missing or unexpected optional key shows as a dash, never as a crash, so an
older or newer report still renders. Every value may come from a hostile server (paths,
summaries, command lines), so each one is escaped, and a Content-Security-Policy forbids the
page from fetching or running anything even if something slipped through. Charts are inline SVG
(fastapi_tune.render.svgchart): no script, no web font, no URL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from fastapi_tune.judge.curve import exclusion_reason
from fastapi_tune.measure.report import Latency, Level, evidence_labels
from fastapi_tune.render.html_read import as_list as _list
from fastapi_tune.render.html_read import as_map as _map
from fastapi_tune.render.html_read import as_maps as _maps
from fastapi_tune.render.html_read import esc as _e
from fastapi_tune.render.html_read import fmt as _fmt
from fastapi_tune.render.html_read import num as _num
from fastapi_tune.render.html_read import prose as _text
from fastapi_tune.render.html_read import short as _short
from fastapi_tune.render.html_read import strs as _strs
from fastapi_tune.render.html_verify import verify_section
from fastapi_tune.render.overload_html import overload_section, verify_overload_section
from fastapi_tune.render.styles import CLASS_STYLE
from fastapi_tune.render.svgchart import Chart, Mark, Point, Series, render_chart

# Nothing may load: no script, image, font, frame or connection; only the inline stylesheet.
CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)

# The terminal's colour per class (render.styles.CLASS_STYLE owns which class gets which) as CSS.
_CSS_COLORS: Final[Mapping[str, str]] = {
    "green": "#1a7f37",
    "yellow": "#9a6700",
    "red": "#cf222e",
    "magenta": "#8250df",
    "cyan": "#1b7c83",
    "bold red": "#a40e26",
    "dim": "#6e7781",
}
_THROUGHPUT_COLOR: Final = "#0969da"
_LATENCY_COLORS: Final = (("p50", "#0969da"), ("p90", "#bf8700"), ("p99", "#8250df"))
_GIB: Final = 1024**3
_MIB: Final = 1024**2

_STYLE: Final = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--fg); margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.3em; margin: 0 0 6px; }
h3 { font-size: 1em; margin: 14px 0 6px; }
code, pre { font: 0.9em/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
code { background: var(--soft); padding: 1px 4px; border-radius: 4px; overflow-wrap: break-word; }
dd code { overflow-wrap: anywhere; }
pre { background: var(--soft); padding: 10px 12px; border-radius: 6px; white-space: pre-wrap;
  overflow-wrap: anywhere; margin: 6px 0; }
pre code { background: none; padding: 0; }
.muted { color: var(--muted); } .small { font-size: 0.86em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.banner { border: 1px solid #d4a72c; background: #fff8c5; padding: 8px 12px; border-radius: 6px;
  margin: 12px 0; }
section { border-top: 1px solid var(--line); padding: 18px 0 8px; }
.badge { display: inline-block; color: #fff; border-radius: 999px; padding: 1px 10px;
  font-size: 0.85em; font-weight: 600; vertical-align: 2px; white-space: nowrap; }
.conf { font-size: 0.85em; color: var(--muted); margin-left: 6px; }
.charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; margin: 10px 0; }
.charts svg { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
.chart .label { fill: var(--muted); } .chart .title { font-weight: 600; font-size: 12px; }
.chart .empty { fill: var(--muted); }
table { border-collapse: collapse; margin: 6px 0; font-size: 0.93em; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.settings { width: 100%; } table.settings td:first-child { white-space: nowrap; }
tr.excluded td { color: var(--muted); font-style: italic; }
tr.stalled td { color: #cf222e; }
tr.recommended td { font-weight: 600; }
.bar { display: inline-block; height: 9px; background: #0969da; border-radius: 2px; }
.cols { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 24px; }
ul.advice { margin: 4px 0; padding-left: 20px; }
footer { margin-top: 24px; color: var(--muted); font-size: 0.85em; }
@media screen and (max-width: 760px) { .charts, .cols { grid-template-columns: 1fr; } }
@media print {
  @page { margin: 12mm; }
  body { padding: 0; max-width: none; font-size: 9.5pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .keep, .charts, tr, pre, .banner { break-inside: avoid; }
  section { break-before: auto; }
  h2, h3 { break-after: avoid; }
}
"""


def _level(d: Mapping[str, Any]) -> Level | None:
    """The report's level as a Level, so classify.exclusion_reason decides what is evidence."""
    concurrency = _num(d.get("concurrency"))
    if concurrency is None:
        return None
    lat = _map(d.get("latency_ms"))
    p50 = _num(lat.get("p50"))
    latency = None
    if p50 is not None:
        latency = Latency(
            p50=p50,
            p90=_num(lat.get("p90")) or p50,
            p99=_num(lat.get("p99")),
            max=_num(lat.get("max")) or p50,
            mean=_num(lat.get("mean")) or p50,
        )
    return Level(
        concurrency=int(concurrency),
        requests=int(_num(d.get("requests")) or 0),
        errors=int(_num(d.get("errors")) or 0),
        errors_by_kind={},
        duration_s=_num(d.get("duration_s")) or 0.0,
        throughput_rps=_num(d.get("throughput_rps")) or 0.0,
        latency_ms=latency,
        server_cpu_cores=_num(d.get("server_cpu_cores")),
        server_rss_bytes=None,
        client_cpu_cores=_num(d.get("client_cpu_cores")) or 0.0,
        client_saturated=d.get("client_saturated") is True,
        littles_law_ratio=_num(d.get("littles_law_ratio")),
        p99_supported=d.get("p99_supported") is True,
    )


def _state(d: Mapping[str, Any]) -> tuple[Mark, str]:
    """How a level is drawn, and why in words ("" for plain evidence)."""
    level = _level(d)
    reason = exclusion_reason(level) if level is not None else None
    if d.get("stalled") is True:
        return Mark.STALLED, "stalled" + (f"; {reason}" if reason else "")
    if reason is not None:
        return Mark.EXCLUDED, f"not evidence: {reason}"
    return Mark.NORMAL, ""


# ---------------------------------------------------------------------------------------
# The probe report


def _memory(host: Mapping[str, Any]) -> str:
    mem = _map(host.get("memory"))
    total = _num(mem.get("effective_bytes")) or _num(mem.get("total_bytes"))
    if total is None:
        return "–"
    source = mem.get("source")
    return f"{total / _GIB:.1f} GiB" + (f" ({_e(source)})" if source else "")


def _cpus(host: Mapping[str, Any]) -> str:
    cpu = _map(host.get("cpu"))
    effective = _short(cpu.get("effective"))
    parts = [f"{effective} effective" + (f" ({_e(cpu['source'])})" if cpu.get("source") else "")]
    if cpu.get("logical") is not None:
        parts.append(f"{_fmt(cpu.get('logical'), 0)} logical")
    if cpu.get("quota") is not None:
        parts.append(f"quota {_fmt(cpu.get('quota'), 2)}")
    return ", ".join(parts) if cpu else "–"


def _server(server: Mapping[str, Any]) -> str:
    if not server:
        return "–"
    if server.get("local") is False:
        return "remote (no server CPU or memory observed)"
    kind = _e(server.get("kind") or "not found on this machine")
    workers = _num(server.get("workers"))
    text = kind + (f", {int(workers)} worker(s)" if workers is not None else "")
    return text + (f", pid {_e(server['pid'])}" if server.get("pid") is not None else "")


def _header(report: Mapping[str, Any]) -> str:
    host, server = _map(report.get("host")), _map(report.get("server"))
    target = report.get("target") or "(no target)"
    facts = [
        ("target", f"<code>{_e(target)}</code>"),
        ("probed", f"{_e(report.get('created_at') or '–')} · {_fmt(report.get('elapsed_s'), 1, ' s')}"),
        ("host CPUs", _cpus(host)),
        ("host memory", _memory(host)),
        ("server", _server(server)),
    ]
    if server.get("cmdline"):
        facts.append(("command", f"<code>{_e(server['cmdline'])}</code>"))
    versions = _map(host.get("versions"))
    if versions:
        facts.append(("versions", _e(", ".join(f"{k} {v}" for k, v in versions.items()))))
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    banner = (
        '<p class="banner"><strong>Interrupted:</strong> the probe was stopped (Ctrl-C) before it'
        " finished; this report shows the levels measured until then.</p>"
        if report.get("interrupted") is True
        else ""
    )
    return (
        f"<header><h1>fastapi-tune report</h1>"
        f'<p class="muted">How each endpoint of <code>{_e(target)}</code> scales, and why.</p>'
        f'{banner}<dl class="facts">{rows}</dl></header>'
    )


def _badge(endpoint: Mapping[str, Any]) -> str:
    verdict = _map(endpoint.get("verdict"))
    cls = endpoint.get("class") or verdict.get("class") or "not classified"
    style = {str(k): v for k, v in CLASS_STYLE.items()}.get(str(cls), "dim")
    color = _CSS_COLORS.get(style, _CSS_COLORS["dim"])
    confidence = _num(verdict.get("confidence"))
    conf = f'<span class="conf">confidence {confidence:.0%}</span>' if confidence is not None else ""
    return f'<span class="badge" style="background:{color}">{_e(cls)}</span>{conf}'


def _name(endpoint: Mapping[str, Any]) -> str:
    return f"{endpoint.get('method') or '?'} {endpoint.get('path') or endpoint.get('url') or '?'}"


def _overview(endpoints: Sequence[Mapping[str, Any]]) -> str:
    if not endpoints:
        return '<p class="muted">No endpoint was probed.</p>'
    rows = []
    for i, ep in enumerate(endpoints):
        levels = _maps(ep.get("levels"))
        peak = max((_num(lv.get("throughput_rps")) or 0.0 for lv in levels), default=None)
        rows.append(
            f'<tr><td><a href="#ep-{i}"><code>{_e(_name(ep))}</code></a></td><td>{_badge(ep)}</td>'
            f'<td class="num">{_fmt(peak)}</td><td class="num">{len(levels)}</td></tr>'
        )
    return (
        '<table class="overview"><thead><tr><th>endpoint</th><th>class</th>'
        '<th class="num">peak req/s</th><th class="num">levels</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_Row = tuple[Mapping[str, Any], tuple[Mark, str]]  # a level, and how it is drawn and why


def _point(row: _Row, y: float | None, unit: str) -> Point:
    level, (mark, why) = row
    c = _num(level.get("concurrency")) or 0.0
    value = "–" if y is None else f"{y:,.1f} {unit}"
    return Point(x=c, y=y, mark=mark, note=f"c={c:g}: {value}" + (f" ({why})" if why else ""))


def _latency_series(rows: Sequence[_Row], name: str, color: str) -> Series:
    points = tuple(_point(r, _num(_map(r[0].get("latency_ms")).get(name)), f"ms {name}") for r in rows)
    # The probe leaves p99 out where too few samples support it: say so in the legend.
    label = name if any(p.y is not None for p in points) or not points else f"{name} (too few samples)"
    return Series(label, color, points)


def _charts(levels: Sequence[Mapping[str, Any]]) -> str:
    """Throughput and latency against concurrency, the two curves the verdict is read from."""
    rows = [(lv, _state(lv)) for lv in levels if _num(lv.get("concurrency")) is not None]
    rows.sort(key=lambda r: _num(r[0].get("concurrency")) or 0.0)
    x_label = "concurrent requests (log scale)"
    throughput = Chart(
        title="Throughput",
        x_label=x_label,
        y_label="req/s",
        series=(
            Series(
                "req/s",
                _THROUGHPUT_COLOR,
                tuple(_point(r, _num(r[0].get("throughput_rps")), "req/s") for r in rows),
            ),
        ),
        key="throughput",
    )
    latency = Chart(
        title="Latency",
        x_label=x_label,
        y_label="ms",
        series=tuple(_latency_series(rows, name, color) for name, color in _LATENCY_COLORS),
        key="latency",
    )
    return f'<div class="charts">{render_chart(throughput)}{render_chart(latency)}</div>'


def _evidence(verdict: Mapping[str, Any]) -> str:
    evidence = _map(verdict.get("evidence"))
    if not evidence:
        return ""
    labels = evidence_labels()
    rows = "".join(
        f'<tr><td>{_e(labels.get(str(k), k))} <span class="muted small">{_e(k)}</span></td>'
        f'<td class="num">{_short(v)}</td></tr>'
        for k, v in evidence.items()
        if v is not None  # not measured for this curve: nothing to show
    )
    return f'<h3>Evidence</h3><table class="evidence"><tbody>{rows}</tbody></table>'


def _advice(items: Iterable[str]) -> str:
    lis = "".join(f"<li>{_text(a)}</li>" for a in items)
    return f'<h3>Advice</h3><ul class="advice">{lis}</ul>' if lis else ""


def _levels_table(levels: Sequence[Mapping[str, Any]]) -> str:
    if not levels:
        return ""
    head = "".join(
        f'<th class="num">{h}</th>'
        for h in ("c", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "srv CPU", "client CPU", "RSS/wkr")
    )
    rows = []
    for lv in sorted(levels, key=lambda d: _num(d.get("concurrency")) or 0.0):
        mark, why = _state(lv)
        lat = _map(lv.get("latency_ms"))
        rss = [n for n in (_num(x) for x in _list(lv.get("server_rss_bytes"))) if n is not None]
        notes = [why] if why else []
        if lv.get("worker_imbalance") is True:
            notes.append("worker imbalance")
        cells = (
            _fmt(lv.get("concurrency"), 0),
            _fmt(lv.get("throughput_rps")),
            _fmt(lat.get("p50")),
            _fmt(lat.get("p90")),
            _fmt(lat.get("p99")),
            _fmt(lv.get("errors"), 0),
            _fmt(lv.get("server_cpu_cores"), 2),
            _fmt(lv.get("client_cpu_cores"), 2),
            f"{max(rss) / _MIB:.0f} MiB" if rss else "–",
        )
        tds = "".join(f'<td class="num">{c}</td>' for c in cells)
        rows.append(f'<tr class="{mark.value}">{tds}<td>{_e("; ".join(notes))}</td></tr>')
    return (
        f'<h3>Levels</h3><table class="levels"><thead><tr>{head}<th></th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _endpoint(i: int, ep: Mapping[str, Any]) -> str:
    verdict = _map(ep.get("verdict"))
    levels = _maps(ep.get("levels"))
    url = f'<p class="muted small">requested <code>{_e(ep["url"])}</code></p>' if ep.get("url") else ""
    summary = f"<p>{_text(verdict['summary'])}</p>" if verdict.get("summary") else ""
    stop = (
        (
            f'<p class="muted small">ladder stopped: {_e(ep["stop_reason"])}'
            f"{' (' + _e(ep['stop_detail']) + ')' if ep.get('stop_detail') else ''}</p>"
        )
        if ep.get("stop_reason")
        else ""
    )
    return (
        # The heading, the verdict and the charts stay on one printed page.
        f'<section class="endpoint" id="ep-{i}"><div class="keep">'
        f"<h2><code>{_e(_name(ep))}</code> {_badge(ep)}</h2>{url}{summary}{_charts(levels)}</div>"
        f'<div class="cols"><div>{_evidence(verdict)}</div>'
        f"<div>{_advice(_strs(verdict.get('advice')))}</div></div>"
        f"{_levels_table(levels)}{stop}</section>"
    )


def _skipped(report: Mapping[str, Any]) -> str:
    items = "".join(
        f"<li><code>{_e(s.get('method') or '?')} {_e(s.get('path') or '?')}</code>:"
        f" {_e(s.get('reason') or '')}</li>"
        for s in _maps(report.get("skipped"))
    )
    return f"<section><h2>Not probed</h2><ul>{items}</ul></section>" if items else ""


# ---------------------------------------------------------------------------------------
# The plan and the verification


def _value(value: object) -> str:
    # As gunicorn.conf.py writes it (Python), like the terminal's plan table.
    return _e(value if isinstance(value, str) else repr(value))


def _plan_advice(plan: Mapping[str, Any]) -> str:
    items = []
    for a in _maps(plan.get("advice")):
        code = "\n".join(_strs(a.get("code")))
        block = f"<pre><code>{_e(code)}</code></pre>" if code else ""
        items.append(f"<li>{_text(a.get('text') or '')}{block}</li>")
    return f'<h3>Advice</h3><ul class="advice">{"".join(items)}</ul>' if items else ""


def _plan_settings(plan: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(s.get('name') or '?')}</code></td><td><code>{_value(s.get('value'))}</code></td>"
        f"<td>{_text(s.get('why') or '')}</td></tr>"
        for s in _maps(plan.get("settings"))
    )
    if not rows:
        return ""
    return (
        '<h3>Settings</h3><table class="settings"><thead><tr><th>setting</th><th>value</th><th>why</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _plan_extras(plan: Mapping[str, Any]) -> Iterable[str]:
    replicas = _map(plan.get("replicas"))
    if replicas:
        facts = "".join(
            f"<dt>{_e(k)}</dt><dd>{_fmt(v, 0) if _num(v) else _e(v)}</dd>" for k, v in replicas.items()
        )
        yield f'<h3>Replicas</h3><dl class="facts">{facts}</dl>'
    yield _plan_advice(plan)
    unknowns = "".join(f"<li>{_text(u)}</li>" for u in _strs(plan.get("unknowns")))
    if unknowns:
        yield f"<h3>Unknown</h3><ul>{unknowns}</ul>"
    commands = _map(plan.get("commands"))
    if commands:
        blocks = "".join(
            f'<p class="muted small">{_e(k)}</p><pre><code>{_e(v)}</code></pre>'
            for k, v in commands.items()
            if v
        )
        yield f"<h3>Commands</h3>{blocks}"


def _plan(plan: Mapping[str, Any]) -> str:
    workers = _num(plan.get("workers"))
    rule = _map(plan.get("rule_of_thumb"))
    head = f"{int(workers)} worker(s)" if workers is not None else "workers unknown"
    profile = f" · profile <code>{_e(plan['profile'])}</code>" if plan.get("profile") else ""
    app = f" for <code>{_e(plan['app'])}</code>" if plan.get("app") else ""
    inputs = "".join(f"<li>{_e(i)}</li>" for i in _strs(plan.get("inputs")))
    formula = f"<p>{_text(plan['worker_formula'])}</p>" if plan.get("worker_formula") else ""
    rule_note = f'<p class="muted">Rule of thumb: {_text(rule["note"])}</p>' if rule.get("note") else ""
    return (
        f'<section class="plan"><h2>Recommended deployment: {head}</h2>'
        f'<p class="muted small">plan{app}{profile}</p>{formula}{rule_note}'
        + (f'<ul class="muted small">{inputs}</ul>' if inputs else "")
        + _plan_settings(plan)
        + "".join(_plan_extras(plan))
        + "</section>"
    )


# ---------------------------------------------------------------------------------------
# The page


def render_html(
    report: Mapping[str, Any], plan: Mapping[str, Any] | None = None, verify: Mapping[str, Any] | None = None
) -> str:
    """One self-contained HTML page from the probe report JSON, and the plan and verify JSON if given."""
    endpoints = _maps(report.get("endpoints"))
    title = f"fastapi-tune report: {report.get('target') or ''}"
    body = [
        _header(report),
        f"<section><h2>Endpoints</h2>{_overview(endpoints)}</section>",
        *(_endpoint(i, ep) for i, ep in enumerate(endpoints)),
        overload_section(report),
        _skipped(report),
        _plan(plan) if plan else "",
        verify_section(verify) if verify else "",
        verify_overload_section(verify),
        f"<footer>Written by fastapi-tune {_e(report.get('tool_version') or '')}. This page is"
        " self-contained: no script, no external resource; it opens offline.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )
