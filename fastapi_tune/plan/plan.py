"""The plan: host facts + probe report + profile -> gunicorn settings, each with its reason.

Pure: no I/O, no clock, no environment. Every value carries the evidence it came from, so
the renderers (rich table, JSON, gunicorn.conf.py comments) only format what is decided here.
"""

from __future__ import annotations

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.plan.admission import admission_advice, decide_admission
from fastapi_tune.plan.evidence import classes
from fastapi_tune.plan.model import Choices, Decided, Plan, Setting, merge
from fastapi_tune.plan.profiles import Profile
from fastapi_tune.plan.settings import (
    app_and_bind,
    connections,
    control_socket,
    decide_limiter,
    decide_timeouts,
    keepalive,
    plan_inputs,
    preload,
    recycling,
    replica_plan,
    route_advice,
    server_files,
    uvicorn_worker_note,
    worker_class_setting,
)
from fastapi_tune.plan.workers import (
    decide_workers,
    mix_workers,
    objective_replicas,
    rule_of_thumb,
    worker_rss_and_reason,
)


def make_plan(host: HostFacts, report: ProbeReport | None, profile: Profile, choices: Choices) -> Plan:
    """Decide every setting from the evidence and the profile's policy: the deciders, merged."""
    if ":" not in choices.app:
        raise UsageError(f"app {choices.app!r}: expected MODULE:ATTRIBUTE, e.g. main:app")
    by_cls = classes(report)
    inputs, known = plan_inputs(host, report, profile)
    wd = decide_workers(host, report, profile, choices)
    wd, mix_sizing, mix_advice = mix_workers(host, report, profile, choices, wd)
    timeouts = decide_timeouts(report, profile)
    graceful = int(next(s.value for s in timeouts.settings if s.name == "graceful_timeout") or 0)
    worker_class = worker_class_setting(profile, choices)
    limiter, limiter_advice = decide_limiter(report, by_cls, wd.workers)
    replicas, replica_advice = replica_plan(report, profile, choices, wd.workers)
    replicas = objective_replicas(host, replicas, mix_sizing, choices, wd.workers)
    admission = decide_admission(report)
    overload_advice, overload_unknowns = admission_advice(report, admission)
    merged = merge(
        (
            known,
            app_and_bind(profile, choices),
            worker_class,
            Decided(settings=(Setting("workers", wd.workers, wd.why),), advice=wd.notes),
            mix_advice,
            timeouts,
            keepalive(profile),
            recycling(profile),
            server_files(host, profile),
            preload(wd.workers, profile, choices),
            control_socket(profile, choices),
            limiter_advice,
            route_advice(by_cls),
            connections(by_cls, choices, wd.workers),
            uvicorn_worker_note(str(worker_class.settings[0].value), graceful),
            replica_advice,
            Decided(advice=overload_advice, unknowns=overload_unknowns),
        )
    )
    rot, rot_note = rule_of_thumb(host, wd.workers, worker_rss_and_reason(report, profile)[0])
    return Plan(
        profile=profile.name,
        profile_description=profile.description,
        app=choices.app,
        inputs=inputs,
        settings=merged.settings,
        workers=wd.workers,
        worker_formula=wd.formula,
        rule_of_thumb=rot,
        rule_of_thumb_note=rot_note,
        limiter_tokens=limiter,
        advice=merged.advice,
        unknowns=merged.unknowns,
        replicas=replicas,
        workers_per_cpu=None
        if profile.workers.fixed is not None
        else round(wd.workers / float(host.cpu.effective), 3),
        stack=choices.stack,
        mix_sizing=mix_sizing,
        admission=admission,
    )
