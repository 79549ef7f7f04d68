"""One decider per group of gunicorn settings, each returning its values with their reasons."""

from __future__ import annotations

import math
import re
from typing import Final

from fastapi_tune.core.errors import UsageError
from fastapi_tune.core.rules import THREAD_TOKENS_PER_WORKER, suggested_thread_tokens
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.report import Endpoint, EndpointClass, ProbeReport
from fastapi_tune.plan.evidence import (
    classes,
    cpus,
    max_rss,
    paths,
    probe_workers,
    set_aside,
    size,
    slowest_request,
)
from fastapi_tune.plan.model import (
    ASGI_MIN_GUNICORN,
    ASGI_WORKER,
    CONTROL_SOCKET_MIN_GUNICORN,
    DEPRECATED_WORKER,
    LB_KEEPALIVE_MARGIN_S,
    MIN_PLAN_CONFIDENCE,
    UVICORN_WORKER,
    Advice,
    Choices,
    Decided,
    ReplicaSizing,
    Setting,
)
from fastapi_tune.plan.profiles import Profile
from fastapi_tune.plan.target import runs_in_container
from fastapi_tune.plan.workers import connection_cap, replicas_for_rate, worker_rss_and_reason


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def _worker_class(profile: Profile, choices: Choices) -> tuple[str, str, list[str]]:
    """(gunicorn worker class, why, unknowns)."""
    asked = choices.worker_class
    if asked in (DEPRECATED_WORKER, "uvicorn"):
        raise UsageError(
            f"worker class {asked!r}: uvicorn.workers.UvicornWorker is deprecated since uvicorn 0.30; "
            f"use 'uvicorn-worker' ({UVICORN_WORKER}) or 'asgi'"
        )
    if asked not in (None, "uvicorn-worker", UVICORN_WORKER, ASGI_WORKER):
        raise UsageError(f"worker class {asked!r}: expected 'uvicorn-worker' or 'asgi'")
    want_asgi = asked == ASGI_WORKER or (asked is None and profile.worker_class == "asgi")
    source = "you asked for it" if asked is not None else f"profile {profile.name} prefers it"
    if not want_asgi:
        return (
            UVICORN_WORKER,
            f"uvicorn under gunicorn's process management ({source}); the uvicorn-worker package "
            "replaces the deprecated uvicorn.workers.UvicornWorker.",
            [],
        )
    version = choices.gunicorn_version
    if version is not None and _version_tuple(version) >= ASGI_MIN_GUNICORN:
        return ASGI_WORKER, f"gunicorn {version}'s native ASGI worker ({source}; needs gunicorn >= 24).", []
    if asked == ASGI_WORKER:
        raise UsageError(
            f"worker class 'asgi' needs gunicorn >= 24 (installed: {version or 'unknown'}); "
            "upgrade gunicorn or use 'uvicorn-worker'"
        )
    return (
        UVICORN_WORKER,
        f"profile {profile.name} prefers gunicorn's native 'asgi' worker, but it needs gunicorn >= 24 "
        f"(installed: {version or 'unknown'}), so uvicorn-worker.",
        [] if version else ["gunicorn version: unknown, so the native 'asgi' worker was not chosen"],
    )


def _limiter_tokens(report: ProbeReport, eps: list[Endpoint], workers: int) -> tuple[int, str]:
    """Thread tokens per worker for threadpool-bound routes, and the reasoning."""
    peak = max((lv.concurrency for e in eps for lv in e.levels), default=THREAD_TOKENS_PER_WORKER)
    # The probe drove `peak` concurrent requests; each of this plan's workers should hold its share.
    tokens = suggested_thread_tokens(peak, workers)
    why = (
        f"{paths(eps)} plateaued at AnyIO's default of {THREAD_TOKENS_PER_WORKER} threads per worker "
        f"(probe server: {probe_workers(report)} worker(s)); the probe drove {peak} concurrent requests, "
        f"so {tokens.why} tokens per worker. More threads than your database pool has connections only "
        "move the queue there."
    )
    return tokens.tokens, why


