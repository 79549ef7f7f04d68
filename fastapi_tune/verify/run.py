"""verify: measure a recommended gunicorn config against the alternatives on the real app.

Each run starts gunicorn from the user's config (only the bind, worker recycling (off) and, for the
baselines, the worker count are overridden on the command line, which gunicorn ranks above the file),
drives it with the same closed-loop mix, optionally an open loop at a fixed rate (--rate) and a search
for the highest rate meeting an objective (--capacity), and stops it before the next one starts.
The judgement (best beyond noise, comparability, the objective) is verify_judge.py's.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

import psutil

from fastapi_tune.core import checks
from fastapi_tune.core.errors import ServerFailedError, UsageError
from fastapi_tune.core.redact import REDACTED, redact_path
from fastapi_tune.core.rules import OVERLOAD_PER_WORKER, rule_of_thumb_workers
from fastapi_tune.core.signals import stop_on_signals
from fastapi_tune.discover.openapi import parse_endpoint, parse_header
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.loadgen import LiveCount, RequestSpec, run_burst
from fastapi_tune.measure.observe import cpu_seconds, worker_children
from fastapi_tune.measure.report import Endpoint, EndpointClass, ProbeReport
from fastapi_tune.measure.settle import SETTLE_MAX_S, Settler
from fastapi_tune.measure.stats import summarize
from fastapi_tune.plan.slo import Objective
from fastapi_tune.verify.judge import (
    RECOMMENDED,
    RULE_OF_THUMB,
    SINGLE_WORKER,
    Comparison,
    Planned,
    Run,
    combine,
    judge,
    objective_verdict,
    weighted_order,
)
from fastapi_tune.verify.judge import plan_runs as plan_configurations
from fastapi_tune.verify.overload import ADMISSION_ENV, Launch, OverloadCheck, config_cap, run_checks
from fastapi_tune.verify.rate import CapacitySearch, open_loop_check, open_timeout

__all__ = [
    "RECOMMENDED",
    "RULE_OF_THUMB",
    "SINGLE_WORKER",
    "Comparison",
    "Run",
    "VerifyOptions",
    "VerifyResult",
    "combine",
    "judge",
    "run_verify",
]

# Environment the config reads that would silently change what is being verified.
_OVERRIDES_DROPPED: Final = ("WEB_CONCURRENCY", "BIND", "PORT", "GUNICORN_CMD_ARGS", ADMISSION_ENV)
# Worker recycling off while measuring: max_requests restarts a worker mid-run on fast routes (10k
# requests go by in seconds), which shows as socket errors, negative CPU deltas and a worker missing
# from the RSS sum (FIELD-NOTES). The command line ranks above the config file.
NO_RECYCLING: Final = ("--max-requests", "0")
# Open-loop runs: at most this many requests in flight by default (--max-in-flight), k6's maxVUs:
# enough for a rate x a latency of a second or more, so that a server past its capacity shows as
# a queue that grows (and is counted) rather than as starts dropped by the generator.
DEFAULT_MAX_IN_FLIGHT: Final = 512


@dataclass(frozen=True)
class VerifyOptions:
    app: str
    config: Path
    python: str = sys.executable
    app_dir: Path = Path()
    endpoints: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    concurrency: int = 64
    duration_s: float = 3.0
    repeat: int = 3
    warmup_s: float = 1.0
    sweep: bool = False
    timeout_s: float = 10.0
    mix: Mapping[str, float] | None = None  # route name ("GET /a") -> weight; None: each in turn
    objective: Objective | None = None  # --slo
    rate_rps: float | None = None  # --rate: an open loop at this rate on every configuration
    capacity: bool = False  # --capacity: search the highest rate meeting the objective
    step_s: float = 2.0  # counted seconds per capacity step
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # --max-in-flight: the open loop's bound
    # The overload step: in flight per worker (--overload C); by default it runs when the config
    # carries an admission cap (at OVERLOAD_PER_WORKER), and never with no_overload.
    overload: int | None = None
    no_overload: bool = False


@dataclass(frozen=True)
class VerifyResult:
    runs: tuple[Run, ...]
    verdict: Comparison | None
    endpoints: tuple[str, ...]
    concurrency: int
    duration_s: float
    repeat: int
    interrupted: bool
    objective: Objective | None = None
    rate_rps: float | None = None
    slo_met: bool | None = None  # the recommended config at --rate; None when not checked
    slo_line: str | None = None
    recycling: str = "off while measuring (--max-requests 0 on gunicorn's command line)"
    overload: tuple[OverloadCheck, ...] = ()  # the config and its uncapped alternative past the knee


class VerifyEvents(Protocol):
    def run_started(
        self, label: str, workers: int | None, round_no: int, rounds: int, live: Callable[[], tuple[int, int]]
    ) -> None: ...

    def step(self, text: str) -> None: ...

    def run_done(self, run: Run) -> None: ...


def _drivable(report: ProbeReport) -> tuple[list[Endpoint], list[str]]:
    """The report's endpoints that were clean in the probe, and why each other one is left out."""
    kept: list[Endpoint] = []
    notes: list[str] = []
    for e in report.endpoints:
        cls = e.verdict.cls if e.verdict else None
        if cls in (None, EndpointClass.INCONCLUSIVE, EndpointClass.STALLED):
            notes.append(f"{e.method} {e.path}: left out, {cls or 'not judged'} in the probe")
        elif e.body_given:
            notes.append(f"{e.method} {e.path}: left out, its --body is not kept in the report")
        else:
            kept.append(e)
    return kept, notes


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class _Route:
    """One route to drive: its name for --mix, the concrete path (base path included), its body."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


def _report_routes(report: ProbeReport) -> list[_Route]:
    kept, _ = _drivable(report)
    if not kept:
        raise UsageError(
            "nothing to drive: no endpoint of the report was clean in the probe; use -e 'GET /path'"
        )
    hidden = [e.route for e in kept if REDACTED in e.url]
    if hidden:
        raise UsageError(
            f"{hidden[0]}: its URL held a secret that the report does not keep; drive it with"
            " -e 'METHOD /path?name=VALUE' (and -H for credentials)"
        )
    # The report's URLs point at the server it probed: keep their path (base path included) and query.
    origin = _origin(report.target)
    return [
        _Route(
            e.route,
            e.method,
            e.url.removeprefix(origin) or "/",
            e.body.encode() if e.body is not None else None,
            e.content_type if e.body is not None else None,
        )
        for e in kept
    ]


def _routes(options: VerifyOptions, report: ProbeReport | None) -> list[_Route]:
    """The routes to drive, in order, repeated by their --mix weight."""
    if options.endpoints:
        pairs = [parse_endpoint(e) for e in options.endpoints]
        if any("{" in p for _, p in pairs):
            raise UsageError("-e paths for verify must be concrete, e.g. 'GET /orders/1'")
        routes = [_Route(f"{m} {p}", m, p) for m, p in pairs]
    elif report is not None and report.endpoints:
        routes = _report_routes(report)
    else:
        raise UsageError("nothing to drive: pass --probe REPORT (its endpoints are mixed) or -e 'GET /path'")
    if options.mix is None:
        return routes
    names = [r.name for r in routes]
    unknown = sorted(set(options.mix) - set(names))
    if unknown:
        raise UsageError(
            f"--mix names {', '.join(unknown)}: not among the routes driven ({', '.join(names)})"
        )
    weights = [float(options.mix.get(n, 0.0)) for n in names]
    if not any(w > 0 for w in weights) or any(w < 0 for w in weights):
        raise UsageError("--mix weights must be >= 0 and at least one > 0")
    return [routes[i] for i in weighted_order(weights)]


def request_specs(options: VerifyOptions, report: ProbeReport | None, base: str) -> list[RequestSpec]:
    """The load every run gets: the routes in order (by --mix weight), with -H headers, against `base`."""
    headers = tuple(parse_header(h) for h in options.headers)
    return [
        RequestSpec(
            r.method,
            base + r.path,
            (*headers, *((("Content-Type", r.content_type),) if r.content_type else ())),
            r.body,
            timeout_s=options.timeout_s,
        )
        for r in _routes(options, report)
    ]


def verify_notes(options: VerifyOptions, report: ProbeReport | None) -> list[str]:
    """What the user should know before trusting the runs: routes left out, headers not given again."""
    if options.endpoints or report is None:
        return []
    _, notes = _drivable(report)
    probed = {str(h).split(":", 1)[0].strip().lower() for h in report.settings.get("headers") or []}
    given = {parse_header(h)[0].lower() for h in options.headers}
    missing = sorted(probed - given)
    if missing:
        notes.append(
            f"the probe sent header(s) {', '.join(missing)} that verify was not given: pass them again with"
            " -H (the report keeps no secret values), or routes behind auth will fail"
        )
    return notes


def _rss_mib(procs: Sequence[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _gunicorn(options: VerifyOptions, *args: str) -> list[str]:
    """gunicorn from the app's environment (--python)."""
    return [options.python, "-m", "gunicorn", *args]


