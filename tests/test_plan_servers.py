"""One plan, three servers: every value carried or said, caps sized from the evidence, flags the
installed versions have (read from the real `uvicorn --help` and `granian --help`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.appenv import AppEnv, read_app_env
from fastapi_tune.measure.histogram import LatencyHistogram
from fastapi_tune.measure.report import EndpointClass, ProbeReport
from fastapi_tune.plan.model import AdmissionCap, Plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.plan.server_evidence import ServerEvidence, server_evidence
from fastapi_tune.plan.server_model import Server, for_measuring, parse_servers
from fastapi_tune.plan.servers import plan_server
from fastapi_tune.plan.slo import parse_slo
from fastapi_tune.render.commands import server_argv
from fastapi_tune.render.servers import render_run_script
from fastapi_tune.verify.judge import Capacity, RateCheck, Run
from fastapi_tune.verify.servers_judge import ServerRun, judge_servers
from tests.test_plan import MIB, cpu_report, make_endpoint, make_host, make_level, make_report, plan_for

STACK = AppEnv(python="py", gunicorn="27.0.1", uvicorn="0.55.0", uvicorn_worker="0.4.0", granian="2.8.9")


def _plans(profile: str, report: ProbeReport | None, stack: AppEnv = STACK) -> tuple[Plan, ServerEvidence]:
    host = make_host(2)
    plan = plan_for(host, report, profile, stack=stack)
    return plan, server_evidence(host, report, load_profile(profile))


def _stalling_report() -> ProbeReport:
    """A route served cleanly up to 32 in flight on one worker that stalls at 64 (a pool deadlock)."""
    levels = [make_level(c, c / 0.02, 25.0, cpu=0.3) for c in (1, 8, 32)]
    stalled = dataclasses.replace(make_level(64, 0.0, 25.0, cpu=0.01), stalled=True, requests=0)
    return make_report([make_endpoint("/orders", EndpointClass.STALLED, [*levels, stalled])])


@pytest.mark.parametrize("server", list(Server))
@pytest.mark.parametrize("profile", ["vm", "container", "kubernetes", "small-memory"])
@pytest.mark.parametrize("with_report", [True, False], ids=["report", "no-report"])
def test_every_plan_value_is_carried_or_said(server: Server, profile: str, with_report: bool) -> None:
    plan, ev = _plans(profile, cpu_report() if with_report else None)
    sp = plan_server(server, plan, ev)
    carried = {o.carries for o in sp.options} | {nf.setting for nf in sp.not_flags} | {"wsgi_app"}
    assert [s.name for s in plan.settings if s.name not in carried] == []
    assert all(o.why for o in sp.options)
    assert sp.workers == plan.workers
    assert sp.option("--workers").value == str(plan.workers)


def test_uvicorn_carries_timeouts_and_recycling_in_its_own_flags() -> None:
    plan, ev = _plans("vm", cpu_report())
    sp = plan_server(Server.UVICORN, plan, ev)
    assert sp.option("--timeout-keep-alive").value == str(plan.setting("keepalive").value)
    assert sp.option("--timeout-graceful-shutdown").value == str(plan.setting("graceful_timeout").value)
    assert sp.option("--timeout-worker-healthcheck").value == str(plan.setting("timeout").value)
    assert sp.option("--limit-max-requests").recycles
    with pytest.raises(KeyError):
        sp.option("--limit-concurrency")  # nothing collapsed: no cap
    assert any("--limit-concurrency" in n for n in sp.notes)


@pytest.mark.parametrize(
    ("version", "missing"),
    [
        pytest.param("0.36.0", "--timeout-worker-healthcheck", id="0.36-fixed-healthcheck"),
        pytest.param("0.40.0", "--limit-max-requests-jitter", id="0.40-no-jitter"),
        pytest.param("0.21.1", "--timeout-graceful-shutdown", id="0.21-no-graceful"),
    ],
)
def test_old_uvicorn_flags_are_left_out_and_said(version: str, missing: str) -> None:
    plan, ev = _plans("vm", cpu_report(), dataclasses.replace(STACK, uvicorn=version))
    sp = plan_server(Server.UVICORN, plan, ev)
    assert missing not in server_argv(sp)
    said = [nf for nf in sp.not_flags if nf.missing_flag == missing]
    assert len(said) == 1
    assert version in said[0].text


def test_one_uvicorn_process_has_no_manager_and_says_so() -> None:
    plan, ev = _plans("kubernetes", cpu_report())
    sp = plan_server(Server.UVICORN, plan, ev)
    assert plan.workers == 1
    assert "--timeout-worker-healthcheck" not in server_argv(sp)
    assert any(nf.setting == "timeout" and "no manager" in nf.text for nf in sp.not_flags)


def test_a_collapse_caps_granian_and_uvicorn_at_the_level_served_below_it() -> None:
    plan, ev = _plans("vm", _stalling_report())
    assert ev.concurrency.collapse_per_worker == 64
    granian = plan_server(Server.GRANIAN, plan, ev)
    uvicorn = plan_server(Server.UVICORN, plan, ev)
    assert granian.option("--backpressure").value == "32"
    assert uvicorn.option("--limit-concurrency").value == "33"  # uvicorn counts the asking connection
    assert "stalled at concurrency 64" in granian.option("--backpressure").why


def test_a_collapse_on_two_probe_workers_is_counted_per_worker() -> None:
    report = dataclasses.replace(
        _stalling_report(), server=dataclasses.replace(_stalling_report().server, workers=2)
    )
    plan, ev = _plans("vm", report)
    assert plan_server(Server.GRANIAN, plan, ev).option("--backpressure").value == "16"


def test_the_overload_steps_cap_sizes_granian_and_replaces_uvicorns_refusing_limit() -> None:
    plan, ev = _plans("vm", cpu_report())
    cap = AdmissionCap(
        limit=6,
        wait_s=10.0,
        collapse_per_worker=18,
        held_per_worker=8,
        why_limit="",
        why_wait="",
        cause=None,
        fixes=(),
    )
    plan = dataclasses.replace(plan, admission=cap)
    granian = plan_server(Server.GRANIAN, plan, ev)
    assert granian.option("--backpressure").value == "6"
    assert "fall over at 18" in granian.option("--backpressure").why
    uvicorn = plan_server(Server.UVICORN, plan, ev)
    assert "--limit-concurrency" not in server_argv(uvicorn)
    assert any("asgi_admission.py already caps each worker at 6" in n for n in uvicorn.notes)


def test_without_a_collapse_granian_keeps_its_own_default_backpressure() -> None:
    plan, ev = _plans("vm", cpu_report())
    backlog = int(str(plan.setting("backlog").value))
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert sp.option("--backpressure").value == str(backlog // plan.workers)
    assert "no route stalled" in sp.option("--backpressure").why


def test_granian_memory_cap_from_measured_rss_and_the_profiles_headroom() -> None:
    plan, ev = _plans("vm", cpu_report())  # workers measured at 60 MiB, vm keeps 25% free
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert sp.option("--workers-max-rss").value == "80"  # 60 / 0.75
    assert sp.option("--workers-max-rss").recycles


def test_granian_memory_cap_stops_at_the_instances_share() -> None:
    host = make_host(2, memory=256 * MIB)
    plan = plan_for(host, cpu_report(), "small-memory", stack=STACK)
    ev = server_evidence(host, cpu_report(), load_profile("small-memory"))
    limit = int(str(plan_server(Server.GRANIAN, plan, ev).option("--workers-max-rss").value))
    assert limit * plan.workers <= 256
    assert limit >= 60  # never below what a worker was measured to use


def test_no_measured_rss_sets_no_memory_cap_and_says_why() -> None:
    plan, ev = _plans("vm", None)
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert "--workers-max-rss" not in server_argv(sp)
    assert any("no worker RSS was measured" in n for n in sp.notes)


def test_granian_recycles_by_age_from_the_count_at_the_measured_rate() -> None:
    plan, ev = _plans("vm", cpu_report())  # 10000 requests, 47 req/s per worker
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert sp.option("--workers-lifetime").value == "240"  # 10000 / 47 = 213 s -> whole minutes
    assert any(nf.setting == "max_requests_jitter" for nf in sp.not_flags)
    kube, kube_ev = _plans("kubernetes", cpu_report())  # max_requests 0: no recycling
    assert "--workers-lifetime" not in server_argv(plan_server(Server.GRANIAN, kube, kube_ev))


def test_keepalive_past_granians_limit_is_capped_and_advised() -> None:
    plan, ev = _plans("kubernetes", cpu_report())
    assert int(str(plan.setting("keepalive").value)) > 60
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert sp.option("--http1-header-read-timeout").value == "60000"
    assert any("below 60 s" in a.text for a in sp.advice)


def test_old_granian_gets_no_memory_cap_flag_and_says_so() -> None:
    plan, ev = _plans("vm", cpu_report(), dataclasses.replace(STACK, granian="2.4.1"))
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert "--workers-max-rss" not in server_argv(sp)
    assert {nf.missing_flag for nf in sp.not_flags} >= {"--workers-max-rss", "--rss-samples"}


def test_missing_granian_says_how_to_get_it() -> None:
    plan, ev = _plans("vm", cpu_report(), dataclasses.replace(STACK, granian=None))
    sp = plan_server(Server.GRANIAN, plan, ev)
    assert sp.installed is False
    assert any("fastapi-tune[granian]" in n and "py -m pip install" in n for n in sp.notes)


def test_gunicorn_only_advice_stays_with_gunicorn() -> None:
    plan, ev = _plans("vm", cpu_report())
    gunicorn_only = [a for a in plan.advice if a.only_for == "gunicorn"]
    assert gunicorn_only  # the uvicorn-worker pass-through gap
    for server in (Server.UVICORN, Server.GRANIAN):
        assert not set(gunicorn_only) & set(plan_server(server, plan, ev).advice)


def _help(module: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.mark.parametrize("server", [Server.UVICORN, Server.GRANIAN])
def test_every_flag_is_one_the_installed_server_has(server: Server) -> None:
    """The real tools' --help, with the caps a collapse sets and the recycling a vm plan has."""
    host = make_host(2)
    report = _stalling_report()
    plan = plan_for(host, report, "vm", stack=read_app_env(sys.executable))
    sp = plan_server(server, plan, server_evidence(host, report, load_profile("vm")))
    text = _help(server.value)
    flags = [o.flag for o in sp.options]
    assert len(flags) >= 8
    assert [f for f in flags if f not in text] == []


