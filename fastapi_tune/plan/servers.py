"""One plan, three servers: gunicorn, uvicorn's own process manager and Granian, each value with its reason.

Pure: the Plan (workers, timeouts, keep-alive, recycling, backlog ... decided once in plan.py) and the
evidence only Granian's and uvicorn's caps need (concurrency the probe saw served or collapse, worker
RSS) go in; a ServerPlan per server comes out. A plan value a server has no flag for is said in
`not_flags` with what the server does instead, never dropped silently. The flags are the installed
versions' (checked against `uvicorn --help` 0.55 and `granian --help` 2.8.9; older releases from their
changelogs and git history). render_servers.py turns a ServerPlan into a command, a script or args.
"""

from __future__ import annotations

import math
from typing import Final

from fastapi_tune.plan.model import Advice, Plan
from fastapi_tune.plan.server_evidence import NO_EVIDENCE, ServerEvidence, concurrency_limit
from fastapi_tune.plan.server_model import (
    GRANIAN_FLAG_SINCE,
    UVICORN_FLAG_SINCE,
    NotFlag,
    Server,
    ServerOption,
    ServerPlan,
    advice_for,
    bind_options,
    dotted,
    gated,
    install_state,
    uvicorn_accepts,
)

# Before uvicorn 0.37 its manager pinged workers with a fixed timeout (FIELD-NOTES).
UVICORN_FIXED_HEALTHCHECK_S: Final = 5
# Granian refuses --workers-lifetime below 60 s; its HTTP/1 header read timeout takes 1..60000 ms and
# its backlog at least 128 (granian/server/common.py, --help).
GRANIAN_MIN_LIFETIME_S: Final = 60
GRANIAN_MAX_HEADER_TIMEOUT_MS: Final = 60_000
GRANIAN_MIN_BACKLOG: Final = 128
# Granian's resource monitor samples RSS every 30 s (its default); two samples in a row over the cap
# (a minute) before a respawn, so one large request's peak does not restart a worker.
GRANIAN_RSS_SAMPLES: Final = 2
GRANIAN_RSS_INTERVAL_S: Final = 30
_MIB: Final = 1 << 20

# What gunicorn calls each plan setting on its command line.
_GUNICORN_FLAGS: Final = {
    "worker_class": "--worker-class",
    "workers": "--workers",
    "bind": "--bind",
    "timeout": "--timeout",
    "graceful_timeout": "--graceful-timeout",
    "keepalive": "--keep-alive",
    "max_requests": "--max-requests",
    "max_requests_jitter": "--max-requests-jitter",
    "backlog": "--backlog",
    "worker_tmp_dir": "--worker-tmp-dir",
    "accesslog": "--access-logfile",
}
# Settings that are a flag without a value, given when the setting is true.
_GUNICORN_SWITCHES: Final = {"preload_app": "--preload", "control_socket_disable": "--no-control-socket"}
_RECYCLING: Final = ("max_requests", "max_requests_jitter")


# ---------------------------------------------------------------------------------------
# gunicorn: the Plan's own settings, as flags


