"""verify: measure a recommended gunicorn config against the alternatives on the real app.

Each run starts gunicorn from the user's config (only the bind and, for the baselines, the
worker count are overridden on the command line, which gunicorn ranks above the file), drives
it with the same closed-loop mix, and stops it before the next one starts.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

import psutil

from fastapi_tune import checks
from fastapi_tune.discovery import parse_endpoint, parse_header
from fastapi_tune.errors import ServerFailedError, UsageError
from fastapi_tune.host import HostFacts
from fastapi_tune.launch import Running, free_port, run_server
from fastapi_tune.loadgen import LiveCount, RequestSpec, run_burst
from fastapi_tune.observe import cpu_seconds, worker_children
from fastapi_tune.redact import REDACTED
from fastapi_tune.report import Endpoint, EndpointClass, ProbeReport
from fastapi_tune.rules import rule_of_thumb_workers
from fastapi_tune.signals import stop_on_signals
from fastapi_tune.stats import median, summarize

RECOMMENDED: Final = "recommended"
RULE_OF_THUMB: Final = "rule-of-thumb"
SINGLE_WORKER: Final = "single-worker"
# Environment the config reads that would silently change what is being verified.
_OVERRIDES_DROPPED: Final = ("WEB_CONCURRENCY", "BIND", "PORT", "GUNICORN_CMD_ARGS")
SWEEP_MAX_WORKERS: Final = 32


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


@dataclass(frozen=True)
class Run:
    """One server configuration under the same load."""

    label: str
    workers: int  # worker processes observed after boot
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mib: float  # total RSS of the worker processes at the end of the run
    server_cpu_cores: float
    client_cpu_cores: float
    rounds_rps: tuple[float, ...] = ()  # throughput of each round, for the spread


@dataclass(frozen=True)
class Comparison:
    """Which run was best, and how the recommendation compares with it and the rule of thumb."""

    best: Run
    recommended: Run | None
    ratio_to_best: float | None  # recommended throughput / best throughput
    memory_vs_rule: float | None  # recommended RSS / rule-of-thumb RSS
    line: str


@dataclass(frozen=True)
class VerifyResult:
    runs: tuple[Run, ...]
    verdict: Comparison | None
    endpoints: tuple[str, ...]
    concurrency: int
    duration_s: float
    repeat: int
    interrupted: bool


class VerifyEvents(Protocol):
    def run_started(
        self, label: str, workers: int | None, round_no: int, rounds: int, live: Callable[[], tuple[int, int]]
    ) -> None: ...

    def run_done(self, run: Run) -> None: ...


def plan_runs(host: HostFacts, sweep: bool) -> list[tuple[str, int | None]]:
    """(label, workers) in order; None means the config's own worker count."""
    runs: list[tuple[str, int | None]] = [
        (RECOMMENDED, None),
        (RULE_OF_THUMB, rule_of_thumb_workers(host.cpu.logical)),
        (SINGLE_WORKER, 1),
    ]
    if sweep:
        # A CPU override may say 1024: each count boots a gunicorn, so the sweep stops at a size
        # one machine's verify can run in minutes.
        top = min(SWEEP_MAX_WORKERS, max(2, math.ceil(2 * float(host.cpu.effective))))
        runs += [(f"sweep-{n}", n) for n in range(1, top + 1)]
    return runs


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


