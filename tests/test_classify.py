"""classify() on synthetic ladders drawn from the closed-loop model in the field notes."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from fastapi_tune.judge.classify import classify
from fastapi_tune.judge.curve import clean_levels, exclusion_reason, knee_fit, usl_fit, usl_peak
from fastapi_tune.measure.report import EndpointClass, Latency, Level, Verdict, evidence_rows

LADDER = (1, 2, 4, 8, 16, 32, 64, 128)
DURATION_S = 5.0
# Measured for every judged curve, whatever the class (the rest depends on the curve's shape).
REQUIRED_EVIDENCE = (
    "efficiency_at_max",
    "latency_inflation",
    "service_time_ms",
    "clean_levels",
    "max_clean_concurrency",
    "fit_rms",
)


def level(
    n: int,
    rps: float,
    latency_ms: float,
    cpu: float | None,
    *,
    errors: int = 0,
    client_saturated: bool = False,
) -> Level:
    """One level as the probe would record it; latency percentiles spread around the p50."""
    requests = max(int(rps * DURATION_S), 1) + errors
    mean = latency_ms * 1.05
    return Level(
        concurrency=n,
        requests=requests,
        errors=errors,
        errors_by_kind={"5xx": errors} if errors else {},
        duration_s=DURATION_S,
        throughput_rps=rps,
        latency_ms=Latency(p50=latency_ms, p90=latency_ms * 1.3, p99=None, max=latency_ms * 2, mean=mean),
        server_cpu_cores=cpu,
        server_rss_bytes=None,
        client_cpu_cores=0.3,
        client_saturated=client_saturated,
        littles_law_ratio=rps * mean / 1000 / n,
        p99_supported=False,
    )


def ladder(
    kind: str,
    service_ms: float,
    workers: int,
    ns: Sequence[int] = LADDER,
    *,
    seed: int | None = None,
    jitter: float = 0.0,
    cores: float = 2.0,
    observed: bool = True,
) -> tuple[Level, ...]:
    """Levels from the closed-loop model: X = min(N, cap)/S, R = N/X, server CPU per kind.

    kind: "io" (no cap), "cpu" (cap = busy workers, each burning one core, at most `cores` minus
    the load generator's share), "loop" (cap = workers, CPU ~0.2 ms per request), "threadpool"
    (cap = 40 per worker, CPU ~0.35 ms per request for the thread hand-off). With `jitter`,
    throughput and latency are each scaled by an independent uniform factor in [1-j, 1+j].
    """
    rng = random.Random(seed)
    s = service_ms / 1000
    out = []
    for n in ns:
        if kind == "io":
            cap, cpu_per_req = math.inf, 0.19e-3
        elif kind == "cpu":
            # Two workers on two cores shared with the load generator reach ~1.5 cores.
            cap, cpu_per_req = min(float(workers), cores - 0.5 if workers >= cores else cores), s
        elif kind == "loop":
            cap, cpu_per_req = float(workers), 0.2e-3
        elif kind == "threadpool":
            cap, cpu_per_req = 40.0 * workers, 0.35e-3
        else:
            raise ValueError(kind)
        rps = min(float(n), cap) / s
        lat = n / rps * 1000
        cpu = min(rps * cpu_per_req, float(workers))
        if jitter:
            rps *= rng.uniform(1 - jitter, 1 + jitter)
            lat *= rng.uniform(1 - jitter, 1 + jitter)
        out.append(level(n, rps, lat, cpu if observed else None))
    return tuple(out)


def check_verdict(v: Verdict) -> None:
    """What every verdict promises, whatever its class."""
    assert v.cls in EndpointClass
    assert 0.0 <= v.confidence <= 1.0
    assert v.summary
    measured = {name for name, _, _ in evidence_rows(v.evidence)}
    if v.cls is not EndpointClass.INCONCLUSIVE:
        assert set(REQUIRED_EVIDENCE) <= measured
    json.dumps(dataclasses.asdict(v.evidence), allow_nan=False)  # JSON-friendly: no NaN or inf


# ---------------------------------------------------------------------------------------
# Each class, one and two workers, clean and noisy


@pytest.mark.parametrize(
    ("levels", "workers", "observed", "expected"),
    [
        pytest.param(ladder("io", 40, 1), 1, True, EndpointClass.IO_BOUND, id="io-1w"),
        pytest.param(ladder("io", 40, 2), 2, True, EndpointClass.IO_BOUND, id="io-2w"),
        pytest.param(ladder("cpu", 20, 1, LADDER[:5]), 1, True, EndpointClass.CPU_BOUND, id="cpu-1w"),
        pytest.param(
            ladder("cpu", 20, 2, LADDER[:5]), 2, True, EndpointClass.CPU_BOUND, id="cpu-2w-shared-cores"
        ),
        pytest.param(ladder("loop", 30, 1, LADDER[:7]), 1, True, EndpointClass.LOOP_BLOCKING, id="loop-1w"),
        pytest.param(ladder("loop", 30, 2, LADDER[:7]), 2, True, EndpointClass.LOOP_BLOCKING, id="loop-2w"),
        pytest.param(
            ladder("threadpool", 40, 1), 1, True, EndpointClass.THREADPOOL_BOUND, id="threadpool-1w"
        ),
        pytest.param(
            ladder("threadpool", 40, 2), 2, True, EndpointClass.THREADPOOL_BOUND, id="threadpool-2w-knee-80"
        ),
        pytest.param(
            ladder("threadpool", 40, 4, (*LADDER, 256)),
            4,
            True,
            EndpointClass.THREADPOOL_BOUND,
            id="threadpool-4w-to-256",
        ),
        pytest.param(
            ladder("cpu", 20, 1, LADDER[:5], observed=False),
            1,
            False,
            EndpointClass.SERIALIZED,
            id="remote-cpu-serialized",
        ),
        pytest.param(
            ladder("loop", 30, 1, LADDER[:6], observed=False),
            None,
            False,
            EndpointClass.SERIALIZED,
            id="remote-loop-unknown-w",
        ),
        pytest.param(
            ladder("io", 10, 1, observed=False), None, False, EndpointClass.IO_BOUND, id="remote-io-unknown-w"
        ),
    ],
)
def test_class(levels: tuple[Level, ...], workers: int | None, observed: bool, expected: str) -> None:
    v = classify(levels, workers, observed)
    check_verdict(v)
    assert v.cls == expected, v.summary
    assert v.confidence >= 0.4, v.summary


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize(
    ("kind", "service_ms", "workers", "ns", "expected"),
    [
        pytest.param("io", 40, 1, LADDER, EndpointClass.IO_BOUND, id="io-1w"),
        pytest.param("io", 40, 2, LADDER, EndpointClass.IO_BOUND, id="io-2w"),
        pytest.param("cpu", 20, 1, LADDER[:5], EndpointClass.CPU_BOUND, id="cpu-1w"),
        pytest.param("cpu", 20, 2, LADDER[:5], EndpointClass.CPU_BOUND, id="cpu-2w"),
        pytest.param("loop", 30, 1, LADDER[:7], EndpointClass.LOOP_BLOCKING, id="loop-1w"),
        pytest.param("loop", 30, 2, LADDER[:7], EndpointClass.LOOP_BLOCKING, id="loop-2w"),
        pytest.param("threadpool", 40, 1, LADDER, EndpointClass.THREADPOOL_BOUND, id="threadpool-1w"),
        pytest.param("threadpool", 40, 2, LADDER, EndpointClass.THREADPOOL_BOUND, id="threadpool-2w"),
    ],
)
def test_noisy_ladders_keep_their_class(
    kind: str, service_ms: float, workers: int, ns: Sequence[int], expected: str, seed: int
) -> None:
    levels = ladder(kind, service_ms, workers, ns, seed=seed, jitter=0.10)
    v = classify(levels, workers, True)
    check_verdict(v)
    assert v.cls == expected, v.summary


def test_noise_lowers_confidence() -> None:
    clean = classify(ladder("threadpool", 40, 2), 2, True)
    noisy = classify(ladder("threadpool", 40, 2, seed=3, jitter=0.3), 2, True)
    assert clean.confidence > noisy.confidence


# ---------------------------------------------------------------------------------------
# The cases the field notes warn about


def test_io_with_late_latency_inflation_from_server_cpu_is_io_bound() -> None:
    # 40 ms sleep route, one worker: p50 43 ms at c=64, then 55-70 ms at c=128 with the server's CPU
    # at one core (~3k req/s x 0.19 ms plus the probe's overhead).
    for p50_128 in (55.0, 62.0, 70.0):
        levels = [lv for lv in ladder("io", 40.5, 1) if lv.concurrency < 64]
        levels.append(level(64, 64 / 0.043, 43.0, 0.35))
        levels.append(level(128, 128 / (p50_128 / 1000), p50_128, 1.0))
        v = classify(levels, 1, True)
        check_verdict(v)
        assert v.cls == EndpointClass.IO_BOUND, v.summary
        assert v.evidence.latency_inflation == pytest.approx(p50_128 / 40.5, rel=1e-3)


def test_threadpool_two_workers_seen_up_to_128() -> None:
    v = classify(ladder("threadpool", 40, 2), 2, True)
    assert v.cls == EndpointClass.THREADPOOL_BOUND
    knee = v.evidence.knee_concurrency
    assert isinstance(knee, int)
    assert 70 <= knee <= 90
    assert v.evidence.plateau_rps == pytest.approx(80 / 0.040, rel=0.05)
    tokens = v.evidence.suggested_thread_tokens
    assert isinstance(tokens, int)
    assert tokens >= 80
    assert "import anyio.to_thread" in v.advice
    assert f"anyio.to_thread.current_default_thread_limiter().total_tokens = {tokens}" in v.advice


def test_flat_ladder_short_of_the_threadpool_knee_is_io_bound_with_a_caveat() -> None:
    short = classify(ladder("io", 40, 4, LADDER[:7]), 4, True)  # stopped at 64; 4 x 40 = 160
    full = classify(ladder("io", 40, 4, (*LADDER, 256)), 4, True)
    assert short.cls == EndpointClass.IO_BOUND
    assert full.cls == EndpointClass.IO_BOUND
    assert "cannot be ruled out" in short.summary
    assert "cannot be ruled out" not in full.summary
    assert short.confidence < full.confidence
    assert any("c>=192" in line for line in short.advice)


def test_unknown_workers_lowers_confidence_and_says_so() -> None:
    known = classify(ladder("io", 10, 1), 1, True)
    unknown = classify(ladder("io", 10, 1), None, True)
    assert known.cls == unknown.cls == EndpointClass.IO_BOUND
    assert unknown.confidence < known.confidence
    assert "unknown" in unknown.summary


def test_serialized_summary_names_both_suspects() -> None:
    v = classify(ladder("loop", 30, 1, LADDER[:6], observed=False), 1, False)
    assert v.cls == EndpointClass.SERIALIZED
    assert "loop-blocking" in v.summary
    assert "cpu-bound" in v.summary


def test_serial_curve_with_cpu_missing_is_serialized_even_when_local() -> None:
    v = classify(ladder("cpu", 20, 1, LADDER[:5], observed=False), 1, True)
    assert v.cls == EndpointClass.SERIALIZED


def test_cpu_evidence() -> None:
    v = classify(ladder("cpu", 20, 2, LADDER[:6]), 2, True)
    assert v.cls == EndpointClass.CPU_BOUND
    cpu = v.evidence.server_cpu_per_busy_worker
    assert isinstance(cpu, float)
    assert cpu > 0.6
    assert v.evidence.service_time_ms == pytest.approx(20.0)
    assert v.evidence.usl_sigma is not None  # six clean levels: the USL is fitted


def test_loop_blocking_advice() -> None:
    v = classify(ladder("loop", 30, 1, LADDER[:7]), 1, True)
    assert v.cls == EndpointClass.LOOP_BLOCKING
    assert any("async driver" in line and "`def`" in line for line in v.advice)
    cpu = v.evidence.server_cpu_per_busy_worker
    assert isinstance(cpu, float)
    assert cpu < 0.1


@pytest.mark.parametrize("workers", [pytest.param(1, id="1-worker"), pytest.param(2, id="2-workers")])
def test_middle_cap_with_low_cpu_is_a_pool_of_that_size(workers: int) -> None:
    # An async route behind a pool of 10 connections per worker: capped at 10 x workers, far from 1 and 40.
    cap = 10 * workers
    levels = tuple(
        level(n, min(n, cap) / 0.02, n / (min(n, cap) / 0.02) * 1000, 0.05)
        for n in (1, 2, 4, 8, 16, 32, 64, 128)
    )
    v = classify(levels, workers, True)
    assert v.cls == EndpointClass.POOL_BOUND
    assert v.evidence.pool_size_per_worker == pytest.approx(10, rel=0.05)
    assert "--db-max-connections" in " ".join(v.advice)


def test_middle_cap_without_server_cpu_is_not_forced_into_a_class() -> None:
    levels = tuple(
        level(n, min(n, 10) / 0.02, n / (min(n, 10) / 0.02) * 1000, None) for n in (1, 2, 4, 8, 16, 32, 64)
    )
    v = classify(levels, 1, False)
    assert v.cls == EndpointClass.INCONCLUSIVE
    assert "~10" in v.summary


def test_a_stalled_level_is_a_stall_never_dropped() -> None:
    ok = [level(n, n / 0.02, 20.0, 0.05) for n in (1, 2, 4, 8, 16, 32)]
    stuck = replace(
        level(64, 0.0, 0.0, 0.01),
        requests=0,
        throughput_rps=0.0,
        latency_ms=None,
        in_flight_at_end=64,
        oldest_in_flight_ms=2400.0,
        stalled=True,
    )
    v = classify((*ok, stuck), 1, True)
    assert v.cls == EndpointClass.STALLED
    assert v.evidence.stalled_at_concurrency == 64
    assert "c=64" in v.summary
    assert "64 requests were in flight" in v.summary
    assert any("pool_size + max_overflow" in a for a in v.advice)


# ---------------------------------------------------------------------------------------
# Inconclusive: what cannot be evidence


@pytest.mark.parametrize(
    ("levels", "reason"),
    [
        pytest.param((), "no levels", id="nothing"),
        pytest.param(ladder("io", 40, 1, (1, 2)), "only 2 of 2", id="too-few-levels"),
        pytest.param(
            tuple(replace(lv, client_saturated=True) for lv in ladder("io", 40, 1)),
            "load generator",
            id="all-client-saturated",
        ),
        pytest.param(
            tuple(
                lv if lv.concurrency < 4 else level(lv.concurrency, 10.0, 900.0, 0.1, errors=40)
                for lv in ladder("io", 40, 1)
            ),
            "errors above 2%",
            id="errors",
        ),
    ],
)
def test_inconclusive(levels: tuple[Level, ...], reason: str) -> None:
    v = classify(levels, 1, True)
    check_verdict(v)
    assert v.cls == EndpointClass.INCONCLUSIVE
    assert reason in v.summary
    assert v.advice


def test_errors_advice_names_the_kinds() -> None:
    levels = tuple(level(n, 10.0, 900.0, 0.1, errors=40) for n in (1, 2, 4, 8))
    v = classify(levels, 1, True)
    assert v.cls == EndpointClass.INCONCLUSIVE
    assert any("5xx: 160" in line for line in v.advice)


def test_excluded_levels_are_never_evidence() -> None:
    # A cpu-bound ladder whose top levels the generator could not drive: those top levels, made up
    # to look io-bound, must not turn the verdict.
    levels = list(ladder("cpu", 20, 1, LADDER[:5]))
    levels += [replace(lv, client_saturated=True) for lv in ladder("io", 20, 1, (32, 64))]
    levels.append(level(128, 6400.0, 20.0, 0.1, errors=2000))
    v = classify(levels, 1, True)
    assert v.cls == EndpointClass.CPU_BOUND
    assert v.evidence.clean_levels == 5
    assert v.evidence.excluded_client_saturated == 2
    assert v.evidence.excluded_errors == 1
    assert [lv.concurrency for lv in clean_levels(levels)] == [1, 2, 4, 8, 16]
    assert exclusion_reason(levels[-1]) is not None
    assert exclusion_reason(levels[0]) is None


def test_levels_out_of_order_are_sorted() -> None:
    levels = ladder("threadpool", 40, 1)
    assert classify(levels[::-1], 1, True) == classify(levels, 1, True)


# ---------------------------------------------------------------------------------------
# Fits


@pytest.mark.parametrize(
    ("sigma", "kappa", "lam"),
    [
        pytest.param(0.05, 0.0002, 100.0, id="retrograde"),
        pytest.param(0.2, 0.0, 50.0, id="amdahl"),
        pytest.param(0.0, 0.001, 10.0, id="coherency-only"),
        pytest.param(0.02, 0.00005, 1000.0, id="mild"),
    ],
)
def test_usl_fit_recovers_parameters(sigma: float, kappa: float, lam: float) -> None:
    points = [(n, lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))) for n in LADDER]
    fit = usl_fit(points)
    assert fit is not None
    s, k, la = fit
    assert s == pytest.approx(sigma, abs=1e-3)
    assert k == pytest.approx(kappa, abs=2e-5)
    assert la == pytest.approx(lam, rel=1e-3)


def test_usl_fit_with_noise_stays_close() -> None:
    rng = random.Random(11)
    sigma, kappa, lam = 0.05, 0.0002, 100.0
    points = [
        (n, lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1)) * rng.uniform(0.97, 1.03)) for n in LADDER
    ]
    fit = usl_fit(points)
    assert fit is not None
    peak = usl_peak(fit[0], fit[1])
    assert peak is not None
    assert peak == pytest.approx(math.sqrt((1 - sigma) / kappa), rel=0.25)


def test_usl_fit_needs_six_points() -> None:
    assert usl_fit([(n, float(n)) for n in LADDER[:5]]) is None
    assert usl_fit([(n, 0.0 if n == 4 else float(n)) for n in LADDER]) is None
    assert usl_peak(0.1, 0.0) is None


def test_knee_fit_finds_the_cap() -> None:
    fit = knee_fit([(n, min(n, 40) * 25.0) for n in LADDER])
    assert fit.bent
    assert fit.knee == pytest.approx(40, rel=0.02)
    assert fit.per_client_rps == pytest.approx(25.0, rel=0.01)
    line = knee_fit([(n, n * 25.0) for n in LADDER])
    assert not line.bent
    assert line.rms == pytest.approx(0.0, abs=1e-9)


def test_worker_cpu_saturating_below_the_thread_limit_is_cpu_bound() -> None:
    # 2 ms of CPU inside a 20 ms await: one worker saturates its core at ~10 requests in flight.
    levels = tuple(
        level(n, min(n, 10) / 0.02, n / (min(n, 10) / 0.02) * 1000, min(n, 10) / 10) for n in LADDER
    )
    v = classify(levels, 1, True)
    assert v.cls == EndpointClass.CPU_BOUND, v.summary
    assert "2.0 ms of CPU" in v.summary


def test_threadpool_with_saturated_worker_cpu_warns_that_threads_alone_may_not_help() -> None:
    levels = tuple(
        replace(lv, server_cpu_cores=1.0) if lv.concurrency >= 64 else lv
        for lv in ladder("threadpool", 40, 1)
    )
    plain = classify(ladder("threadpool", 40, 1), 1, True)
    v = classify(levels, 1, True)
    assert v.cls == EndpointClass.THREADPOOL_BOUND
    assert any("add workers" in line for line in v.advice)
    assert v.confidence < plain.confidence