def control_socket(profile: Profile, choices: Choices) -> Decided:
    """gunicorn's control socket off in containers, where it fails and nobody can reach it."""
    version = choices.gunicorn_version
    if not runs_in_container(profile) or (
        version is not None and _version_tuple(version) < CONTROL_SOCKET_MIN_GUNICORN
    ):
        return Decided()
    why = (
        "off: gunicorn >= 25.1 opens a control socket for gunicornc in $XDG_RUNTIME_DIR or ~/.gunicorn at"
        " every start; in a container HOME is often read-only (it logs an error each time) and nothing"
        " outside the container can reach the socket anyway."
    )
    if version is None:
        why += " gunicorn's version is unknown; versions before 25.1 ignore this name."
    return Decided(settings=(Setting("control_socket_disable", True, why),))


def plan_inputs(
    host: HostFacts, report: ProbeReport | None, profile: Profile
) -> tuple[tuple[str, ...], Decided]:
    """What the plan is computed from, and what that leaves unknown."""
    inputs = (
        f"host: {cpus(float(host.cpu.effective))} effective ({host.cpu.source}; "
        f"{host.cpu.logical} logical), "
        f"{size(host.memory.effective_bytes)} memory ({host.memory.source})",
        f"profile: {profile.name} ({profile.source})",
    )
    if report is None:
        return (*inputs, "probe report: none"), Decided(
            unknowns=(
                "route classes: no probe report, so the worker count follows the CPU rule (one "
                "per effective CPU)",
                f"per-worker memory: assumed {profile.assumed_worker_rss_mib} MiB (profile), not measured",
                "slowest request: not measured, so timeouts are the profile's floor",
                "thread-pool need: not measured; AnyIO's default of 40 threads per worker applies",
            )
        )
    by_cls = classes(report)
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_cls.items()))
    unknowns: list[str] = []
    measured_eff = report.host.cpu.effective if report.host is not None else None
    if measured_eff is None:
        unknowns.append(
            f"the load came from {report.source}: the server's host was not observed, so this plan is for "
            f"{cpus(float(host.cpu.effective))} (pass --cpus/--memory for the target's)"
        )
    elif measured_eff != host.cpu.effective:
        unknowns.append(
            f"the probe ran on a host with {cpus(float(measured_eff))}; this plan is for "
            f"{cpus(float(host.cpu.effective))}: per-worker figures carry over, totals may not"
        )
    if max_rss(report) is None:
        unknowns.append(
            "per-worker memory: not measured (server not local?), assumed "
            f"{profile.assumed_worker_rss_mib} MiB"
        )
    if report.interrupted:
        unknowns.append("the probe was interrupted: some routes have fewer levels than planned")
    for e in set_aside(report):
        assert e.verdict is not None
        unknowns.append(
            f"{e.route}: set aside, {e.verdict.cls} at {e.verdict.confidence:.0%} confidence is below the"
            f" {MIN_PLAN_CONFIDENCE:.0%} a worker count needs; probe again on a quieter host or "
            "with longer levels"
        )
    inconclusive = [e for e in report.endpoints if e.verdict and e.verdict.cls is EndpointClass.INCONCLUSIVE]
    if inconclusive:
        unknowns.append(f"inconclusive routes ({paths(inconclusive)}) did not inform the worker count")
    line = f"probe report: {report.target}, {len(report.endpoints)} route(s) ({counts or 'unclassified'})"
    return (*inputs, line), Decided(unknowns=tuple(unknowns))