def gunicorn_plan(plan: Plan) -> ServerPlan:
    """gunicorn with every plan setting that has a flag (gunicorn.conf.py holds the same values)."""
    options: list[ServerOption] = []
    defaults: list[NotFlag] = []
    for s in plan.settings:
        if s.name in _GUNICORN_SWITCHES:
            if s.value:
                options.append(ServerOption(_GUNICORN_SWITCHES[s.name], None, s.why, s.name))
            else:
                defaults.append(NotFlag(s.name, f"off, gunicorn's default: {s.why}"))
        elif s.name in _GUNICORN_FLAGS and s.value is None:
            defaults.append(NotFlag(s.name, f"none, gunicorn's default: {s.why}"))
        elif s.name in _GUNICORN_FLAGS:
            recycles = s.name in _RECYCLING and bool(s.value)
            options.append(ServerOption(_GUNICORN_FLAGS[s.name], str(s.value), s.why, s.name, recycles))
    stack = plan.stack
    installed, notes = install_state(Server.GUNICORN, stack)
    pins: list[str] = []
    if stack is not None:
        wanted = [("gunicorn", stack.gunicorn), ("uvicorn", stack.uvicorn)]
        if str(plan.setting("worker_class").value).startswith("uvicorn_worker"):
            wanted.append(("uvicorn-worker", stack.uvicorn_worker))
        pins = [f"{name}=={version}" for name, version in wanted if version]
    return ServerPlan(
        server=Server.GUNICORN,
        app=plan.app,
        version=stack.gunicorn if stack else None,
        installed=installed,
        workers=plan.workers,
        options=tuple(options),
        not_flags=tuple(defaults),
        notes=notes,
        advice=advice_for(plan, Server.GUNICORN),
        pins=tuple(pins),
    )


# ---------------------------------------------------------------------------------------
# uvicorn's own process manager


def _uvicorn_timeouts(plan: Plan, version: str | None) -> tuple[list[ServerOption], list[NotFlag]]:
    """Graceful shutdown and the manager's health check (gunicorn's worker timeout, nearest kin)."""
    graceful = plan.setting("graceful_timeout")
    options = [
        ServerOption("--timeout-graceful-shutdown", str(graceful.value), graceful.why, "graceful_timeout")
    ]
    timeout = plan.setting("timeout")
    said: list[NotFlag] = []
    if plan.workers < 2:
        said.append(
            NotFlag(
                "timeout",
                "one process: uvicorn runs no manager (no health check, no restart of a dead worker);"
                " the orchestrator's liveness probe or the service manager restarts it",
            )
        )
    elif uvicorn_accepts("--timeout-worker-healthcheck", version):
        why = (
            f"the manager pings each worker and replaces one silent for {timeout.value} s (the plan's worker"
            " timeout). A thread in the worker answers the ping, so it catches a hung process (GIL held in"
            " C code, a deadlock), not a busy event loop as gunicorn's heartbeat does."
        )
        options.append(ServerOption("--timeout-worker-healthcheck", str(timeout.value), why, "timeout"))
    else:
        since = dotted(UVICORN_FLAG_SINCE["--timeout-worker-healthcheck"])
        said.append(
            NotFlag(
                "timeout",
                f"uvicorn {version} pings workers with a fixed {UVICORN_FIXED_HEALTHCHECK_S} s timeout"
                f" (settable from {since}): the plan's {timeout.value} s cannot be set",
                "--timeout-worker-healthcheck",
            )
        )
    return options, said


def _uvicorn_recycling(plan: Plan) -> tuple[list[ServerOption], list[NotFlag]]:
    limit, jitter = plan.setting("max_requests"), plan.setting("max_requests_jitter")
    if not limit.value:
        said = NotFlag("max_requests", "no recycling, uvicorn's default (no --limit-max-requests)")
        return [], [said, NotFlag("max_requests_jitter", "no recycling, so no jitter")]
    return [
        ServerOption("--limit-max-requests", str(limit.value), limit.why, "max_requests", recycles=True),
        ServerOption(
            "--limit-max-requests-jitter", str(jitter.value), jitter.why, "max_requests_jitter", recycles=True
        ),
    ], []


def _uvicorn_access_log(plan: Plan) -> tuple[list[ServerOption], list[NotFlag]]:
    log = plan.setting("accesslog")
    if log.value is None:
        return [ServerOption("--no-access-log", None, log.why, "accesslog")], []
    if log.value == "-":
        return [ServerOption("--access-log", None, log.why, "accesslog")], []
    text = f"uvicorn logs requests to stderr; writing them to {log.value} needs --log-config"
    return [ServerOption("--access-log", None, log.why, "accesslog")], [NotFlag("accesslog", text)]