def test_measuring_moves_the_bind_to_loopback_and_turns_recycling_off() -> None:
    plan, ev = _plans("container", cpu_report())
    for server in Server:
        sp, left_out = for_measuring(plan_server(server, plan, ev), 19999)
        argv = server_argv(sp)
        assert "0.0.0.0" not in argv
        assert "19999" in " ".join(argv)
        assert not any(o.recycles for o in sp.options)
        assert left_out  # the container profile recycles every 10000 requests: said


def test_the_script_reads_workers_and_port_from_the_environment() -> None:
    plan, ev = _plans("vm", cpu_report())
    sp = plan_server(Server.GRANIAN, plan, ev)
    text = render_run_script(sp, plan)
    assert text.startswith("#!/bin/sh\n")
    assert f'--workers "${{WEB_CONCURRENCY:-{plan.workers}}}"' in text
    assert '--port "${PORT:-8000}"' in text
    assert "exec granian " in text
    for o in sp.options:
        assert o.flag in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("gunicorn,granian", (Server.GUNICORN, Server.GRANIAN), id="two"),
        pytest.param(" Uvicorn , uvicorn ", (Server.UVICORN,), id="case-and-repeats"),
    ],
)
def test_parse_servers(text: str, expected: tuple[Server, ...]) -> None:
    assert parse_servers(text) == expected