def app_and_bind(profile: Profile, choices: Choices) -> Decided:
    bind = choices.bind or profile.bind
    if choices.bind:
        why = "you chose it."
    elif bind.startswith("127."):
        why = (
            "loopback: a reverse proxy on the same host forwards to it, and the server stays off the network."
        )
    else:
        why = (
            "all interfaces: port publishing and Services forward to the container's interface, not its "
            "loopback."
        )
    return Decided(
        settings=(
            Setting(
                "wsgi_app",
                choices.app,
                "the application gunicorn loads (so `gunicorn -c FILE` needs no argument).",
            ),
            Setting("bind", bind, why),
        )
    )


def worker_class_setting(profile: Profile, choices: Choices) -> Decided:
    wc, why, unknown = _worker_class(profile, choices)
    return Decided(settings=(Setting("worker_class", wc, why),), unknowns=tuple(unknown))


_HEARTBEAT: Final = (
    "The arbiter kills a worker whose heartbeat stops that long: for async workers, a blocked event "
    "loop or a slow start-up (imports, model loading), not a slow awaited request."
)


def decide_timeouts(report: ProbeReport | None, profile: Profile) -> Decided:
    """timeout from the slowest request (x the profile's factor); graceful_timeout long enough for it."""
    slowest = slowest_request(report)
    tp = profile.timeout
    if slowest is None:
        timeout = min(max(30, tp.min), tp.max)
        t_why = (
            "no latency measured: gunicorn's default 30 s within the profile's "
            f"{tp.min}..{tp.max}. {_HEARTBEAT}"
        )
        graceful = profile.graceful_timeout
        g_why = f"profile {profile.name}; no latency measured to check it against."
    else:
        ms, where = slowest
        raw = math.ceil(ms / 1000 * tp.factor)
        timeout = min(max(raw, tp.min), tp.max)
        t_why = (
            f"slowest measured request {ms:.0f} ms ({where}) x {tp.factor:g} = "
            f"{ms / 1000 * tp.factor:.1f} s, "
            f"rounded up to {raw} s, clamped to {tp.min}..{tp.max}. {_HEARTBEAT}"
        )
        need = math.ceil(ms / 1000) + 1
        graceful = max(profile.graceful_timeout, need)
        g_why = (
            f"profile {profile.name} says {profile.graceful_timeout} s; the slowest request ({ms:.0f} ms) "
            f"needs {need} s to finish on restart."
        )
    advice: tuple[Advice, ...] = ()
    if profile.stop_grace_period is not None:
        g_why += f" It must end before the orchestrator's SIGKILL at {profile.stop_grace_period} s."
        if graceful >= profile.stop_grace_period:
            advice = (
                Advice(
                    f"graceful_timeout is {graceful} s but the orchestrator kills at "
                    f"{profile.stop_grace_period} s: "
                    "raise its grace period (stop_grace_period / terminationGracePeriodSeconds) to "
                    f"{graceful + 5} s."
                ),
            )
    return Decided(
        settings=(Setting("timeout", timeout, t_why), Setting("graceful_timeout", graceful, g_why)),
        advice=advice,
    )


def keepalive(profile: Profile) -> Decided:
    if not (profile.behind_load_balancer and profile.lb_idle_timeout is not None):
        why = (
            f"profile {profile.name}: idle connections held {profile.keepalive} s (gunicorn's default is 2)."
        )
        return Decided(settings=(Setting("keepalive", profile.keepalive, why),))
    keepalive = max(profile.keepalive, profile.lb_idle_timeout + LB_KEEPALIVE_MARGIN_S)
    why = (
        f"behind a load balancer with a {profile.lb_idle_timeout} s idle timeout: keep connections "
        f"{LB_KEEPALIVE_MARGIN_S} s longer so the balancer closes first (else it may reuse a "
        "closing socket: 502)."
    )
    proxy = Advice(
        "Behind a proxy, set forwarded_allow_ips to the balancer's addresses (or '*' when only it can "
        "reach the pod) so request.client and the scheme are the caller's."
    )
    return Decided(settings=(Setting("keepalive", keepalive, why),), advice=(proxy,))


