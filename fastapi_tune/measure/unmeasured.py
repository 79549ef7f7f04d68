"""When a probe measured nothing: which error the user reads, decided from what happened to each route.

A route that answers 500, hangs past --timeout or is refused at its preflight is the most important
finding of a probe, not a usage mistake: the report is written with every route's status, time and
error, and the probe ends with NOTHING_MEASURED. Only when no request could even be built is the
cause the input: a document whose schemas cannot be filled (BAD_INPUT, naming the field), or a
selection that leaves nothing to send (USAGE). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fastapi_tune.core.errors import BadInputError, FastapiTuneError, NothingMeasuredError, UsageError
from fastapi_tune.discover.openapi import SkipCause
from fastapi_tune.measure.report import Endpoint, ProbeReport

# Routes named in the one-line error; the report and the screen above it list every one.
NAMED_ROUTES: Final = 3
# Causes that mean a request was sent (or would have been, but for the budget) and nothing came of it.
_TRIED: Final = frozenset({SkipCause.PREFLIGHT, SkipCause.BUDGET, SkipCause.UNMEASURED})


def measured(e: Endpoint) -> bool:
    """At least one level got a successful response: there is something to judge."""
    return any(lv.requests > lv.errors for lv in e.levels)


def _why(e: Endpoint) -> str:
    detail = f" ({e.stop_detail})" if e.stop_detail else ""
    return f"{e.method} {e.path}: no successful response, the ladder stopped: {e.stop_reason}{detail}"


def _listed(lines: Sequence[str]) -> str:
    shown = "; ".join(lines[:NAMED_ROUTES])
    more = len(lines) - NAMED_ROUTES
    return shown + (f"; and {more} more" if more > 0 else "")


def nothing_measured(report: ProbeReport) -> FastapiTuneError | None:
    """The error for a probe that measured no route (None when one was measured, or on Ctrl-C).

    Each route's own reason is in the report's `skipped` (preflight status and time) or its
    endpoint (levels that failed or stalled); the message names the first few.
    """
    if report.interrupted or any(measured(e) for e in report.endpoints):
        return None
    ran = [_why(e) for e in report.endpoints]
    tried = [f"{s.method} {s.path}: {s.reason}" for s in report.skipped if s.cause in _TRIED]
    if ran or tried:
        return NothingMeasuredError(f"nothing measured: every endpoint failed: {_listed([*ran, *tried])}")
    schema = [f"{s.method} {s.path}: {s.reason}" for s in report.skipped if s.cause is SkipCause.SCHEMA]
    if schema:
        return BadInputError(f"the OpenAPI document cannot fill any endpoint: {_listed(schema)}")
    return UsageError(
        "nothing to probe: no operation could be filled"
        + (
            f" ({_listed([f'{s.method} {s.path}: {s.reason}' for s in report.skipped])})"
            if report.skipped
            else ""
        )
        + "; name endpoints with -e 'GET /path', or pass --unsafe for POST/PUT/PATCH/DELETE"
    )