def _specs(options: VerifyOptions, report: ProbeReport | None, base: str) -> list[RequestSpec]:
    headers = tuple(parse_header(h) for h in options.headers)
    if options.endpoints:
        paths = [parse_endpoint(e) for e in options.endpoints]
        if any("{" in p for _, p in paths):
            raise UsageError("-e paths for verify must be concrete, e.g. 'GET /orders/1'")
        return [RequestSpec(m, base + p, headers, timeout_s=options.timeout_s) for m, p in paths]
    if report is None or not report.endpoints:
        raise UsageError("nothing to drive: pass --probe REPORT (its endpoints are mixed) or -e 'GET /path'")
    kept, _ = _drivable(report)
    if not kept:
        raise UsageError(
            "nothing to drive: no endpoint of the report was clean in the probe; use -e 'GET /path'"
        )
    # The report's URLs point at the server it probed: keep their path (base path included) and query.
    origin = _origin(report.target)
    hidden = [f"{e.method} {e.path}" for e in kept if REDACTED in e.url]
    if hidden:
        raise UsageError(
            f"{hidden[0]}: its URL held a secret that the report does not keep; drive it with"
            " -e 'METHOD /path?name=VALUE' (and -H for credentials)"
        )
    specs = []
    for e in kept:
        extra = (("Content-Type", e.content_type),) if e.body is not None and e.content_type else ()
        body = e.body.encode() if e.body is not None else None
        url = base + (e.url.removeprefix(origin) or "/")
        specs.append(RequestSpec(e.method, url, (*headers, *extra), body, timeout_s=options.timeout_s))
    return specs


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
        options, "-c", str(options.config), "--bind", f"127.0.0.1:{port}", *control, *extra, options.app
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


def _measure(
    label: str,
    running: Running,
    specs: Sequence[RequestSpec],
    options: VerifyOptions,
    stop: threading.Event,
    live: LiveCount,
) -> Run:
    workers = worker_children(running.pid)
    cpu_before, started = sum(cpu_seconds(workers).values()), time.perf_counter()
    result = run_burst(specs, options.concurrency, options.warmup_s, options.duration_s, stop, live)
    cpu_after, wall = sum(cpu_seconds(workers).values()), time.perf_counter() - started
    b = summarize(result)
    # Server CPU is averaged over the whole burst, warm-up included: context for the table,
    # not part of the verdict.
    return Run(
        label=label,
        workers=len(workers),
        requests=b.requests,
        errors=b.errors,
        throughput_rps=b.throughput_rps,
        p50_ms=None if b.p50_ms is None else round(b.p50_ms, 2),
        p99_ms=None if b.p99_ms is None else round(b.p99_ms, 2),
        rss_mib=round(_rss_mib(workers), 1),
        server_cpu_cores=round((cpu_after - cpu_before) / wall, 3),
        client_cpu_cores=round(b.client_cpu_cores, 3),
    )


def combine(rounds: Sequence[Run]) -> Run:
    """Pure: one configuration's rounds as one run: medians of the rates, the sums of the counts."""
    first = rounds[0]
    p50s = [r.p50_ms for r in rounds if r.p50_ms is not None]
    p99s = [r.p99_ms for r in rounds if r.p99_ms is not None]
    return Run(
        label=first.label,
        workers=first.workers,
        requests=sum(r.requests for r in rounds),
        errors=sum(r.errors for r in rounds),
        throughput_rps=median([r.throughput_rps for r in rounds]),
        p50_ms=median(p50s) if p50s else None,
        p99_ms=median(p99s) if p99s else None,
        rss_mib=max(r.rss_mib for r in rounds),
        server_cpu_cores=round(median([r.server_cpu_cores for r in rounds]), 3),
        client_cpu_cores=round(median([r.client_cpu_cores for r in rounds]), 3),
        rounds_rps=tuple(round(r.throughput_rps, 1) for r in rounds),
    )