def _argv(options: VerifyOptions, port: int, workers: int | None, control: list[str]) -> list[str]:
    extra = ["--workers", str(workers)] if workers is not None else []
    return _gunicorn(
        options,
        "-c",
        str(options.config),
        "--bind",
        f"127.0.0.1:{port}",
        *NO_RECYCLING,
        *control,
        *extra,
        options.app,
    )


def _run_gunicorn(
    options: VerifyOptions, env: dict[str, str], cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """A short gunicorn command (--help, --print-config), its failure to start as one clear line."""
    try:
        return subprocess.run(
            _gunicorn(options, *args),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServerFailedError(f"cannot run gunicorn with {options.python}: {e}") from None


@dataclass(frozen=True)
class Watched:
    """The processes a run counts: its workers (their number is the run's) and those whose CPU and RSS
    are summed (gunicorn configs: the workers; verify --servers: the whole tree, master included)."""

    workers: list[psutil.Process]
    counted: list[psutil.Process]


def workers_of(pid: int) -> Watched:
    """A gunicorn's workers, counted alone (the table compares workers' RSS across worker counts)."""
    workers = worker_children(pid)
    return Watched(workers, workers)


def _measure(
    planned: Planned,
    watched: Watched,
    specs: Sequence[RequestSpec],
    options: VerifyOptions,
    stop: threading.Event,
    live: LiveCount,
) -> tuple[Run, str | None]:
    """The closed-loop burst, and a note when its last requests were not answered in time."""
    counted = watched.counted
    cpu_before, started = sum(cpu_seconds(counted).values()), time.perf_counter()
    # The requests in flight when the window closes are awaited (uncounted): a server left
    # working through them would slow whatever is measured next (FIELD-NOTES).
    drain = min(options.timeout_s, SETTLE_MAX_S)
    result = run_burst(specs, options.concurrency, options.warmup_s, options.duration_s, stop, live, drain)
    cpu_after, wall = sum(cpu_seconds(counted).values()), time.perf_counter() - started
    b = summarize(result)
    # Server CPU is averaged over the whole burst, warm-up and drain included: context for the
    # table, not part of the verdict.
    run = Run(
        label=planned.label,
        workers=len(watched.workers),
        requests=b.requests,
        errors=b.errors,
        throughput_rps=b.throughput_rps,
        p50_ms=None if b.p50_ms is None else round(b.p50_ms, 2),
        p99_ms=None if b.p99_ms is None else round(b.p99_ms, 2),
        rss_mib=round(_rss_mib(counted), 1),
        server_cpu_cores=round((cpu_after - cpu_before) / wall, 3),
        client_cpu_cores=round(b.client_cpu_cores, 3),
        aliases=planned.aliases,
        errors_by_status=dict(b.errors_by_status),
        errors_by_kind=dict(b.errors_by_kind),
    )
    note = None
    if result.undrained and not stop.is_set():
        note = (
            f"the closed loop's last {result.undrained} request(s) were still unanswered {drain:g} s"
            " after its window: what followed was measured on a server still serving them"
        )
    return run, note


def measure_all(
    planned: Planned,
    round_no: int,
    watched: Watched,
    specs: Sequence[RequestSpec],
    options: VerifyOptions,
    stop: threading.Event,
    events: VerifyEvents,
    live: LiveCount,
) -> Run:
    """The closed-loop burst, then the open loop at --rate, then (first round) the capacity search,
    each on a settled server (item 4 of issue 23: an open loop right after a burst measured the
    burst's backlog as its own tail)."""
    settle = Settler(lambda: watched.counted, stop, events.step)
    settle("closed loop")
    run, note = _measure(planned, watched, specs, options, stop, live)
    settle.notes += [note] if note else []
    if options.rate_rps is not None and not stop.is_set():
        settle(f"open loop at {options.rate_rps:g} req/s")
        events.step(f"open loop at {options.rate_rps:g} req/s")
        check = open_loop_check(
            specs,
            options.rate_rps,
            options.duration_s,
            open_timeout(options.objective, options.timeout_s),
            options.max_in_flight,
            stop,
            live,
        )
        run = replace(run, at_rate=check)
    if options.capacity and round_no == 0 and not stop.is_set() and run.throughput_rps > 0:
        assert options.objective is not None  # check_load_options: --capacity needs --slo
        search = CapacitySearch(options.objective, options.step_s, options.timeout_s, options.max_in_flight)
        run = replace(run, capacity=search.run(specs, run.throughput_rps, stop, events.step, settle))
    return replace(run, notes=tuple(settle.notes))


def _check_options(options: VerifyOptions) -> None:
    if not options.config.is_file():
        raise UsageError(f"{options.config}: no such config file (make one with `fastapi-tune recommend`)")
    check_load_options(options)


def check_load_options(options: VerifyOptions) -> None:
    """The load's numbers, the rate and the objective: usage errors before any server starts."""
    check_verify_options(options)
    if options.rate_rps is not None and not (math.isfinite(options.rate_rps) and options.rate_rps > 0):
        raise UsageError("--rate: expected a positive number of requests per second")
    if options.capacity and options.objective is None:
        raise UsageError(
            "--capacity searches the highest rate meeting an objective: add --slo, e.g. 'p99<300ms'"
        )
    if options.objective is not None and options.rate_rps is None and not options.capacity:
        raise UsageError(
            "--slo is judged at an arrival rate: add --rate R (pass or fail at R req/s) or --capacity"
            " (the highest rate that meets it)"
        )


def _slo_verdict(runs: Sequence[Run], options: VerifyOptions) -> tuple[bool | None, str | None]:
    """The objective at --rate, judged on the recommended config (the one CI gates on)."""
    rec = next((r for r in runs if r.label == RECOMMENDED), None)
    if options.objective is None or rec is None:
        return None, None
    verdict = objective_verdict(rec, options.objective)
    return (None, None) if verdict is None else verdict


def run_verify(
    options: VerifyOptions, host: HostFacts, report: ProbeReport | None, events: VerifyEvents
) -> VerifyResult:
    """Start each configuration in turn, drive it, stop it; Ctrl-C keeps the runs done so far."""
    # gunicorn runs in --app-dir: a relative --config means relative to where the user is.
    options = replace(options, config=options.config.resolve())
    _check_options(options)
    _routes(options, report)  # usage errors before any server starts
    env = {k: v for k, v in os.environ.items() if k not in _OVERRIDES_DROPPED}
    app_dir = options.app_dir.resolve()
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), *filter(None, [env.get("PYTHONPATH")])])
    control = control_socket_flags(options, env, app_dir)
    configured = configured_workers(options, env, app_dir, control)
    stop = threading.Event()
    endpoints: tuple[str, ...] = ()
    measured: dict[str, list[Run]] = {}
    plan = plan_configurations(
        rule_of_thumb_workers(host.cpu.logical), float(host.cpu.effective), configured, options.sweep
    )
    with stop_on_signals(stop):
        for planned, round_no in ((p, r) for r in range(options.repeat) for p in plan):
            # Rounds go through every configuration before repeating any, so a drift on the
            # machine (another process, CPU steal) touches all of them alike.
            if stop.is_set():
                break
            port = free_port()
            specs = request_specs(options, report, f"http://127.0.0.1:{port}")
            paths = [(s.method, s.url.split(str(port), 1)[1]) for s in specs]
            # Shown and saved with sensitive query values hidden; the requests carry them.
            endpoints = tuple(dict.fromkeys(f"{m} {redact_path(p)}" for m, p in paths))
            live = LiveCount()
            events.run_started(planned.label, planned.workers, round_no + 1, options.repeat, live.read)
            with run_server(
                _argv(options, port, planned.workers, control),
                port,
                ready_path=paths[0][1],
                workers=planned.workers or configured,
                cwd=app_dir,
                env=env,
                name=f"gunicorn ({planned.label})",
            ) as running:
                time.sleep(0.2)
                watched = workers_of(running.pid)
                run = measure_all(planned, round_no, watched, specs, options, stop, events, live)
            if stop.is_set():
                break
            measured.setdefault(planned.label, []).append(run)
            events.run_done(run)
        checks = _overload(options, report, env, app_dir, control, configured, stop, events)
    runs = [combine(rounds) for rounds in measured.values()]
    met, line = _slo_verdict(runs, options)
    return VerifyResult(
        runs=tuple(runs),
        verdict=judge(runs),
        endpoints=endpoints,
        concurrency=options.concurrency,
        duration_s=options.duration_s,
        repeat=options.repeat,
        interrupted=stop.is_set(),
        objective=options.objective,
        rate_rps=options.rate_rps,
        slo_met=met,
        slo_line=line,
        overload=checks,
    )


