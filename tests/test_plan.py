"""The plan: worker counts and every other setting, from hand-built host facts and reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.host import CpuFacts, HostFacts, MemoryFacts
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
)
from fastapi_tune.plan.evidence import cpu_processes
from fastapi_tune.plan.model import DEPRECATED_WORKER, UVICORN_WORKER, Choices, Plan
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.render.commands import fastapi_argv, gunicorn_argv, one_line, uvicorn_argv
from fastapi_tune.render.conf import render_gunicorn_conf

MIB = 1 << 20
GIB = 1 << 30

# ---------------------------------------------------------------------------------------
# Builders (test_conf.py imports these too)


def make_host(
    effective: float = 2,
    logical: int | None = None,
    memory: int = 24 * GIB,
    dev_shm: bool = True,
    source: str | None = None,
) -> HostFacts:
    logical = logical if logical is not None else max(1, int(effective + 0.999))
    quota = effective if effective < logical else None
    return HostFacts(
        cpu=CpuFacts(
            logical=logical,
            physical=logical,
            affinity=logical,
            quota=quota,
            cpuset=None,
            override=None,
            effective=effective,
            source=source or ("quota" if quota is not None else "logical"),
        ),
        memory=MemoryFacts(
            total_bytes=memory,
            available_bytes=memory // 2,
            cgroup_limit_bytes=None,
            override_bytes=None,
            effective_bytes=memory,
            source="total",
        ),
        cgroup_version=1,
        load_average=(0.1, 0.1, 0.1),
        dev_shm=dev_shm,
        versions={"python": "3.11.7", "gunicorn": "27.0.1"},
    )


def make_level(
    concurrency: int,
    rps: float,
    max_ms: float,
    rss: Sequence[int] | None = (60 * MIB,),
    cpu: float | None = None,
    saturated: bool = False,
) -> Level:
    return Level(
        concurrency=concurrency,
        requests=int(rps * 5),
        errors=0,
        errors_by_kind={},
        duration_s=5.0,
        throughput_rps=rps,
        latency_ms=Latency(p50=max_ms / 2, p90=max_ms * 0.8, p99=None, max=max_ms, mean=max_ms / 2),
        server_cpu_cores=cpu,
        server_rss_bytes=tuple(rss) if rss is not None else None,
        client_cpu_cores=0.1,
        client_saturated=saturated,
        littles_law_ratio=1.0,
        p99_supported=False,
    )


def make_endpoint(
    path: str, cls: EndpointClass, levels: Sequence[Level], summary: str = "measured."
) -> Endpoint:
    return Endpoint(
        method="GET",
        path=path,
        url=f"http://127.0.0.1:8000{path}",
        levels=tuple(levels),
        stop_reason=StopReason.MAX_LEVEL,
        verdict=Verdict(cls=cls, confidence=0.9, summary=summary, evidence=Evidence(), advice=()),
    )


def make_report(endpoints: Sequence[Endpoint], workers: int = 1, effective: float = 2) -> ProbeReport:
    return ProbeReport(
        target="http://127.0.0.1:8000",
        host=make_host(effective),
        server=ServerInfo(local=True, pid=100, kind="gunicorn", workers=workers, worker_pids=(101,)),
        endpoints=tuple(endpoints),
    )


def cpu_report(workers: int = 1) -> ProbeReport:
    """A 20 ms CPU route: throughput flat at ~47 req/s per worker, latency growing."""
    levels = [make_level(c, 47.0 * workers, 20.0 * c / workers + 5, cpu=0.98 * workers) for c in (1, 4, 16)]
    return make_report([make_endpoint("/hash", EndpointClass.CPU_BOUND, levels)], workers=workers)


def io_report(cpu: float = 0.2) -> ProbeReport:
    levels = [make_level(c, c / 0.04, 45.0, cpu=cpu) for c in (1, 16, 64)]
    return make_report([make_endpoint("/sleep", EndpointClass.IO_BOUND, levels)])


def threadpool_report() -> ProbeReport:
    io = make_endpoint(
        "/sleep", EndpointClass.IO_BOUND, [make_level(c, c / 0.04, 45.0, cpu=0.2) for c in (1, 16, 64)]
    )
    tp = make_endpoint(
        "/sync-db",
        EndpointClass.THREADPOOL_BOUND,
        [make_level(c, min(c, 40) / 0.05, 50.0 * max(1, c / 40), cpu=0.3) for c in (1, 16, 64, 128)],
        summary="throughput flat at 800 req/s from c=40: the 40-thread limiter is full.",
    )
    return make_report([io, tp])


def plan_for(host: HostFacts, report: ProbeReport | None, profile: str = "vm", **choices: Any) -> Plan:
    choices.setdefault("gunicorn_version", "27.0.1")
    return make_plan(host, report, load_profile(profile), Choices(**choices))


# ---------------------------------------------------------------------------------------
# Workers


@pytest.mark.parametrize(
    ("effective", "per_cpu", "expected"),
    [
        pytest.param(1, 1.0, 1, id="one-cpu"),
        pytest.param(1.2, 1.0, 1, id="1.2-rounds-down"),
        pytest.param(1.5, 1.0, 2, id="1.5-rounds-up"),
        pytest.param(2, 1.0, 2, id="two-cpus"),
        pytest.param(0.25, 1.0, 1, id="quarter-cpu-still-one"),
        pytest.param(4, 0.5, 2, id="half-per-cpu"),
    ],
)
def test_cpu_processes_rounds_half_up(effective: float, per_cpu: float, expected: int) -> None:
    assert cpu_processes(effective, per_cpu) == expected


@pytest.mark.parametrize(
    ("host", "report", "profile", "expected"),
    [
        pytest.param(make_host(2), cpu_report(), "vm", 2, id="vm-2cpu-cpu-bound-is-2"),
        pytest.param(make_host(2), cpu_report(), "container", 2, id="container-2cpu-cpu-bound-is-2"),
        pytest.param(make_host(1), cpu_report(), "vm", 2, id="vm-1cpu-raised-to-profile-min-2"),
        pytest.param(make_host(1), cpu_report(), "container", 2, id="container-1cpu-raised-to-profile-min-2"),
        pytest.param(make_host(1), cpu_report(), "small-memory", 1, id="small-memory-1cpu-is-1"),
        pytest.param(make_host(1, logical=64), cpu_report(), "container", 2, id="1cpu-quota-on-64-cores"),
        pytest.param(make_host(2), cpu_report(), "kubernetes", 1, id="kubernetes-is-1"),
        pytest.param(make_host(8), None, "kubernetes", 1, id="kubernetes-no-report-is-1"),
        pytest.param(make_host(0.5, logical=64), io_report(), "kubernetes", 1, id="kubernetes-half-cpu-is-1"),
        pytest.param(make_host(2), None, "vm", 2, id="no-report-cpu-rule"),
        pytest.param(make_host(4), io_report(), "vm", 2, id="io-bound-half-the-cpus"),
        pytest.param(make_host(4), io_report(cpu=0.95), "vm", 4, id="io-bound-but-cpu-saturated"),
        pytest.param(make_host(4), threadpool_report(), "vm", 2, id="threadpool-bound-not-more-workers"),
        pytest.param(make_host(1.5, logical=8), cpu_report(), "container", 2, id="1.5-quota-is-2"),
        pytest.param(make_host(64), cpu_report(), "vm", 16, id="capped-by-profile-max"),
        pytest.param(make_host(4), cpu_report(), "vm", 4, id="vm-4cpu-cpu-bound-is-4"),
        pytest.param(make_host(3), cpu_report(), "small-memory", 3, id="small-memory-3cpu-is-3"),
    ],
)
def test_worker_count(host: HostFacts, report: ProbeReport | None, profile: str, expected: int) -> None:
    plan = plan_for(host, report, profile)
    assert plan.workers == expected
    assert plan.setting("workers").value == plan.workers


def test_memory_caps_workers_below_the_profile_minimum() -> None:
    big = make_level(16, 47.0, 30.0, rss=(400 * MIB, 380 * MIB), cpu=1.0)
    report = make_report([make_endpoint("/model", EndpointClass.CPU_BOUND, [big])])
    plan = plan_for(make_host(4, memory=1 * GIB), report, "vm")
    # floor(1 GiB x 0.75 / 400 MiB) = 1, although 4 CPUs and the profile's min of 2 ask for more.
    assert plan.workers == 1
    assert "400 MiB" in plan.setting("workers").why
    assert "largest measured RSS" in plan.setting("workers").why


def test_unknown_rss_is_an_assumption_said_aloud() -> None:
    plan = plan_for(make_host(2), None, "vm")
    assert "ASSUMED" in plan.setting("workers").why
    assert any("assumed 150 MiB" in u for u in plan.unknowns)


def test_memory_too_small_for_even_one_worker_warns() -> None:
    plan = plan_for(make_host(2, memory=100 * MIB), None, "kubernetes")
    assert plan.workers == 1
    assert any("do not fit" in a.text for a in plan.advice)


def test_rule_of_thumb_counts_logical_cpus_and_names_the_cost() -> None:
    plan = plan_for(make_host(2, logical=64), cpu_report(), "container")
    assert plan.rule_of_thumb == 129
    assert plan.workers == 2
    assert "not the 2 CPUs allowed" in plan.rule_of_thumb_note
    assert "127 more processes" in plan.rule_of_thumb_note


def test_formula_shows_its_numbers() -> None:
    plan = plan_for(make_host(2), cpu_report(), "vm")
    assert "GET /hash" in plan.worker_formula
    assert "x 2 CPUs" in plan.worker_formula
    assert plan.worker_formula.endswith("=> 2 workers")


# ---------------------------------------------------------------------------------------
# Worker class


def test_default_worker_class_is_uvicorn_worker_never_the_deprecated_one() -> None:
    plan = plan_for(make_host(2), cpu_report())
    assert plan.setting("worker_class").value == UVICORN_WORKER
    assert DEPRECATED_WORKER not in one_line(gunicorn_argv(plan))


def test_deprecated_worker_class_is_refused() -> None:
    with pytest.raises(UsageError, match="deprecated"):
        plan_for(make_host(2), None, worker_class=DEPRECATED_WORKER)


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        pytest.param("27.0.1", True, id="gunicorn-27"),
        pytest.param("24.0.0", True, id="gunicorn-24"),
        pytest.param("23.0.0", False, id="gunicorn-23"),
        pytest.param(None, False, id="unknown"),
    ],
)
def test_native_asgi_worker_needs_gunicorn_24(version: str | None, ok: bool) -> None:
    if ok:
        plan = plan_for(make_host(2), None, worker_class="asgi", gunicorn_version=version)
        assert plan.setting("worker_class").value == "asgi"
        # The uvicorn-worker pass-through note does not apply to the native worker.
        assert not any("uvicorn-worker does not pass" in a.text for a in plan.advice)
    else:
        with pytest.raises(UsageError, match=">= 24"):
            plan_for(make_host(2), None, worker_class="asgi", gunicorn_version=version)


# ---------------------------------------------------------------------------------------
# Other settings


def test_timeouts_follow_the_slowest_measured_request() -> None:
    slow = make_level(4, 0.2, 50_000.0, cpu=0.1)
    report = make_report([make_endpoint("/export", EndpointClass.IO_BOUND, [slow])])
    plan = plan_for(make_host(2), report, "vm")
    # 50 s x 3 = 150 s, clamped to the profile's 120.
    assert plan.setting("timeout").value == 120
    assert "50000 ms" in plan.setting("timeout").why
    # Graceful shutdown must let that request finish.
    assert plan.setting("graceful_timeout").value == 51


def test_fast_routes_keep_the_timeout_floor() -> None:
    plan = plan_for(make_host(2), cpu_report(), "vm")
    assert plan.setting("timeout").value == 30


def test_client_saturated_levels_are_not_evidence() -> None:
    lv = [make_level(1, 40, 25.0), make_level(64, 40, 90_000.0, saturated=True)]
    plan = plan_for(make_host(2), make_report([make_endpoint("/x", EndpointClass.CPU_BOUND, lv)]), "vm")
    assert plan.setting("timeout").value == 30


def test_graceful_timeout_beyond_the_orchestrators_kill_is_flagged() -> None:
    slow = make_level(4, 0.2, 40_000.0, cpu=0.1)
    plan = plan_for(
        make_host(2), make_report([make_endpoint("/export", EndpointClass.IO_BOUND, [slow])]), "kubernetes"
    )
    assert plan.setting("graceful_timeout").value == 41
    assert any("terminationGracePeriodSeconds" in a.text for a in plan.advice)


def test_kubernetes_keepalive_outlives_the_load_balancer() -> None:
    plan = plan_for(make_host(2), None, "kubernetes")
    ka = plan.setting("keepalive")
    assert isinstance(ka.value, int)
    assert ka.value > 60
    assert "idle timeout" in ka.why


@pytest.mark.parametrize(
    ("profile", "bind", "accesslog"),
    [
        pytest.param("vm", "127.0.0.1:8000", None, id="vm"),
        pytest.param("container", "0.0.0.0:8000", "-", id="container"),
        pytest.param("kubernetes", "0.0.0.0:8000", "-", id="kubernetes"),
    ],
)
def test_bind_and_access_log_by_profile(profile: str, bind: str, accesslog: str | None) -> None:
    plan = plan_for(make_host(2), None, profile)
    assert plan.setting("bind").value == bind
    assert plan.setting("accesslog").value == accesslog


def test_bind_choice_wins() -> None:
    plan = plan_for(make_host(2), None, "vm", bind="0.0.0.0:9000")
    assert plan.setting("bind").value == "0.0.0.0:9000"
    assert "--port 9000" in one_line(uvicorn_argv(plan))


def test_worker_tmp_dir_only_with_dev_shm() -> None:
    assert plan_for(make_host(2), None).setting("worker_tmp_dir").value == "/dev/shm"
    plan = plan_for(make_host(2, dev_shm=False), None)
    with pytest.raises(KeyError):
        plan.setting("worker_tmp_dir")
    assert any("/dev/shm" in u for u in plan.unknowns)


@pytest.mark.parametrize(
    ("profile", "agreed", "expected"),
    [
        pytest.param("vm", True, True, id="vm-agreed"),
        pytest.param("vm", False, False, id="vm-not-agreed"),
        pytest.param("kubernetes", True, False, id="kubernetes-one-worker"),
    ],
)
def test_preload_only_when_agreed_and_useful(profile: str, agreed: bool, expected: bool) -> None:
    plan = plan_for(make_host(2), cpu_report(), profile, preload=agreed)
    assert plan.setting("preload_app").value is expected
    assert ("--preload" in gunicorn_argv(plan)) is expected


# ---------------------------------------------------------------------------------------
# Advice, unknowns, commands, replicas


def test_threadpool_bound_routes_get_the_limiter_code_and_a_number() -> None:
    plan = plan_for(make_host(4), threadpool_report(), "vm")
    assert plan.limiter_tokens is not None
    # 128 probed x 1.25 / 2 workers = 80.
    assert plan.limiter_tokens == 80
    limiter = next(a for a in plan.advice if a.code and "total_tokens" in a.code[-1])
    assert limiter.code[-1].endswith("= 80")
    assert "GET /sync-db" in limiter.text


def test_loop_blocking_routes_are_named_with_the_fix() -> None:
    lv = [make_level(c, 32.0, 30.0 * c, cpu=0.03) for c in (1, 8, 32)]
    report = make_report(
        [make_endpoint("/inventory", EndpointClass.LOOP_BLOCKING, lv, summary="32 req/s flat, CPU 3%.")]
    )
    plan = plan_for(make_host(2), report, "vm")
    text = " ".join(a.text for a in plan.advice)
    assert "GET /inventory blocks the event loop" in text
    assert "32 req/s flat" in text


def test_uvicorn_worker_pass_through_gaps_are_advised() -> None:
    plan = plan_for(make_host(2), None)
    gap = next(a for a in plan.advice if "limit_concurrency" in a.text)
    assert any("timeout_graceful_shutdown" in line for line in gap.code)


def test_no_report_lists_what_is_unknown() -> None:
    plan = plan_for(make_host(2), None)
    joined = " ".join(plan.unknowns)
    for word in ("route classes", "per-worker memory", "slowest request", "thread-pool"):
        assert word in joined


def test_equivalent_commands() -> None:
    plan = plan_for(make_host(2), cpu_report(), "container", app="shop.main:api")
    assert gunicorn_argv(plan)[:2] == ("gunicorn", "shop.main:api")
    assert "--workers 2" in one_line(gunicorn_argv(plan))
    assert one_line(uvicorn_argv(plan)).startswith(
        "uvicorn shop.main:api --host 0.0.0.0 --port 8000 --workers 2"
    )
    assert (
        one_line(fastapi_argv(plan))
        == "fastapi run shop/main.py --app api --host 0.0.0.0 --port 8000 --workers 2"
    )


def test_app_must_name_an_attribute() -> None:
    with pytest.raises(UsageError, match="MODULE:ATTRIBUTE"):
        plan_for(make_host(2), None, app="main")


def test_kubernetes_replicas_from_measured_throughput() -> None:
    plan = plan_for(make_host(2), cpu_report(workers=2), "kubernetes", target_rps=1000)
    r = plan.replicas
    assert r is not None
    # 47 req/s per worker (94 with 2 probe workers); 1000 / (47 x 0.7) = 30.4 -> 31 replicas.
    assert r.per_worker_rps == pytest.approx(47.0)
    assert r.replicas == 31
    # ~20.9 ms CPU per request x 1000/31 req/s per pod = 674m -> 700m.
    assert r.cpu_request_milli == 700
    assert "GET /hash" in r.why


def test_replicas_without_a_report_is_an_unknown() -> None:
    plan = plan_for(make_host(2), None, "kubernetes", target_rps=500)
    assert plan.replicas is None
    assert any("500 req/s" in u for u in plan.unknowns)


def test_every_setting_says_why_in_the_file() -> None:
    """The reason decided with each value reaches the comment above its line in gunicorn.conf.py."""
    for profile in ("vm", "container", "kubernetes", "small-memory"):
        plan = plan_for(make_host(2), cpu_report(), profile)
        text = " ".join(line.lstrip("# ").strip() for line in render_gunicorn_conf(plan).splitlines())
        for s in plan.settings:
            assert s.why.endswith("."), (profile, s.name, s.why)
            assert f"{s.name}: {s.why}" in text, (profile, s.name)


@pytest.mark.parametrize(
    ("cpu_per_worker", "effective", "expected"),
    [
        pytest.param(0.03, 2, 8, id="idle-blocker-capped-at-4-per-cpu"),
        pytest.param(0.5, 2, 4, id="measured-cpu-decides"),
        pytest.param(0.03, 1, 4, id="one-cpu"),
    ],
)
def test_loop_blocking_workers_hide_the_block_until_fixed(
    cpu_per_worker: float, effective: float, expected: int
) -> None:
    """A blocked worker idles its CPU: more workers add throughput until their CPU fills the machine."""
    ep = make_endpoint(
        "/inventory",
        EndpointClass.LOOP_BLOCKING,
        [make_level(c, 32.0, 30.0 * c, cpu=0.03) for c in (1, 8, 32)],
    )
    assert ep.verdict is not None
    ep = replace(
        ep, verdict=replace(ep.verdict, evidence=Evidence(server_cpu_per_busy_worker=cpu_per_worker))
    )
    plan = plan_for(make_host(effective), make_report([ep], effective=effective), "vm")
    assert plan.workers == expected
    hint = next(a.text for a in plan.advice if "only hide" in a.text)
    assert "GET /inventory" in hint
    assert "Regenerate" in hint