def _uvicorn_limit(plan: Plan, ev: ServerEvidence) -> tuple[list[ServerOption], list[str]]:
    if plan.admission is not None:
        # The overload step's cap is already in front of the app (uvicorn serves the admission module),
        # and it queues; --limit-concurrency at the same level would refuse at once instead.
        return [], [
            f"--limit-concurrency: not set; {plan.admission.module}.py already caps each worker at"
            f" {plan.admission.limit} in flight (the app fell over at {plan.admission.collapse_per_worker:g})"
            " and queues the rest, where uvicorn's limit would answer 503 at once and count idle"
            " keep-alive connections too (measured: 160 -> 106 req/s at c=64 with 10k 503s)"
        ]
    cap, why = concurrency_limit(ev.concurrency)
    if cap is None:
        note = (
            f"--limit-concurrency: {why} (uvicorn counts open connections as well as requests and answers 503"
            " beyond it, idle keep-alive connections included)"
        )
        return [], [note]
    why += (
        f": {cap} + 1, since uvicorn counts the connection asking among the open ones (measured: with 2,"
        " a second keep-alive connection gets 503). Beyond it the worker answers 503 at once instead of"
        " letting requests pile into the collapse; idle keep-alive connections count too, so keep a"
        " proxy's pool per worker below it"
    )
    return [ServerOption("--limit-concurrency", str(cap + 1), why)], []


_UVICORN_NOT_FLAGS: Final = {
    "worker_class": "uvicorn is the worker: no worker class",
    "worker_tmp_dir": "uvicorn's manager pings workers over a pipe: no heartbeat file to place",
    "control_socket_disable": "uvicorn has no control socket (SIGTTIN / SIGTTOU add or remove a worker)",
}


def uvicorn_plan(plan: Plan, ev: ServerEvidence = NO_EVIDENCE) -> ServerPlan:
    """uvicorn's own manager (`uvicorn --workers N`) with the plan's values, in the app's uvicorn's flags."""
    stack = plan.stack
    version = stack.uvicorn if stack else None
    workers = plan.setting("workers")
    options = [*bind_options(plan), ServerOption("--workers", str(plan.workers), workers.why, "workers")]
    keepalive, backlog = plan.setting("keepalive"), plan.setting("backlog")
    options.append(ServerOption("--timeout-keep-alive", str(keepalive.value), keepalive.why, "keepalive"))
    options.append(ServerOption("--backlog", str(backlog.value), backlog.why, "backlog"))
    said: list[NotFlag] = []
    notes: list[str] = []
    for part in (_uvicorn_timeouts(plan, version), _uvicorn_recycling(plan), _uvicorn_access_log(plan)):
        options += part[0]
        said += part[1]
    limit, limit_notes = _uvicorn_limit(plan, ev)
    options += limit
    notes += limit_notes
    kept, dropped = gated(options, version, UVICORN_FLAG_SINCE, Server.UVICORN)
    present = {s.name for s in plan.settings}
    said += [NotFlag(name, text) for name, text in _UVICORN_NOT_FLAGS.items() if name in present]
    preload = plan.setting("preload_app").value if "preload_app" in present else False
    said.append(
        NotFlag(
            "preload_app",
            "uvicorn has no preload: it spawns each worker, which imports the app itself"
            + (" (the plan's preload saving is lost)" if preload else ""),
        )
    )
    installed, install = install_state(Server.UVICORN, stack)
    return ServerPlan(
        server=Server.UVICORN,
        app=plan.app,
        version=version,
        installed=installed,
        workers=plan.workers,
        options=kept,
        not_flags=(*dropped, *said),
        notes=(*install, *notes),
        advice=advice_for(plan, Server.UVICORN),
        pins=(f"uvicorn=={version}",) if version else (),
    )


# ---------------------------------------------------------------------------------------
# Granian