def _overload(
    options: VerifyOptions,
    report: ProbeReport | None,
    env: dict[str, str],
    app_dir: Path,
    control: list[str],
    configured: int,
    stop: threading.Event,
    events: VerifyEvents,
) -> tuple[OverloadCheck, ...]:
    """The overload step on the config (and, with a cap, uncapped) when asked for or a cap is to prove."""
    cap = config_cap(options.config)
    if options.no_overload or stop.is_set() or (cap is None and options.overload is None):
        return ()
    launch = Launch(
        argv=lambda port: _argv(options, port, None, control),
        specs=lambda port: request_specs(options, report, f"http://127.0.0.1:{port}"),
        workers=configured,
        cwd=app_dir,
        env=env,
        timeout_s=options.timeout_s,
    )
    return run_checks(launch, RECOMMENDED, options.overload or OVERLOAD_PER_WORKER, stop, events, cap)


def control_socket_flags(options: VerifyOptions, env: dict[str, str], cwd: Path) -> list[str]:
    """`--no-control-socket` where the gunicorn that runs the app has one (25.1+).

    Each gunicorn unlinks and recreates ~/.gunicorn/gunicorn.ctl (or $XDG_RUNTIME_DIR's) at
    start and removes it at exit: without this, verifying next to a production gunicorn of the
    same user would take away that server's control socket.
    """
    proc = _run_gunicorn(options, env, cwd, "--help")
    if proc.returncode != 0:
        raise ServerFailedError(
            f"gunicorn is not installed for {options.python}: pip install gunicorn uvicorn-worker"
            f" there, or pass --python for the app's environment\n{proc.stderr.strip()[-500:]}"
        )
    return ["--no-control-socket"] if "--no-control-socket" in proc.stdout else []


