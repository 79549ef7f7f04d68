"""The saved report: what is written reads back the same, and bad files say where they are bad."""

from __future__ import annotations

import json

import pytest

from fastapi_tune.errors import BadInputError
from fastapi_tune.report import (
    Endpoint,
    Latency,
    Level,
    ProbeReport,
    ServerInfo,
    Verdict,
    report_from_json,
    report_to_json,
)


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
        server_cpu_per_worker=(0.95, 0.02),
        worker_imbalance=True,
    )
    verdict = Verdict(
        "cpu-bound", 0.8, "CPU-bound.", {"knee_concurrency": 2, "usl_sigma": None}, ("one per CPU",)
    )
    return ProbeReport(
        target="http://127.0.0.1:8000",
        host={"cpu": {"effective": 2}},
        server=ServerInfo(
            local=True, pid=10, kind="gunicorn", cmdline="gunicorn app", workers=2, worker_pids=(11, 12)
        ),
        endpoints=(
            Endpoint(
                "GET", "/orders/{oid}", "http://127.0.0.1:8000/orders/1", (level,), "saturated", verdict
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
    assert report_to_json(back) == report_to_json(report)
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
    ],
)
def test_bad_reports_name_the_file_and_key(mutate: object, needle: str) -> None:
    data = report_to_json(sample_report())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(BadInputError, match=r"r\.json") as info:
        report_from_json(data, "r.json")
    assert needle in str(info.value)