def _granian_backpressure(plan: Plan, ev: ServerEvidence) -> ServerOption:
    """Connections each worker takes at once: the served level below a collapse, else Granian's default."""
    cap, why = concurrency_limit(ev.concurrency)
    held = "each open connection holds a place while it is open, keep-alive ones too"
    if plan.admission is not None:
        # The overload step's collapse point is the stronger evidence: the ladder may never reach it.
        cap = plan.admission.limit
        why = (
            f"the overload step saw the app fall over at {plan.admission.collapse_per_worker:g} in flight per"
            f" worker; the admission cap is {cap} ({plan.admission.module}.py, which Granian serves)"
        )
    if cap is not None:
        return ServerOption(
            "--backpressure",
            str(cap),
            f"{why}: Granian accepts no more connections per worker than that, so requests past it wait in"
            f" the kernel's backlog instead of entering the collapse ({held}: keep a proxy's pool of idle"
            " connections per worker below it, or it starves the rest).",
        )
    backlog = max(GRANIAN_MIN_BACKLOG, int(str(plan.setting("backlog").value)))
    default = max(1, backlog // plan.workers)
    served = ev.concurrency.served_per_worker or 0
    value = max(default, served)
    more = f", raised to the {served} per worker the probe served" if served > default else ""
    return ServerOption(
        "--backpressure",
        str(value),
        f"{why}: nothing calls for a cap below Granian's own default, backlog / workers = {backlog} /"
        f" {plan.workers} = {default}{more}. Each worker listens on its own SO_REUSEPORT socket, so a"
        " connection waits for the worker the kernel gave it either way; a lower cap would only starve"
        f" clients that hold more keep-alive connections per worker ({held}).",
    )


def _granian_memory(plan: Plan, ev: ServerEvidence) -> tuple[list[ServerOption], list[str]]:
    """--workers-max-rss from the measured worker RSS and the profile's headroom."""
    if ev.worker_rss_bytes is None:
        return [], [
            "--workers-max-rss: not set: no worker RSS was measured (probe a server on this machine); a cap"
            " from an assumed size could respawn a healthy worker in a loop"
        ]
    rss = ev.worker_rss_bytes / _MIB
    keep = 1 - ev.memory_headroom
    limit = math.ceil(rss / keep)
    share = math.floor(ev.memory_bytes / _MIB * keep / plan.workers)
    why = (
        f"largest measured worker RSS {rss:.0f} MiB / (1 - {ev.memory_headroom:g}, the profile's headroom)"
        f" = {limit} MiB"
    )
    if share < limit:
        memory = ev.memory_bytes / _MIB
        why += (
            f", capped at the instance's share per worker: {memory:.0f} MiB x {keep:g} / {plan.workers}"
            f" = {share} MiB"
        )
        limit = max(share, math.ceil(rss))
    why += (
        ": a worker that grows past it (a leak, a cache without bound) is replaced gracefully, a new one"
        " started before the old one stops, long before the kernel's OOM killer takes every worker at once."
    )
    samples = (
        f"{GRANIAN_RSS_SAMPLES} samples in a row ({GRANIAN_RSS_INTERVAL_S} s apart, Granian's default"
        " interval) over the cap before a respawn: one large request's peak does not restart a worker."
    )
    return [
        ServerOption("--workers-max-rss", str(limit), why, recycles=True),
        ServerOption("--rss-samples", str(GRANIAN_RSS_SAMPLES), samples, recycles=True),
    ], []


def _granian_lifetime(plan: Plan, ev: ServerEvidence) -> tuple[list[ServerOption], list[NotFlag]]:
    """gunicorn's max_requests (a count) as an age, at the rate the probe measured per worker."""
    count = int(str(plan.setting("max_requests").value or 0))
    if not count:
        return [], [
            NotFlag("max_requests", "no recycling by age: Granian's default (no --workers-lifetime)"),
            NotFlag("max_requests_jitter", "no recycling, so no jitter"),
        ]
    jitter = NotFlag(
        "max_requests_jitter",
        "Granian has no jitter: workers born together reach their age together, then are replaced one at a"
        " time (--respawn-interval apart), each new one started before the old one stops",
    )
    if ev.per_worker_rps is None:
        text = (
            f"Granian has no max-requests (a count), and no throughput was measured to turn {count} requests"
            " into an age: not set (--workers-max-rss, when set, recycles a worker that leaks)"
        )
        return [], [NotFlag("max_requests", text), jitter]
    raw = count / ev.per_worker_rps
    seconds = max(GRANIAN_MIN_LIFETIME_S, math.ceil(raw / 60) * 60)
    why = (
        f"Granian has no max-requests (a count): it recycles by age instead. {count} requests at the"
        f" {ev.rps_where} = {raw:.0f} s, rounded up to whole minutes (at least Granian's"
        f" {GRANIAN_MIN_LIFETIME_S} s). Below that peak rate a worker is recycled sooner than gunicorn"
        " would after the same number of requests."
    )
    return [ServerOption("--workers-lifetime", str(seconds), why, "max_requests", recycles=True)], [jitter]


def _granian_keepalive(plan: Plan) -> tuple[ServerOption, tuple[Advice, ...]]:
    keepalive = plan.setting("keepalive")
    seconds = int(str(keepalive.value))
    ms = min(GRANIAN_MAX_HEADER_TIMEOUT_MS, seconds * 1000)
    why = (
        f"the plan's keep-alive, {seconds} s, in ms: in Granian 2.x the HTTP/1 header read timeout also"
        " closes an idle keep-alive connection (measured: closed when it ran out). " + keepalive.why
    )
    if ms == seconds * 1000:
        return ServerOption("--http1-header-read-timeout", str(ms), why, "keepalive"), ()
    advice = Advice(
        f"Keep-alive: the plan wants {seconds} s (to outlive the load balancer's idle timeout), but Granian's"
        f" HTTP/1 header read timeout stops at {GRANIAN_MAX_HEADER_TIMEOUT_MS // 1000} s: set the balancer's"
        f" idle timeout below {GRANIAN_MAX_HEADER_TIMEOUT_MS // 1000} s (e.g. 55 s), or it may send a request"
        " down a connection Granian is closing (502).",
        only_for=Server.GRANIAN.value,
    )
    return ServerOption("--http1-header-read-timeout", str(ms), why + " Capped at 60 s.", "keepalive"), (
        advice,
    )


def _granian_fixed(plan: Plan) -> list[ServerOption]:
    """The options every Granian plan for FastAPI has: interface, runtime, HTTP mode, respawn, shutdown."""
    graceful = plan.setting("graceful_timeout")
    return [
        ServerOption(
            "--interface",
            "asgi",
            "FastAPI is an ASGI app (Granian's default, rsgi, is its own protocol); asgi runs the lifespan"
            " events, asginl would skip them.",
        ),
        ServerOption(
            "--runtime-threads",
            "1",
            "Rust I/O threads per worker: the measured routes wait on each worker's Python event loop (one"
            " thread holding the GIL), not on socket I/O; more threads compete for the same CPUs.",
        ),
        ServerOption(
            "--http",
            "1",
            "HTTP/1.1, what the probe measured and what proxies and load balancers speak to their upstreams;"
            " auto would also take HTTP/2, which nothing here measured.",
        ),
        ServerOption(
            "--respawn-failed-workers",
            None,
            "replace a worker that dies (gunicorn and uvicorn's manager do; Granian's default is to shut the"
            " whole server down).",
        ),
        ServerOption(
            "--workers-kill-timeout",
            str(graceful.value),
            "after SIGTERM a worker has this long to finish its requests, then it is killed (unset, Granian"
            " waits without end and the orchestrator's SIGKILL decides). " + graceful.why,
            "graceful_timeout",
        ),
    ]


_GRANIAN_NOT_FLAGS: Final = {
    "worker_class": "Granian is the worker: no worker class",
    "worker_tmp_dir": "Granian has no worker heartbeat file to place",
    "control_socket_disable": "Granian has no control socket",
    "preload_app": "Granian has no preload: each worker imports the app itself",
}


def _granian_not_flags(plan: Plan) -> list[NotFlag]:
    present = {s.name for s in plan.settings}
    said = [NotFlag(name, text) for name, text in _GRANIAN_NOT_FLAGS.items() if name in present]
    timeout = plan.setting("timeout").value
    said.append(
        NotFlag(
            "timeout",
            f"Granian has no worker timeout: a worker whose event loop blocks is not replaced (gunicorn's"
            f" heartbeat would after {timeout} s); a liveness probe on a cheap `async def` route does it",
        )
    )
    log = plan.setting("accesslog").value
    if log not in (None, "-"):
        said.append(
            NotFlag("accesslog", f"Granian logs requests to stderr; writing them to {log} needs --log-config")
        )
    return said


def _granian_access_log(plan: Plan) -> ServerOption:
    log = plan.setting("accesslog")
    flag = "--no-access-log" if log.value is None else "--access-log"
    return ServerOption(flag, None, log.why, "accesslog")


def _granian_advice(plan: Plan, options: list[ServerOption]) -> tuple[Advice, ...]:
    advice = list(advice_for(plan, Server.GRANIAN))
    if plan.workers > 1 and any(o.recycles for o in options):
        advice.append(
            Advice(
                "Set `sysctl net.ipv4.tcp_migrate_req=1` on the host (Linux 5.14+): without it, connections"
                " queued on a worker that Granian respawns (age or memory) are reset; Granian warns at"
                " start.",
                only_for=Server.GRANIAN.value,
            )
        )
    return tuple(advice)


def granian_plan(plan: Plan, ev: ServerEvidence = NO_EVIDENCE) -> ServerPlan:
    """Granian with the plan's values, its caps sized from the evidence."""
    stack = plan.stack
    version = stack.granian if stack else None
    workers, backlog = plan.setting("workers"), plan.setting("backlog")
    keepalive, keep_advice = _granian_keepalive(plan)
    memory, memory_notes = _granian_memory(plan, ev)
    lifetime, lifetime_said = _granian_lifetime(plan, ev)
    options = [
        *bind_options(plan),
        ServerOption(
            "--workers",
            str(plan.workers),
            f"{workers.why} Granian runs one Python event loop per worker, as uvicorn does, so the same"
            " evidence sizes it.",
            "workers",
        ),
        *_granian_fixed(plan),
        ServerOption(
            "--backlog", str(max(GRANIAN_MIN_BACKLOG, int(str(backlog.value)))), backlog.why, "backlog"
        ),
        _granian_backpressure(plan, ev),
        keepalive,
        *memory,
        *lifetime,
        _granian_access_log(plan),
    ]
    kept, dropped = gated(options, version, GRANIAN_FLAG_SINCE, Server.GRANIAN)
    installed, install = install_state(Server.GRANIAN, stack)
    notes = (
        *install,
        *memory_notes,
        "Granian runs an ASGI app's sync code on one blocking thread per worker (fixed); FastAPI's `def`"
        " routes run in AnyIO's thread pool inside the app, so the thread-limiter advice applies as under"
        " uvicorn.",
    )
    return ServerPlan(
        server=Server.GRANIAN,
        app=plan.app,
        version=version,
        installed=installed,
        workers=plan.workers,
        options=kept,
        not_flags=(*dropped, *lifetime_said, *_granian_not_flags(plan)),
        notes=notes,
        advice=(*_granian_advice(plan, list(kept)), *keep_advice),
        pins=(f"granian=={version}",) if version else (),
    )


def plan_server(server: Server, plan: Plan, ev: ServerEvidence = NO_EVIDENCE) -> ServerPlan:
    """The plan as `server` runs it."""
    if server is Server.GRANIAN:
        return granian_plan(plan, ev)
    if server is Server.UVICORN:
        return uvicorn_plan(plan, ev)
    return gunicorn_plan(plan)