def configured_workers(options: VerifyOptions, env: dict[str, str], cwd: Path, control: list[str]) -> int:
    """The worker count the config resolves to, from `gunicorn --print-config` (which also
    shows a config that cannot load in gunicorn's own words)."""
    proc = _run_gunicorn(
        options, env, cwd, "-c", str(options.config), *control, "--print-config", options.app
    )
    for line in proc.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "workers" and value.strip().isdigit():
            return int(value.strip())
    tail = (proc.stderr or proc.stdout).strip()[-1500:]
    raise ServerFailedError(f"gunicorn could not load {options.config} (exit {proc.returncode}):\n{tail}")


def check_verify_options(options: VerifyOptions) -> None:
    """Numbers finite and in range (NaN passes a `<= 0` test and would run forever)."""
    checks.whole(options.concurrency, "--concurrency", 1, checks.MAX_CONCURRENCY)
    checks.number(options.duration_s, "--duration", 0.05, 600, " seconds")
    checks.whole(options.repeat, "--repeat", 1, checks.MAX_REPEAT)
    checks.number(options.timeout_s, "--timeout", checks.MIN_TIMEOUT_S, checks.MAX_TIMEOUT_S, " seconds")
    checks.number(options.warmup_s, "warm-up", 0, 600, " seconds")
    checks.whole(options.max_in_flight, "--max-in-flight", 1, checks.MAX_CONCURRENCY)
    checks.open_files_allow(options.concurrency, "--concurrency")
    if options.rate_rps is not None or options.capacity:
        checks.open_files_allow(options.max_in_flight, "--max-in-flight")
    if options.overload is not None:
        checks.whole(options.overload, "--overload", 1, checks.MAX_CONCURRENCY)
