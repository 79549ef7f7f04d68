"""The saved report: what is written reads back the same, and bad files say where they are bad."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.measure.report import (
    Endpoint,
    EndpointClass,
    Evidence,
    Latency,
    Level,
    ProbeReport,
    ServerInfo,
    StopReason,
    Verdict,
    load_report,
    report_from_json,
    report_to_json,
)
from tests.test_plan import make_host


def sample_report() -> ProbeReport:
    level = Level(
        concurrency=4,
        requests=120,
        errors=2,
        errors_by_kind={"5xx": 2},
        duration_s=0.5,
        throughput_rps=236.0,
        latency_ms=Latency(p50=16.5, p90=20.0, p99=None, max=31.2, mean=17.0),
        server_cpu_cores=1.9,
        server_rss_bytes=(50_000_000, 51_000_000),
        client_cpu_cores=0.05,
        client_saturated=False,
        littles_law_ratio=1.003,
        p99_supported=False,
        server_cpu_by_worker=(0.95, 0.02),
        worker_imbalance=True,
    )
    verdict = Verdict(
        EndpointClass.CPU_BOUND,
        0.8,
        "CPU-bound.",
        Evidence(knee_concurrency=2, fit_rms=0.05),
        ("one per CPU",),
    )
    return ProbeReport(
        target="http://127.0.0.1:8000",
        host=make_host(2),
        server=ServerInfo(
            local=True, pid=10, kind="gunicorn", cmdline="gunicorn app", workers=2, worker_pids=(11, 12)
        ),
        endpoints=(
            Endpoint(
                "GET",
                "/orders/{oid}",
                "http://127.0.0.1:8000/orders/1",
                (level,),
                StopReason.SATURATED,
                "",
                verdict,
            ),
        ),
        settings={"levels": None},
        created_at="2026-11-25T08:00:00+00:00",
        tool_version="0.1.0",
        elapsed_s=12.5,
    )


def test_round_trip() -> None:
    report = sample_report()
    text = json.dumps(report_to_json(report))
    back = report_from_json(json.loads(text), "r.json")
    assert back == report
    assert json.loads(text)["endpoints"][0]["class"] == "cpu-bound"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        pytest.param(lambda d: d.update(schema_version=99), "schema_version", id="other-version"),
        pytest.param(
            lambda d: d["endpoints"][0]["levels"][0].update(requests="many"),
            "levels[0].requests",
            id="bad-type-named-by-path",
        ),
        pytest.param(
            lambda d: d["endpoints"][0]["verdict"].update({"class": "slow"}),
            "verdict.class",
            id="unknown-class",
        ),
        pytest.param(
            lambda d: d["endpoints"][0]["levels"][0].update(throughput_rps=float("nan")),
            "levels[0].throughput_rps: expected a finite number",
            id="nan",
        ),
        pytest.param(
            lambda d: d["endpoints"][0]["levels"][0]["latency_ms"].update(p50=float("inf")),
            "latency_ms.p50",
            id="infinity",
        ),
        pytest.param(
            lambda d: d["endpoints"][0]["levels"][0].update(concurrency=-4),
            "levels[0].concurrency: expected an integer from 1",
            id="negative-concurrency",
        ),
        pytest.param(
            lambda d: d["endpoints"][0]["levels"][0].update(server_rss_bytes=[-5]),
            "server_rss_bytes",
            id="negative-rss",
        ),
        pytest.param(lambda d: d["host"]["cpu"].update(effective=0), "host.cpu.effective", id="zero-cpus"),
        pytest.param(lambda d: d.update(host="big"), "host: expected an object", id="host-not-an-object"),
        pytest.param(
            lambda d: d["endpoints"][0].update(stop_reason="bored"), "stop_reason: expected one of", id="stop"
        ),
        pytest.param(
            lambda d: d["endpoints"][0]["verdict"].update(confidence=7), "verdict.confidence", id="confidence"
        ),
    ],
)
def test_bad_reports_name_the_file_and_key(mutate: Callable[[dict[str, Any]], None], needle: str) -> None:
    data = report_to_json(sample_report())
    mutate(data)
    with pytest.raises(BadInputError, match=r"r\.json") as info:
        report_from_json(data, "r.json")
    assert needle in str(info.value)


def test_saved_nan_and_deep_nesting_are_bad_input(tmp_path: Path) -> None:
    """Python's json writes and reads NaN; a report holding one is refused where it is read."""
    data = report_to_json(sample_report())
    data["endpoints"][0]["levels"][0]["client_cpu_cores"] = float("nan")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BadInputError, match="client_cpu_cores"):
        load_report(path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(BadInputError, match=r"deep\.json"):
        load_report(deep)
