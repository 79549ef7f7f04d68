"""Access logs: formats, matching, shares, the peak, bounded memory, secrets kept out."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from fastapi_tune.core.errors import BadInputError, UsageError
from fastapi_tune.discover.routes import RouteMatcher
from fastapi_tune.measure.accesslog import read_access_logs
from fastapi_tune.measure.logformats import detect
from fastapi_tune.measure.report import ProbeReport, ServerInfo, load_report, report_to_json
from fastapi_tune.measure.traffic import (
    PEAK_WINDOW_S,
    TrafficProfile,
    TrafficTally,
    traffic_from_json,
    traffic_to_json,
)
from tests.logs import FORMATS, QUERY, ROUTES, SECRETS, SHARES, Shape, Written, line, write_log

# The bars: shares within 1 percentage point, the peak within 5%.
SHARE_TOLERANCE = 0.01
PEAK_TOLERANCE = 0.05


def assert_matches(profile: TrafficProfile, written: Written, timed: bool = True) -> None:
    """Shares, counts and peak as generated."""
    shares = profile.shares()
    for route, share in SHARES.items():
        assert shares[route] == pytest.approx(share, abs=SHARE_TOLERANCE), route
    assert profile.used == written.requests
    assert profile.unmatched == written.unmatched
    assert profile.unreadable == written.garbage
    assert profile.lines == written.lines
    assert {label for label, _ in profile.unmatched_top} == {
        "GET /favicon.ico",
        "GET /wp-login.php",
        "GET /.env",
    }
    if timed:
        assert profile.peak is not None, profile.peak_unknown
        assert profile.peak.rps == pytest.approx(written.shape.peak_rps, rel=PEAK_TOLERANCE)
    else:
        assert profile.peak is None
        assert profile.peak_unknown is not None
        assert "no time" in profile.peak_unknown


def no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_gives_the_generated_mix_and_peak(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"{fmt}.log"
    written = write_log(path, fmt)
    profile = read_access_logs([str(path)], ROUTES)
    assert profile.formats == ({"nginx": "combined", "gunicorn": "combined"}.get(fmt, fmt),)
    assert_matches(profile, written, timed=fmt != "uvicorn")
    no_secret(json.dumps(traffic_to_json(profile)))


def test_the_peak_says_when(tmp_path: Path) -> None:
    """The busiest window starts where the burst does, in the log's own UTC offset."""
    path = tmp_path / "gunicorn.log"
    written = write_log(path, "gunicorn")
    peak = read_access_logs([str(path)], ROUTES).peak
    assert peak is not None
    # The burst starts 300 s after 09:00 UTC; gunicorn's lines are in -07:00.
    assert peak.start.endswith("-07:00")
    assert peak.start[11:16] == "02:05", peak.start
    assert peak.requests == written.shape.burst_rps * PEAK_WINDOW_S


def test_durations_give_production_latency(tmp_path: Path) -> None:
    path = tmp_path / "json.log"
    write_log(path, "json")
    routes = {r.route: r for r in read_access_logs([str(path)], ROUTES).routes}
    login = routes["POST /login"].latency_ms
    assert login is not None
    assert login["p50"] == pytest.approx(150.0, rel=0.05)  # generated at 150 ms +-10%
    assert routes["GET /orders/{oid}"].statuses.keys() == {200, 404}


def test_gzip_is_read_by_its_magic_bytes(tmp_path: Path) -> None:
    plain = tmp_path / "access.log"
    written = write_log(plain, "nginx")
    packed = tmp_path / "access.log.1"  # rotated name, no .gz suffix
    with plain.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert_matches(read_access_logs([str(packed)], ROUTES), written)


def test_gzip_written_directly(tmp_path: Path) -> None:
    path = tmp_path / "access.json.gz"
    written = write_log(path, "json", compress=True)
    assert_matches(read_access_logs([str(path)], ROUTES), written)


