"""The HTML report: escaped, tolerant of what a report holds, and proven in a real headless Chromium.

The fixtures in tests/data/ come from one real run: `fastapi-tune probe` against the bundled sample
app under uvicorn (one worker, this project's 2-core machine), then `recommend --json` and
`verify --repeat 1 --duration 1 --json` (the server's command line shortened; nothing secret).
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final

import pytest

from fastapi_tune.render.html import render_html
from tests.browser import CHROMIUM, INSTALL_HINT, Browser, Page, chromium, open_page

DATA: Final = Path(__file__).parent / "data"
HOSTILE: Final = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</style></code><script>document.title='pwned'</script>",
    "`<iframe src=javascript:alert(1)>`",  # backticks become <code>: still escaped inside
    "]]><svg onload=alert(1)>",
)
# What the page may contain: text, tables, lists, inline SVG; nothing that loads or runs.
ALLOWED_TAGS: Final = frozenset(
    {
        *("html", "head", "meta", "link", "title", "style", "body", "header", "footer", "section"),
        *("div", "span", "p", "a", "h1", "h2", "h3", "dl", "dt", "dd", "ul", "li", "strong", "code", "pre"),
        *("table", "thead", "tbody", "tr", "th", "td", "svg", "g", "line", "path", "circle", "text"),
    }
)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"sample_{name}.json").read_text())
    return data


@pytest.fixture
def probe() -> dict[str, Any]:
    return _load("probe")


@pytest.fixture
def plan() -> dict[str, Any]:
    return _load("plan")


@pytest.fixture
def verify() -> dict[str, Any]:
    return _load("verify")


@dataclass
class _Page(HTMLParser):
    """Every tag with its attributes, and which section each chart sits in."""

    tags: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)
    charts: list[tuple[str | None, str | None]] = field(default_factory=list)  # (section id, data-chart)
    _section: str | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
        if tag == "svg":
            self.charts.append((self._section, a.get("data-chart")))


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


# ---------------------------------------------------------------------------------------
# Unit: what the page holds


def test_each_endpoint_gets_both_charts_and_every_section(
    probe: dict[str, Any], plan: dict[str, Any], verify: dict[str, Any]
) -> None:
    page = render_html(probe, plan, verify)
    parsed = _parse(page)
    expected = [(f"ep-{i}", key) for i in range(len(probe["endpoints"])) for key in ("throughput", "latency")]
    assert parsed.charts == expected
    for ep in probe["endpoints"]:
        assert html.escape(ep["verdict"]["summary"].split("`")[0]) in page  # `code` becomes <code>
        assert f">{ep['class']}</span>" in page
    assert "Recommended deployment: 8 worker(s)" in page
    for setting in plan["settings"]:
        assert f"<code>{html.escape(setting['name'])}</code>" in page
    assert "recommended ★" in page
    assert html.escape(verify["verdict"]) in page
    # /score never had the 200 samples p99 needs; /orders/{order_id} had them at c=64 and 128.
    assert ">p99 (too few samples)<" in _chart_svg(page, "ep-3", "latency")
    assert ">p99<" in _chart_svg(page, "ep-0", "latency")
    assert "2 effective (logical)" in page
    assert "uvicorn, 1 worker(s)" in page


def test_the_page_loads_nothing_and_runs_nothing(
    probe: dict[str, Any], plan: dict[str, Any], verify: dict[str, Any]
) -> None:
    page = render_html(probe, plan, verify)
    parsed = _parse(page)
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    for tag, attrs in parsed.tags:
        assert "src" not in attrs, tag
        assert not any(name.startswith("on") for name in attrs), tag
        href = attrs.get("href")
        assert href is None or href.startswith(("#", "data:")), href
    csp = next(a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv"))
    assert csp is not None
    assert "default-src 'none'" in csp
    assert "url(" not in page
    assert "@import" not in page


def _poison(report: dict[str, Any], plan: dict[str, Any], verify: dict[str, Any], bad: str) -> None:
    """Put `bad` in every string a server, a user or a future version could control."""
    report.update(target=bad, created_at=bad, tool_version=bad)
    report["host"]["cpu"]["source"] = bad
    report["host"]["versions"][bad] = bad
    report["server"].update(kind=bad, cmdline=bad, pid=bad)
    ep = report["endpoints"][0]
    ep.update(method=bad, path=bad, url=bad, stop_reason=bad)
    ep["class"] = bad
    ep["verdict"].update(summary=bad, advice=[bad, f"`{bad}`"])
    ep["verdict"]["evidence"][bad] = bad
    ep["levels"][0]["errors_by_kind"] = {bad: 1}
    report["skipped"] = [{"method": bad, "path": bad, "reason": bad}]
    plan.update(app=bad, profile=bad, worker_formula=bad, inputs=[bad], unknowns=[bad])
    plan["rule_of_thumb"]["note"] = bad
    plan["settings"][0].update(name=bad, value=bad, why=bad)
    plan["advice"] = [{"text": bad, "code": [bad]}]
    plan["commands"] = {bad: bad}
    plan["replicas"] = {bad: bad}
    verify.update(endpoints=[bad], verdict=bad, best=bad)
    verify["runs"][0]["label"] = bad


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_strings_are_escaped_everywhere(
    probe: dict[str, Any], plan: dict[str, Any], verify: dict[str, Any], bad: str
) -> None:
    _poison(probe, plan, verify, bad)
    page = render_html(probe, plan, verify)
    for raw in ("<script", "<img", "<iframe", "<svg onload"):
        assert raw not in page
    parsed = _parse(page)
    assert {t for t, _ in parsed.tags} <= ALLOWED_TAGS
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    assert page.count(html.escape(bad)) >= 20  # shown, as text, wherever it was put


def _minimal(levels: Any) -> dict[str, Any]:
    return {"endpoints": [{"method": "GET", "path": "/x", "levels": levels}]}


@pytest.mark.parametrize(
    ("report", "endpoints"),
    [
        pytest.param({}, 0, id="empty"),
        pytest.param(_minimal([{"concurrency": 1}]), 1, id="only-concurrency"),
        pytest.param(_minimal([]), 1, id="no-levels"),
        pytest.param(_minimal("not a list"), 1, id="levels-not-a-list"),
        pytest.param(
            {
                "target": 5,
                "host": None,
                "server": [],
                "interrupted": "yes",
                "endpoints": [
                    {
                        "method": None,
                        "class": None,
                        "verdict": {"evidence": [], "advice": "not a list", "confidence": "high"},
                        "levels": [
                            {"concurrency": "x"},
                            {"concurrency": 2, "latency_ms": "fast", "throughput_rps": "n/a"},
                            {"concurrency": True, "server_rss_bytes": "big"},
                            {"concurrency": 4, "server_rss_bytes": 7, "requests": float("nan")},
                            {"concurrency": float("inf"), "throughput_rps": float("nan")},
                            {"concurrency": 8, "throughput_rps": float("inf"), "latency_ms": {"p50": -1}},
                            "junk",
                        ],
                    },
                    "junk",
                ],
                "skipped": [None, {"reason": 3}],
            },
            1,
            id="wrong-types",
        ),
    ],
)
def test_missing_or_odd_keys_still_render(report: dict[str, Any], endpoints: int) -> None:
    verify = {"runs": [{}, {"latency_ms": None, "throughput_rps_rounds": 5, "throughput_rps": float("nan")}]}
    page = render_html(report, {"settings": "none", "advice": [{"code": 3}], "workers": float("inf")}, verify)
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert len(_parse(page).charts) == 2 * endpoints


def test_unknown_keys_from_a_newer_version_are_ignored(
    probe: dict[str, Any], plan: dict[str, Any], verify: dict[str, Any]
) -> None:
    before = render_html(probe, plan, verify)
    probe["schema_version"] = 2
    probe["new_top"] = {"nested": [1, 2]}
    for ep in probe["endpoints"]:
        ep["new_field"] = [{"x": 1}]
        for level in ep["levels"]:
            level["queue_depth"] = {"p50": 3}
    plan["new"] = "x"
    verify["runs"][0]["new"] = [1]
    assert render_html(probe, plan, verify) == before


def _chart_svg(page: str, section: str, key: str) -> str:
    start = page.index(f'<section class="endpoint" id="{section}"')
    chart = page.index(f'data-chart="{key}"', start)
    return page[chart : page.index("</svg>", chart)]


def test_excluded_and_stalled_levels_are_drawn_differently(probe: dict[str, Any]) -> None:
    levels = probe["endpoints"][0]["levels"]
    levels[5]["client_saturated"] = True  # the generator was the limit
    levels[6]["errors"] = levels[6]["requests"]  # every request failed
    levels[7]["stalled"] = True  # a future key
    page = render_html(probe)
    throughput = _chart_svg(page, "ep-0", "throughput")
    assert throughput.count('class="pt normal"') == 5
    assert throughput.count('class="pt excluded"') == 2
    assert throughput.count('class="pt stalled"') == 1
    assert ">not evidence<" in throughput
    assert ">stalled<" in throughput
    assert "not evidence: client-saturated" in throughput  # the tooltip says why
    other = _chart_svg(page, "ep-1", "throughput")
    assert "pt excluded" not in other
    assert ">not evidence<" not in other
    assert page.count('<tr class="excluded">') == 2
    assert page.count('<tr class="stalled">') == 1


def test_an_interrupted_probe_says_so(probe: dict[str, Any]) -> None:
    assert "Interrupted:" not in render_html(probe)
    probe["interrupted"] = True
    assert "Interrupted:" in render_html(probe)


# ---------------------------------------------------------------------------------------
# A real headless Chromium: it renders, and the page fetches nothing


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(INSTALL_HINT, pytrace=False)
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


@dataclass
class Site:
    """A loopback web server for a folder, recording every path asked for."""

    root: Path
    url: str
    seen: list[str]


class _Recorder(http.server.SimpleHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads `seen`, not a log


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(root, f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _show(browser: Browser, site: Site, name: str, page: str) -> tuple[Page, str]:
    (site.root / name).write_text(page, encoding="utf-8")
    tab = open_page(browser)
    url = f"{site.url}/{name}"
    tab.load(url)
    return tab, url


# Per chart: its size on the page and in its own units, the markers, any text that spills out of
# the viewBox, and whether two legend entries overlap.
MEASURE: Final = """
(() => Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const r = svg.getBoundingClientRect(), b = svg.getBBox();
  // Client rects: on the page, after transforms (the y label is rotated).
  const outside = Array.from(svg.querySelectorAll('text')).filter(t => {
    const q = t.getBoundingClientRect();
    return q.left < r.left - 0.5 || q.top < r.top - 0.5
        || q.right > r.right + 0.5 || q.bottom > r.bottom + 0.5;
  }).map(t => t.textContent);
  const items = Array.from(svg.querySelectorAll('.legend-item')).map(g => {
    const q = g.getBoundingClientRect(); return {x: q.left, y: q.top, width: q.width, height: q.height};
  });
  const overlap = items.some((a, i) => items.slice(i + 1).some(c =>
    a.x < c.x + c.width && c.x < a.x + a.width && a.y < c.y + c.height && c.y < a.y + a.height));
  return {section: svg.closest('section').id, chart: svg.dataset.chart, width: r.width,
          height: r.height, bboxWidth: b.width, bboxHeight: b.height,
          markers: svg.querySelectorAll('g.pt').length, outside, overlap};
}))()
"""


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _no_csp_refusals(tab: Page) -> None:
    refused = [t for t in tab.console_texts() if "Content Security Policy" in t]
    assert refused == []


def test_chromium_draws_every_chart_and_the_page_fetches_nothing(
    browser: Browser,
    site: Site,
    tmp_path: Path,
    probe: dict[str, Any],
    plan: dict[str, Any],
    verify: dict[str, Any],
) -> None:
    tab, url = _show(browser, site, "report.html", render_html(probe, plan, verify))
    charts = tab.evaluate(MEASURE)
    assert [(c["section"], c["chart"]) for c in charts] == _parse(render_html(probe)).charts
    for c, levels in zip(charts, (ep["levels"] for ep in probe["endpoints"] for _ in "tl"), strict=True):
        # Laid out side by side at 1100 px, drawn across most of the 480 x 300 view.
        assert (c["width"] > 300, c["height"] > 150, c["bboxWidth"] > 400, c["bboxHeight"] > 250) == (
            True, True, True, True
        ), c  # fmt: skip
        assert c["markers"] >= len(levels), c
        assert c["outside"] == [], c
        assert not c["overlap"], c
    assert tab.requested_urls() == [url]  # what the browser asked for, failed requests included
    assert site.seen == ["/report.html"]  # what reached a server
    _no_csp_refusals(tab)
    assert tab.evaluate("document.title") == "fastapi-tune report: http://127.0.0.1:18731"

    shot = tmp_path / "report.png"
    tab.screenshot(shot)
    width, height = _png_size(shot)
    assert width == 1100
    assert height > 3000

    pdf = tab.send("Page.printToPDF", {"printBackground": True})["data"]
    assert pdf.startswith("JVBERi0")  # base64 of "%PDF-"
    assert tab.requested_urls() == [url]
    assert site.seen == ["/report.html"]


def test_chromium_runs_and_fetches_nothing_from_a_hostile_report(
    browser: Browser, site: Site, probe: dict[str, Any], plan: dict[str, Any], verify: dict[str, Any]
) -> None:
    bad = (
        f'<img src="{site.url}/pwned.png"><script>document.title="pwned"</script>'
        f'<link rel="stylesheet" href="{site.url}/pwned.css"><style>@import "{site.url}/pwned2.css";</style>'
    )
    _poison(probe, plan, verify, bad)
    tab, url = _show(browser, site, "hostile.html", render_html(probe, plan, verify))
    assert tab.evaluate("document.title").startswith("fastapi-tune report: ")
    loaders = "script, img, iframe, object, embed, link[rel=stylesheet]"
    assert tab.evaluate(f"document.querySelectorAll('{loaders}').length") == 0
    assert tab.evaluate("document.querySelectorAll('style').length") == 1
    assert bad in tab.evaluate("document.body.innerText")  # shown as text
    assert tab.requested_urls() == [url]
    assert site.seen == ["/hostile.html"]
    _no_csp_refusals(tab)  # nothing even tried


def test_the_fetch_detectors_work_and_the_csp_is_a_second_wall(
    browser: Browser, site: Site, probe: dict[str, Any]
) -> None:
    # Without the report's policy, an image is requested, and both detectors see it.
    tab, _url = _show(browser, site, "plain.html", '<!DOCTYPE html><img src="/pixel.png">')
    assert f"{site.url}/pixel.png" in tab.requested_urls()
    assert "/pixel.png" in site.seen
    # The report's page with an image spliced in past the escaping: its policy refuses the load.
    page = render_html(probe).replace("<body>", f'<body><img src="{site.url}/spliced.png">', 1)
    tab, _ = _show(browser, site, "spliced.html", page)
    assert "/spliced.png" not in site.seen
    assert any("Content Security Policy" in t for t in tab.console_texts())
