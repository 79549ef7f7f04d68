"""The commands' flows: measuring, judging and planning chained in the one-way order.

host + probe report + profile -> plan -> renderers. The CLI calls one of these and renders what it
returns; none of them prints.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from fastapi_tune.core.errors import BadInputError, RefusedError
from fastapi_tune.core.fileio import Overwrite, Written, atomic_write, existing_state, write_output
from fastapi_tune.flows.demo import SAMPLE_APP, sample_server
from fastapi_tune.judge.classify import classify_report
from fastapi_tune.judge.priority import deepen_order
from fastapi_tune.measure.accesslog import Progress, read_access_logs
from fastapi_tune.measure.appenv import AppEnv, app_server, read_app_env
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.operations import routes_to_match
from fastapi_tune.measure.overload import Restart, restarter
from fastapi_tune.measure.probe import run_probe
from fastapi_tune.measure.probe_options import ProbeEvents, ProbeOptions, ProbeOutcome
from fastapi_tune.measure.report import ProbeReport, report_to_json
from fastapi_tune.measure.traffic import TrafficProfile
from fastapi_tune.plan.deploy import DeploySpec, decide_deploy
from fastapi_tune.plan.model import Choices, Plan
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import DEFAULT_PROFILE, Profile, load_profile
from fastapi_tune.plan.traffic import TrafficDefaults, traffic_defaults, with_traffic_input
from fastapi_tune.render.admission import admission_files
from fastapi_tune.render.conf import DEFAULT_CONF, render_gunicorn_conf
from fastapi_tune.render.deploy import deploy_files
from fastapi_tune.render.traffic import traffic_summary
from fastapi_tune.verify.run import VerifyEvents, VerifyOptions, VerifyResult, run_verify


def probe_and_classify(
    options: ProbeOptions,
    host: HostFacts,
    events: ProbeEvents,
    traffic: TrafficProfile | None = None,
    restart: Restart | None = None,
) -> ProbeOutcome:
    """Measure, then judge every endpoint from what was measured.

    With `traffic` (from access logs) the routes that carry the most traffic are measured first
    and get their full ladders sooner, and the report keeps the traffic's summary for `recommend`.
    `restart` restarts a server the tool started when the probe wedged it (tune, demo, check), so the
    probe goes on.
    """
    if traffic is not None:
        options = replace(options, route_weights=traffic.shares())
    outcome = run_probe(options, host, events, deepen_order, restart)
    return replace(outcome, report=replace(classify_report(outcome.report), traffic=traffic))


def read_traffic(
    options: ProbeOptions, logs: Sequence[str], progress: Progress | None = None
) -> TrafficProfile:
    """The access logs, matched to the routes of the app that `options` probes."""
    return read_access_logs(logs, routes_to_match(options), progress)


def save_report(report: ProbeReport, path: Path) -> None:
    """The report as its versioned JSON, written atomically."""
    atomic_write(path, json.dumps(report_to_json(report), indent=2) + "\n")


def save_report_somewhere(report: ProbeReport, path: Path) -> tuple[Path | None, BadInputError | None]:
    """Save to `path`; when that write fails (full disk), to a fresh file in the temp directory.

    Measured results are not thrown away for a full disk: returns where the report went (None:
    nowhere) and the failure at `path`, if any.
    """
    try:
        save_report(report, path)
        return path, None
    except BadInputError as e:
        failure = e
    try:
        fd, name = tempfile.mkstemp(prefix="fastapi-tune-probe-", suffix=".json")
    except OSError:
        return None, failure
    os.close(fd)
    spare = Path(name)
    try:
        save_report(report, spare)
    except BadInputError:
        spare.unlink(missing_ok=True)
        return None, failure
    return spare, failure


@dataclass(frozen=True)
class DemoResult:
    outcome: ProbeOutcome
    plan: Plan
    url: str


def run_demo(host: HostFacts, max_seconds: float, events: ProbeEvents) -> DemoResult:
    """Serve the sample app, probe and judge it, stop it, and plan from the report."""
    with sample_server() as running:
        outcome = probe_and_classify(
            ProbeOptions(url=running.url, max_seconds=max_seconds, app=SAMPLE_APP),
            host,
            events,
            restart=restarter(running),
        )
    plan = make_plan(
        host,
        outcome.report,
        load_profile(DEFAULT_PROFILE),
        Choices(app=SAMPLE_APP, gunicorn_version=host.versions.get("gunicorn")),
    )
    return DemoResult(outcome=outcome, plan=plan, url=running.url)


# ---------------------------------------------------------------------------------------
# tune: the user's own app, from start to config files


class ServeEvents(Protocol):
    """What the CLI shows while the app is served and probed (`tune`, `check`)."""

    def step(self, text: str) -> None: ...

    def probing(self) -> AbstractContextManager[ProbeEvents]: ...


class TuneEvents(ServeEvents, Protocol):
    """What the CLI shows while `tune` runs; the two long steps get their own progress display."""

    def verifying(self) -> AbstractContextManager[VerifyEvents]: ...


@dataclass(frozen=True)
class ServedProbe:
    app_env: AppEnv
    url: str  # where the app was served while it was probed
    outcome: ProbeOutcome
    traffic: TrafficProfile | None = None  # from the access logs, when given


def probe_own_app(
    app: str,
    python: str,
    app_dir: Path,
    probe: ProbeOptions,
    host: HostFacts,
    events: ServeEvents,
    access_logs: Sequence[str] = (),
) -> ServedProbe:
    """Serve `app` from its own environment (one uvicorn worker), read its access logs when given
    (the routes that carry the traffic go first), probe and judge it, and stop it, whatever happens."""
    app_env = read_app_env(python, app_dir)
    events.step(f"Starting {app} under 1 uvicorn worker ({app_env.python}, uvicorn {app_env.uvicorn or '?'})")
    with app_server(app, app_env, app_dir) as running:
        probe_options = replace(probe, url=running.url, app=app)
        traffic = None
        if access_logs:
            events.step(f"Reading {', '.join(access_logs)} for the routes that carry the traffic")
            traffic = read_traffic(probe_options, access_logs)
            events.step(traffic_summary(traffic))
        events.step(f"{app} answers on {running.url}; probing it")
        with events.probing() as progress:
            outcome = probe_and_classify(probe_options, host, progress, traffic, restarter(running))
    return ServedProbe(app_env, running.url, outcome, traffic)


@dataclass(frozen=True)
class TuneOptions:
    app: str
    profile: Profile
    choices: Choices  # bind, worker class, preload, target_rps (versions are read from the app's env)
    probe: ProbeOptions  # everything but the URL, which is the started server's
    python: str = sys.executable
    app_dir: Path = Path()
    report_path: Path = Path("fastapi-tune-probe.json")
    conf_path: Path = DEFAULT_CONF
    deploy_dir: Path | None = None
    health_path: str | None = None
    replace: bool = False  # consent to replace existing files (a backup is kept)
    verify: bool = False
    verify_repeat: int = 3
    access_logs: tuple[str, ...] = ()  # --access-log: measure the busiest routes first, plan for their mix


@dataclass(frozen=True)
class TuneResult:
    app_env: AppEnv
    url: str  # where the app was served while it was probed
    outcome: ProbeOutcome
    plan: Plan | None  # None when the probe was interrupted or the app died
    written: tuple[Written, ...]  # gunicorn.conf.py first, then the deployment files
    deploy: DeploySpec | None
    verify: VerifyResult | None
    traffic: TrafficDefaults | None = None  # what the access logs set in the plan


def _write_all(files: list[tuple[Path, str]], consent: bool) -> tuple[Written, ...]:
    """Write every file, or none: each is checked for consent before the first is written."""
    for path, text in files:
        if existing_state(path, text) is Overwrite.ASK and not consent:
            raise RefusedError(
                f"{path} exists and differs; not replacing it without consent: pass --yes (the old file"
                " is kept as a backup next to it) or write elsewhere (--output, --deploy)"
            )
    return tuple(write_output(path, text, consent) for path, text in files)


def tune_files(
    options: TuneOptions, plan: Plan, report: ProbeReport, target: HostFacts
) -> tuple[list[tuple[Path, str]], DeploySpec | None]:
    """gunicorn.conf.py and, with a deploy directory, the deployment files: (path, text) each."""
    files = [(options.conf_path, render_gunicorn_conf(plan)), *admission_files(plan, options.conf_path)]
    if options.deploy_dir is None:
        return files, None
    name = options.app_dir.resolve().name or options.app.partition(":")[0]
    spec = decide_deploy(
        plan, report, options.profile, target, name, options.health_path, options.conf_path.name
    )
    files += [(options.deploy_dir / file, text) for file, text in deploy_files(spec)]
    return files, spec


def run_tune(options: TuneOptions, host: HostFacts, target: HostFacts, events: TuneEvents) -> TuneResult:
    """Serve the app from its own environment, probe and judge it, stop it, plan for `target`, write
    the config (and deployment files), and with `verify` measure the config against the alternatives.

    `host` is this machine (where the probe measures); `target` is where the app will run (--cpus,
    --memory, or this machine). Every server started is stopped, whatever happens.
    """
    served = probe_own_app(
        options.app, options.python, options.app_dir, options.probe, host, events, options.access_logs
    )
    app_env, outcome, traffic = served.app_env, served.outcome, served.traffic
    save_report(outcome.report, options.report_path)
    if outcome.error is not None or outcome.report.interrupted:
        return TuneResult(app_env, served.url, outcome, None, (), None, None)
    choices = replace(options.choices, app=options.app, gunicorn_version=app_env.gunicorn, stack=app_env)
    defaults = None if traffic is None else traffic_defaults(choices, traffic, outcome.report)
    plan = make_plan(target, outcome.report, options.profile, defaults.choices if defaults else choices)
    if defaults is not None:
        plan = with_traffic_input(plan, defaults)
    files, spec = tune_files(options, plan, outcome.report, target)
    written = _write_all(files, options.replace)
    verified = None
    if options.verify:
        events.step(f"Verifying {options.conf_path} against the rule of thumb and a single worker")
        verify_options = VerifyOptions(
            app=options.app,
            config=options.conf_path,
            python=options.python,
            app_dir=options.app_dir,
            repeat=options.verify_repeat,
        )
        with events.verifying() as progress:
            verified = run_verify(verify_options, host, outcome.report, progress)
    return TuneResult(app_env, served.url, outcome, plan, written, spec, verified, defaults)
