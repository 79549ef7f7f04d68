"""classify -> plan on the classifier's own output: the evidence a verdict carries is what the plan reads.

The plan tests build verdicts by hand; here the verdicts come from classify() over ladders of the
closed-loop model (tests/test_classify.py), so a renamed or re-meaning evidence field breaks a test.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fastapi_tune.judge.classify import classify
from fastapi_tune.measure.report import Endpoint, EndpointClass, Level, ProbeReport, ServerInfo, StopReason
from fastapi_tune.plan.model import Choices, Plan
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import load_profile
from tests.test_classify import ladder
from tests.test_plan import make_host


def judged(path: str, levels: tuple[Level, ...], workers: int) -> Endpoint:
    ep = Endpoint("GET", path, f"http://127.0.0.1:8000{path}", levels, StopReason.MAX_LEVEL)
    return replace(ep, verdict=classify(levels, workers, server_observed=True))


def plan_from(endpoints: list[Endpoint], workers: int, cpus: float = 2, profile: str = "vm") -> Plan:
    report = ProbeReport(
        target="http://127.0.0.1:8000",
        host=make_host(cpus),
        server=ServerInfo(local=True, pid=10, kind="uvicorn", workers=workers, worker_pids=(10,)),
        endpoints=tuple(endpoints),
    )
    return make_plan(make_host(cpus), report, load_profile(profile), Choices(app="main:app"))


def test_cpu_bound_verdict_sizes_one_worker_per_cpu() -> None:
    ep = judged("/hash", ladder("cpu", 20, 1, (1, 2, 4, 8, 16)), 1)
    assert ep.verdict is not None
    assert ep.verdict.cls is EndpointClass.CPU_BOUND
    plan = plan_from([ep], workers=1, cpus=4)
    assert plan.workers == 4
    assert "CPU-limited routes (GET /hash)" in plan.worker_formula


def test_loop_blocking_workers_come_from_the_measured_cpu_in_the_evidence() -> None:
    ep = judged("/inventory", ladder("loop", 30, 1, (1, 2, 4, 8, 16, 32, 64)), 1)
    assert ep.verdict is not None
    assert ep.verdict.cls is EndpointClass.LOOP_BLOCKING
    cpu = ep.verdict.evidence.server_cpu_per_busy_worker
    assert cpu is not None
    assert cpu < 0.25  # the model's 0.2 ms of CPU per 30 ms request
    plan = plan_from([ep], workers=1)
    # ceil(2 CPUs / max(cpu, 1/4)) = 8: the plan read the evidence, and the floor of 1/4 applied.
    assert plan.workers == 8
    assert any("only hide" in a.text for a in plan.advice)


def test_thread_tokens_agree_between_the_verdict_and_the_plan() -> None:
    """Both use rules.suggested_thread_tokens: same peak, same workers, same number."""
    ep = judged("/report", ladder("threadpool", 40, 2), 2)
    assert ep.verdict is not None
    assert ep.verdict.cls is EndpointClass.THREADPOOL_BOUND
    plan = plan_from([ep], workers=2)
    assert plan.workers == 2
    assert plan.limiter_tokens == ep.verdict.evidence.suggested_thread_tokens == 80


@pytest.mark.parametrize("cpus", [pytest.param(4, id="4-cpus"), pytest.param(8, id="8-cpus")])
def test_io_bound_verdict_halves_the_cpu_rule(cpus: int) -> None:
    ep = judged("/orders/{id}", ladder("io", 40, 1), 1)
    assert ep.verdict is not None
    assert ep.verdict.cls is EndpointClass.IO_BOUND
    plan = plan_from([ep], workers=1, cpus=cpus)
    assert plan.workers == cpus // 2


def test_inconclusive_routes_are_named_and_do_not_size_workers() -> None:
    short = judged("/thin", ladder("cpu", 20, 1, (1, 2)), 1)
    cpu = judged("/hash", ladder("cpu", 20, 1, (1, 2, 4, 8, 16)), 1)
    assert short.verdict is not None
    assert short.verdict.cls is EndpointClass.INCONCLUSIVE
    plan = plan_from([short, cpu], workers=1, cpus=4)
    assert plan.workers == 4
    assert any("GET /thin" in u for u in plan.unknowns)