def test_a_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "access.log.gz"
    write_log(path, "nginx", compress=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    profile = read_access_logs([str(path)], ROUTES)
    assert profile.used > 1000
    assert any("ends early" in n for n in profile.notes)


def test_a_gz_name_that_is_not_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "access.log.gz"
    write_log(path, "nginx")
    with pytest.raises(BadInputError, match="not gzip"):
        read_access_logs([str(path)], ROUTES)


def _split(path: Path, parts: int, tmp_path: Path) -> list[Path]:
    """The lines of `path` dealt to `parts` files in turn, as a load balancer deals requests."""
    outs = [tmp_path / f"server-{i}.log" for i in range(parts)]
    handles = [o.open("w") for o in outs]
    with path.open() as f:
        for i, text in enumerate(f):
            handles[i % parts].write(text)
    for h in handles:
        h.close()
    return outs


@pytest.mark.parametrize("fmt", ["nginx", "json"])
def test_servers_logs_add_up_to_one_rate(tmp_path: Path, fmt: str) -> None:
    """Three servers' logs of the same hours: read side by side in time order, not one after another."""
    whole = tmp_path / "all.log"
    written = write_log(whole, fmt)
    parts = _split(whole, 3, tmp_path)
    profile = read_access_logs([str(p) for p in parts], ROUTES)
    assert_matches(profile, written)
    assert profile.off_peak == 0


def test_rotated_files_in_any_order(tmp_path: Path) -> None:
    """access.log.1 holds the older half: given after the newer file, the peak is the same."""
    whole = tmp_path / "all.log"
    written = write_log(whole, "nginx")
    text = whole.read_text().splitlines(keepends=True)
    half = len(text) // 2
    older, newer = tmp_path / "access.log.1", tmp_path / "access.log"
    older.write_text("".join(text[:half]))
    newer.write_text("".join(text[half:]))
    profile = read_access_logs([str(newer), str(older)], ROUTES)
    assert_matches(profile, written)


def test_lines_far_out_of_order_are_left_out_of_the_peak_only() -> None:
    tally = TrafficTally()
    for second in range(0, 600):
        tally.request("GET /a", 200, None, 1_000_000 + second)
    tally.request("GET /a", 200, None, 1_000_000)  # 10 minutes late
    profile = tally.profile((), None)
    assert profile.off_peak == 1
    assert profile.used == 601


def test_a_short_log_has_no_peak(tmp_path: Path) -> None:
    path = tmp_path / "short.log"
    write_log(path, "nginx", Shape(seconds=30, burst_s=0))
    profile = read_access_logs([str(path)], ROUTES)
    assert profile.peak is None
    assert profile.peak_unknown is not None
    assert "30 s" in profile.peak_unknown


def test_a_quiet_hour_between_bursts() -> None:
    """Gaps longer than the window are skipped, and the busier burst wins."""
    tally = TrafficTally()
    start = 1_700_000_000
    for offset, rps in ((0, 5), (3600, 9), (7200, 3)):
        for second in range(120):
            for _ in range(rps):
                tally.request("GET /a", 200, None, start + offset + second)
    peak = tally.profile((), None).peak
    assert peak is not None
    assert peak.rps == pytest.approx(9.0)


# ---------------------------------------------------------------------------------------
# Matching


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/users/me", "GET /users/me", id="literal-beats-parameter"),
        pytest.param("GET", "/users/42", "GET /users/{uid}", id="parameter"),
        pytest.param("GET", "/c/d/e", "GET /{v}/d/e", id="fewer-parameters-win"),
        pytest.param("GET", "/a/b/y", "GET /a/{q}/{r}", id="only-match"),
        pytest.param("GET", "/b/x/y", "GET /{p}/x/y", id="only-match-first-parameter"),
        pytest.param("GET", "/a/x/y", "GET /a/x/{s}", id="longer-literal-prefix"),
        pytest.param("GET", "/files/report.json", "GET /files/{name}.json", id="partial-segment"),
        pytest.param("GET", "/files/report.csv", "GET /files/{name}", id="partial-segment-falls-back"),
        pytest.param("GET", "/orders/7/items", None, id="deeper-is-not-guessed"),
        pytest.param("DELETE", "/users/42", None, id="method-must-exist"),
        pytest.param("HEAD", "/users/42", None, id="head-is-not-get"),
        pytest.param("GET", "/users/42/", None, id="trailing-slash-is-another-path"),
        pytest.param("GET", "/users/caf%C3%A9", "GET /users/{uid}", id="percent-encoded"),
        pytest.param("GET", "/", "GET /", id="root"),
    ],
)
def test_most_specific_template_wins(method: str, path: str, expected: str | None) -> None:
    matcher = RouteMatcher(
        [
            ("GET", "/{p}/x/y"),  # listed first: the document's order does not decide
            ("GET", "/c/{t}/{u}"),
            ("GET", "/{v}/d/e"),
            ("GET", "/a/{q}/{r}"),
            ("GET", "/a/x/{s}"),
            ("GET", "/users/{uid}"),
            ("GET", "/users/me"),
            ("GET", "/files/{name}"),
            ("GET", "/files/{name}.json"),
            ("GET", "/orders/{oid}"),
            ("GET", "/"),
        ]
    )
    assert matcher.match(method, path) == expected
    assert matcher.match(method, path) == expected  # from the cache, the same


def test_unmatched_paths_stay_bounded() -> None:
    tally = TrafficTally()
    for i in range(20_000):
        tally.unmatched_path("GET", f"/scan/{i}?token=x")
    for _ in range(50):
        tally.unmatched_path("GET", "/favicon.ico")
    profile = tally.profile((), None)
    assert profile.unmatched == 20_050
    assert profile.unmatched_top[0] == ("GET /favicon.ico", 50)
    assert not profile.unmatched_top_exact
    assert len(tally._unmatched_paths) <= 4096 + 1


# ---------------------------------------------------------------------------------------
# Formats: variants seen in the wild


