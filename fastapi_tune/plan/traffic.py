"""What the access logs change in a plan: the routes' shares become the default --mix, the peak the
default --target-rps. Flags the user gave win. Pure: the caller prints the line it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from fastapi_tune.discover.openapi import route_name
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.measure.traffic import TrafficProfile
from fastapi_tune.plan.model import Choices, Plan

# Routes named in the line before "+N more".
_NAMED: Final = 4


@dataclass(frozen=True)
class TrafficDefaults:
    """The choices with the log's mix and rate filled in, and what to tell the user about it."""

    choices: Choices
    line: str  # one line: what was taken from the logs, with the numbers
    notes: tuple[str, ...] = ()  # traffic the plan cannot model (routes the probe did not measure)


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%" if share < 0.1 else f"{share * 100:.0f}%"


def _routes_text(mix: dict[str, float]) -> str:
    named = [f"{name} {_pct(share)}" for name, share in list(mix.items())[:_NAMED]]
    more = len(mix) - _NAMED
    return ", ".join(named) + (f", +{more} more" if more > 0 else "")


def traffic_defaults(
    choices: Choices, traffic: TrafficProfile, report: ProbeReport | None
) -> TrafficDefaults:
    """`choices` with mix and target rate from `traffic` where the user gave none; the line says which."""
    measured = {route_name(e.method, e.path) for e in (report.endpoints if report else ())}
    shares = traffic.shares()
    mix = {name: share for name, share in shares.items() if name in measured}
    missing = {name: share for name, share in shares.items() if name not in measured}
    taken: list[str] = []
    kept: list[str] = []
    if choices.mix is not None:
        kept.append("--mix")
    elif mix:
        choices = replace(choices, mix=mix)
        taken.append(f"--mix from {traffic.used:,} requests ({_routes_text(mix)})")
    if choices.target_rps is not None:
        kept.append("--target-rps")
    elif traffic.peak is not None:
        peak = traffic.peak
        choices = replace(choices, target_rps=peak.rps)
        taken.append(
            f"--target-rps {peak.rps:g} (the busiest {peak.window_s} s of the log, from {peak.start})"
        )
    line = "access log: " + (" and ".join(taken) if taken else "nothing taken")
    if kept:
        line += f"; {' and '.join(kept)} as given"
    if traffic.peak is None and choices.target_rps is None:
        line += f"; no --target-rps from it: {traffic.peak_unknown}"
    notes: tuple[str, ...] = ()
    if missing and report is not None:
        notes = (
            f"{_pct(sum(missing.values()))} of the logged requests went to routes the probe did not"
            f" measure ({_routes_text(missing)}), left out of the mix: probe them (-e 'METHOD /path',"
            " --unsafe) to count them",
        )
    return TrafficDefaults(choices, line, notes)


def with_traffic_input(plan: Plan, defaults: TrafficDefaults) -> Plan:
    """The plan with the access log among its inputs (gunicorn.conf.py's header lists them)."""
    return replace(plan, inputs=(*plan.inputs, defaults.line))