def judge(runs: Sequence[Run]) -> Comparison | None:
    """Pure: which run was best, and how the recommendation compares with it and the rule of thumb."""
    clean = [r for r in runs if r.requests and r.errors <= 0.01 * r.requests]
    if not clean:
        return None
    best = max(clean, key=lambda r: r.throughput_rps)
    rec = next((r for r in runs if r.label == RECOMMENDED), None)
    rule = next((r for r in runs if r.label == RULE_OF_THUMB), None)
    ratio = rec.throughput_rps / best.throughput_rps if rec in clean and best.throughput_rps else None
    memory = rec.rss_mib / rule.rss_mib if rec and rule and rule.rss_mib else None
    if rec is None or ratio is None:
        line = f"best clean run: {best.label} ({best.workers} workers), {best.throughput_rps:.1f} req/s"
        if rec is not None:
            line += (
                f"; the recommended config failed {rec.errors} of {rec.requests} requests, so its"
                f" {rec.throughput_rps:.1f} req/s is not comparable"
            )
    else:
        line = (
            f"recommended ({rec.workers} workers): {rec.throughput_rps:.1f} req/s,"
            f" {ratio:.0%} of the best run ({best.label}, {best.workers} workers,"
            f" {best.throughput_rps:.1f} req/s)"
        )
        if rule is not None and memory is not None:
            line += (
                f"; rule of thumb ({rule.workers} workers): {rule.throughput_rps:.1f} req/s with"
                f" {rule.rss_mib:.0f} MiB of workers vs {rec.rss_mib:.0f} MiB recommended"
            )
            if rec.p99_ms is not None and rule.p99_ms is not None and rec.p99_ms > 1.25 * rule.p99_ms:
                # Fewer workers each queue more of the same load: the tail grows before the median.
                line += (
                    f"; but p99 is {rec.p99_ms:.0f} ms vs {rule.p99_ms:.0f} ms with the rule of thumb"
                    " under this load: if such concurrency is real and the tail matters, weigh it"
                )
        if len(rec.rounds_rps) > 1:
            low, high = min(rec.rounds_rps), max(rec.rounds_rps)
            line += f"; the recommended config's rounds ranged {low:.1f}-{high:.1f} req/s (noise)"
    return Comparison(best=best, recommended=rec, ratio_to_best=ratio, memory_vs_rule=memory, line=line)


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
    checks.open_files_allow(options.concurrency, "--concurrency")


def run_verify(
    options: VerifyOptions, host: HostFacts, report: ProbeReport | None, events: VerifyEvents
) -> VerifyResult:
    """Start each configuration in turn, drive it, stop it; Ctrl-C keeps the runs done so far."""
    # gunicorn runs in --app-dir: a relative --config means relative to where the user is.
    options = replace(options, config=options.config.resolve())
    if not options.config.is_file():
        raise UsageError(f"{options.config}: no such config file (make one with `fastapi-tune recommend`)")
    check_verify_options(options)
    env = {k: v for k, v in os.environ.items() if k not in _OVERRIDES_DROPPED}
    app_dir = options.app_dir.resolve()
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), *filter(None, [env.get("PYTHONPATH")])])
    control = control_socket_flags(options, env, app_dir)
    planned = configured_workers(options, env, app_dir, control)
    stop = threading.Event()
    endpoints: tuple[str, ...] = ()
    measured: dict[str, list[Run]] = {}
    plan = plan_runs(host, options.sweep)
    with stop_on_signals(stop):
        for (label, workers), round_no in ((p, r) for r in range(options.repeat) for p in plan):
            # Rounds go through every configuration before repeating any, so a drift on the
            # machine (another process, CPU steal) touches all of them alike.
            if stop.is_set():
                break
            port = free_port()
            specs = _specs(options, report, f"http://127.0.0.1:{port}")
            endpoints = tuple(f"{s.method} {s.url.split(str(port), 1)[1]}" for s in specs)
            live = LiveCount()
            events.run_started(label, workers, round_no + 1, options.repeat, live.read)
            with run_server(
                _argv(options, port, workers, control),
                port,
                ready_path=endpoints[0].split(" ", 1)[1],
                workers=workers or planned,
                cwd=app_dir,
                env=env,
                name=f"gunicorn ({label})",
            ) as running:
                time.sleep(0.2)
                run = _measure(label, running, specs, options, stop, live)
            if stop.is_set():
                break
            measured.setdefault(label, []).append(run)
            events.run_done(run)
    runs = [combine(rounds) for rounds in measured.values()]
    return VerifyResult(
        runs=tuple(runs),
        verdict=judge(runs),
        endpoints=endpoints,
        concurrency=options.concurrency,
        duration_s=options.duration_s,
        repeat=options.repeat,
        interrupted=stop.is_set(),
    )