def recycling(profile: Profile) -> Decided:
    if profile.max_requests:
        mr_why = (
            f"recycle each worker after ~{profile.max_requests} requests to bound slow memory leaks "
            f"(profile {profile.name})."
        )
        j_why = (
            f"spread recycling by up to {profile.max_requests_jitter} requests so workers "
            "never restart together."
        )
    else:
        mr_why = f"no recycling (profile {profile.name}): a lone worker restarting stalls the instance."
        j_why = "no recycling, so no jitter."
    return Decided(
        settings=(
            Setting("max_requests", profile.max_requests, mr_why),
            Setting("max_requests_jitter", profile.max_requests_jitter, j_why),
        )
    )


def server_files(host: HostFacts, profile: Profile) -> Decided:
    """backlog, the heartbeat directory and the access log."""
    settings = [
        Setting(
            "backlog",
            profile.backlog,
            f"connections queued while all workers are busy (profile {profile.name}); the kernel caps it at "
            "net.core.somaxconn.",
        )
    ]
    unknowns: tuple[str, ...] = ()
    if host.dev_shm:
        settings.append(
            Setting(
                "worker_tmp_dir",
                "/dev/shm",
                "/dev/shm is a writable tmpfs here: heartbeat writes never wait on a disk or an overlay "
                "filesystem (a stalled write looks like a dead worker).",
            )
        )
    else:
        unknowns = ("no writable /dev/shm on this host: worker heartbeats go to the default temp dir",)
    if profile.access_log is None:
        al_why = f"off (profile {profile.name}): the reverse proxy already logs each request."
    elif profile.access_log == "-":
        al_why = f"stdout (profile {profile.name}): the container runtime collects it."
    else:
        al_why = f"profile {profile.name}."
    settings.append(Setting("accesslog", profile.access_log, al_why))
    return Decided(settings=tuple(settings), unknowns=unknowns)


def preload(workers: int, profile: Profile, choices: Choices) -> Decided:
    if workers < 2:
        preload, why = False, "one worker: nothing to share copy-on-write."
    elif profile.preload == "never":
        preload, why = False, f"profile {profile.name} never preloads."
    elif not choices.preload:
        preload = False
        why = (
            f"off: preloading imports the app once in the master and shares it with {workers} workers "
            "copy-on-write, but connections or threads opened at import time break after fork; "
            "enable it with --preload once you have checked that."
        )
    else:
        preload = True
        why = (
            f"you agreed: {workers} workers share the imported app copy-on-write instead of each loading "
            "it; code changes now need a full restart, not a HUP."
        )
    return Decided(settings=(Setting("preload_app", preload, why),))


def route_advice(by_cls: dict[EndpointClass, list[Endpoint]]) -> Decided:
    """What the serialising routes need fixed in the code (more workers only hide it)."""
    advice: list[Advice] = []
    for cls, verb in (
        (EndpointClass.STALLED, "stalls under load"),
        (EndpointClass.LOOP_BLOCKING, "blocks the event loop"),
        (EndpointClass.SERIALIZED, "serialises requests"),
    ):
        for e in by_cls.get(cls, []):
            assert e.verdict is not None
            text = f"{e.route} {verb}: {e.verdict.summary}"
            if cls == EndpointClass.LOOP_BLOCKING:
                text += " Fix the route (make it `def`, or await an async client); more workers only hide it."
            advice.append(Advice(" ".join([text, *e.verdict.advice])))
    return Decided(advice=tuple(advice))


def uvicorn_worker_note(worker_class: str, graceful: int) -> Decided:
    if worker_class != UVICORN_WORKER:
        return Decided()
    return Decided(
        advice=(
            Advice(
                "uvicorn-worker does not pass worker_connections (-> limit_concurrency) or graceful_timeout "
                "(-> timeout_graceful_shutdown) to uvicorn; subclass it to set them, and use "
                "-k myapp.workers.Worker:",
                (
                    "from uvicorn_worker import UvicornWorker",
                    "class Worker(UvicornWorker):",
                    "    CONFIG_KWARGS = "
                    f"{{**UvicornWorker.CONFIG_KWARGS, 'timeout_graceful_shutdown': {graceful}}}",
                    "    # add 'limit_concurrency': N to answer 503 at once beyond N connections "
                    "instead of queueing",
                ),
                only_for="gunicorn",
            ),
        )
    )