@pytest.mark.parametrize("text", ["hypercorn", "", ","])
def test_parse_servers_refuses_unknown_names(text: str) -> None:
    with pytest.raises(UsageError, match="--servers"):
        parse_servers(text)


# ---------------------------------------------------------------------------------------
# The judgement


def _run(
    server: str, rounds: tuple[float, ...], rss: float = 100.0, errors: int = 0, **more: object
) -> ServerRun:
    rps = sorted(rounds)[len(rounds) // 2]
    run = Run(
        label=server,
        workers=2,
        requests=1000,
        errors=errors,
        throughput_rps=rps,
        p50_ms=10.0,
        p99_ms=50.0,
        rss_mib=rss,
        server_cpu_cores=1.0,
        client_cpu_cores=0.1,
        rounds_rps=rounds,
    )
    run = dataclasses.replace(run, **more)  # type: ignore[arg-type]
    return ServerRun(server, run, boot_s=1.0, rss_rounds=(rss, rss), command=server)


def test_best_server_beyond_the_noise_and_by_how_much() -> None:
    v = judge_servers([_run("gunicorn", (100, 104)), _run("uvicorn", (80, 82)), _run("granian", (130, 133))])
    assert v is not None
    assert v.best == "granian"
    assert v.line.startswith("granian serves this app best: granian 133 req/s: 1.28x gunicorn (104)")


def test_servers_within_the_noise_tie() -> None:
    v = judge_servers([_run("gunicorn", (100, 120)), _run("granian", (110, 115))])
    assert v is not None
    assert v.best is None
    assert set(v.tied) == {"gunicorn", "granian"}
    assert v.line.startswith("tie within noise")


def test_one_round_names_no_best() -> None:
    v = judge_servers([_run("gunicorn", (100,)), _run("granian", (150,))])
    assert v is not None
    assert v.best is None
    assert "no noise was measured" in v.line


def test_a_server_with_errors_is_out_of_the_comparison() -> None:
    v = judge_servers([_run("gunicorn", (100, 101)), _run("granian", (300, 301), errors=50)])
    assert v is not None
    assert v.best == "gunicorn"
    assert v.not_comparable
    assert "granian" in v.not_comparable[0]


def _at_rate(rate: float, p99_ms: float, failed: int = 0) -> RateCheck:
    h = LatencyHistogram.of([10.0] * 985 + [p99_ms] * 15)
    n = round(rate * 10.0)  # the server kept up: every arrival sent and served inside the window
    return RateCheck(rate, 10.0, n, n - failed, failed, 0, 0, h, 0.1, sent=n, served=n - failed)


def test_with_an_objective_the_rate_per_mib_decides_among_those_that_met_it() -> None:
    slo = parse_slo("p99<300ms")
    runs = [
        _run("gunicorn", (100, 101), rss=200.0, at_rate=_at_rate(50, 100)),
        _run("granian", (130, 131), rss=100.0, at_rate=_at_rate(50, 100)),
        _run("uvicorn", (90, 91), rss=50.0, at_rate=_at_rate(50, 2000)),  # smallest, but missed
    ]
    v = judge_servers(runs, slo)
    assert v is not None
    assert v.slo_met is True
    assert v.best == "granian"
    assert "missed" in v.line
    assert "uvicorn" in v.line


def test_no_server_meeting_the_objective_is_said() -> None:
    v = judge_servers([_run("gunicorn", (100, 101), at_rate=_at_rate(50, 2000))], parse_slo("p99<300ms"))
    assert v is not None
    assert v.slo_met is False


def test_capacity_per_mib_within_the_search_resolution_ties() -> None:
    slo = parse_slo("p99<300ms")
    runs = [
        _run("gunicorn", (100, 101), rss=100.0, capacity=Capacity(100.0, ())),
        _run("granian", (100, 101), rss=102.0, capacity=Capacity(104.0, ())),
    ]
    v = judge_servers(runs, slo, capacity=True)
    assert v is not None
    assert v.best is None
    assert set(v.tied) == {"gunicorn", "granian"}