@pytest.mark.parametrize(
    ("text", "fmt", "method", "path", "status", "ms"),
    [
        pytest.param(
            '{"@timestamp": "2026-03-14T09:00:01Z", "http": {"request": {"method": "get"}, "response":'
            ' {"status_code": 201}}, "url": {"path": "/items"}, "event": {"duration": 2500000}}',
            "json", "GET", "/items", 201, 2.5, id="ecs-nested",
        ),
        pytest.param(
            '{"ts": 1773478801123, "request": "POST /login HTTP/1.1", "status": "200", "latency": "12ms"}',
            "json", "POST", "/login", 200, 12.0, id="epoch-ms-request-line-unit-string",
        ),
        pytest.param(
            '{"time_local": "14/Mar/2026:09:00:01 +0000", "request_method": "GET", "request_uri":'
            ' "/items?token=x", "status": 200, "request_time": 0.004}',
            "json", "GET", "/items?token=x", 200, 4.0, id="nginx-json-escape",
        ),
        pytest.param(
            '\x1b[32mINFO\x1b[0m:     127.0.0.1:5 - "\x1b[1mGET /items HTTP/1.1\x1b[0m"'
            ' \x1b[32m200 OK\x1b[0m',
            "uvicorn", "GET", "/items", 200, None, id="uvicorn-colours",
        ),
        pytest.param(
            '127.0.0.1:5 - "GET /items HTTP/1.1" 404',
            "uvicorn", "GET", "/items", 404, None, id="uvicorn-worker-under-gunicorn",
        ),
        pytest.param(
            '10.0.0.1 - - [14/Mar/2026:09:00:01 +0100] "GET /items HTTP/2.0" 200 12 "-" "ua" 0.250',
            "combined", "GET", "/items", 200, 250.0, id="combined-request-time-at-end",
        ),
        pytest.param(
            '10.0.0.1 - - [14/Mar/2026:09:00:01 +0100] "GET /items HTTP/1.0" 304 -',
            "combined", "GET", "/items", 304, None, id="common-log-format",
        ),
    ],
)  # fmt: skip
def test_format_variants(text: str, fmt: str, method: str, path: str, status: int, ms: float | None) -> None:
    found, read = detect([text])
    assert found is not None
    assert read == 1
    assert found.name == fmt
    record = found.parse(text)
    assert record is not None
    assert record[1:4] == (method, path, status)
    assert record[4] == (None if ms is None else pytest.approx(ms))


def test_uvicorn_with_a_time_first_has_a_peak(tmp_path: Path) -> None:
    path = tmp_path / "uvicorn.log"
    lines = [
        f'2026-03-14 09:{s // 60:02d}:{s % 60:02d},123 INFO 127.0.0.1:5 - "GET /items HTTP/1.1" 200 OK'
        for s in range(300)
        for _ in range(2 if s < 120 else 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    profile = read_access_logs([str(path)], ROUTES)
    assert profile.peak is not None
    assert profile.peak.rps == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------
# Errors and secrets


def test_a_log_with_no_usable_line_names_the_file_and_hides_secrets(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text(f"Traceback: GET /orders/1{QUERY}\n" + '{"password": "' + SECRETS[2] + '"}\n' * 5)
    with pytest.raises(BadInputError) as caught:
        read_access_logs([str(path)], ROUTES)
    message = str(caught.value)
    assert str(path) in message
    assert "expected" in message
    no_secret(message)


def test_a_log_of_another_app_says_nothing_matched(tmp_path: Path) -> None:
    path = tmp_path / "other.log"
    path.write_text(
        "".join(line("nginx", i, "GET", f"/other/{i}{QUERY}", 200, 1.0) + "\n" for i in range(50))
    )
    with pytest.raises(BadInputError, match="none of its 50 request lines matched") as caught:
        read_access_logs([str(path)], ROUTES)
    no_secret(str(caught.value))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("\n\n")
    with pytest.raises(BadInputError, match="empty"):
        read_access_logs([str(empty)], ROUTES)
    with pytest.raises(BadInputError, match="cannot read"):
        read_access_logs([str(tmp_path / "missing.log")], ROUTES)
    with pytest.raises(UsageError, match="stdin"):
        read_access_logs(["-", "-"], ROUTES)


def test_secrets_in_paths_of_unmatched_lines_are_hidden(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    written = write_log(path, "nginx")
    with path.open("a") as f:
        for _ in range(500):
            f.write(line("nginx", 1.0, "GET", f"/reset;session={SECRETS[1]}", 200, 1.0) + "\n")
    profile = read_access_logs([str(path)], ROUTES)
    assert profile.unmatched == written.unmatched + 500
    no_secret(json.dumps(traffic_to_json(profile)))


# ---------------------------------------------------------------------------------------
# In the report


def test_the_report_keeps_the_traffic_and_old_reports_still_load(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    write_log(log, "json")
    profile = read_access_logs([str(log)], ROUTES)
    report = ProbeReport(
        target="http://127.0.0.1:8000", host=None, server=ServerInfo(local=False), endpoints=()
    )
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report_to_json(replace(report, traffic=profile))))
    loaded = load_report(saved)
    assert loaded is not None
    assert loaded.traffic is not None
    assert traffic_to_json(loaded.traffic) == traffic_to_json(profile)
    assert traffic_from_json(traffic_to_json(profile), "x").shares() == profile.shares()
    old = report_to_json(report)
    del old["traffic"]
    saved.write_text(json.dumps(old))
    reloaded = load_report(saved)
    assert reloaded is not None
    assert reloaded.traffic is None