def replica_plan(
    report: ProbeReport | None, profile: Profile, choices: Choices, workers: int
) -> tuple[ReplicaSizing | None, Decided]:
    if choices.target_rps is None:
        return None, Decided()
    if profile.workers.fixed is None:
        if choices.objective is not None:  # the target sized the workers (mix_workers)
            return None, Decided()
        return None, Decided(
            unknowns=(
                f"target {choices.target_rps:g} req/s: replica sizing applies to profiles with a "
                "fixed worker "
                "count per instance (e.g. kubernetes)",
            )
        )
    rss, _ = worker_rss_and_reason(report, profile)
    replicas, unknown = replicas_for_rate(report, choices.target_rps, workers, rss, profile)
    db = connection_cap(choices)
    if replicas is not None and db is not None:
        fit = db[0] // max(workers, 1)
        if fit < replicas.replicas:
            unknown = [
                *unknown,
                f"the target needs {replicas.replicas} replicas but the database's connections allow {fit} "
                f"({db[1]} worker pools, {workers} per replica): raise max_connections, shrink "
                "each pool, or put "
                "a pooler (PgBouncer) in front of the database",
            ]
    advice: tuple[Advice, ...] = ()
    if replicas is not None:
        advice = (
            Advice(
                "Kubernetes: set no CPU limit below 1 core: CFS throttling stalls the worker's event "
                "loop, heartbeats included, for the rest of each 100 ms period."
            ),
        )
    return replicas, Decided(advice=advice, unknowns=tuple(unknown))


def decide_limiter(
    report: ProbeReport | None, by_cls: dict[EndpointClass, list[Endpoint]], workers: int
) -> tuple[int | None, Decided]:
    eps = by_cls.get(EndpointClass.THREADPOOL_BOUND)
    if report is None or not eps:
        return None, Decided()
    tokens, why = _limiter_tokens(report, eps, workers)
    advice = Advice(
        f"Raise AnyIO's thread limiter to {tokens} per worker, in the app's lifespan: {why}",
        (
            "import anyio.to_thread",
            f"anyio.to_thread.current_default_thread_limiter().total_tokens = {tokens}",
        ),
    )
    return tokens, Decided(advice=(advice,))


def connections(by_cls: dict[EndpointClass, list[Endpoint]], choices: Choices, workers: int) -> Decided:
    """The database connection budget: stated when known, asked for when pool-bound routes need it."""
    db = connection_cap(choices)
    pooled = by_cls.get(EndpointClass.POOL_BOUND, [])
    if db is not None:
        assert choices.db_pool_size is not None
        used = workers * choices.db_pool_size
        return Decided(
            advice=(
                Advice(
                    f"Database connections: {workers} worker(s) x {choices.db_pool_size} = {used} "
                    "per instance; "
                    f"{db[1]} workers fit in all. Every replica and every other client counts "
                    "against the same "
                    "max_connections."
                ),
            )
        )
    if not pooled:
        return Decided()
    sizes = ", ".join(
        f"{e.route} ~{e.verdict.evidence.pool_size_per_worker:g}"
        for e in pooled
        if e.verdict and e.verdict.evidence.pool_size_per_worker is not None
    )
    return Decided(
        unknowns=(
            f"database connections: pool-bound routes ({sizes} per worker) open a pool per worker; check "
            "workers x pool size x replicas <= max_connections - reserved slots, or pass "
            "--db-max-connections "
            "N --db-pool-size M to cap the workers",
        )
    )
