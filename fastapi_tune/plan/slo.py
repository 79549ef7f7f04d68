"""Service-level objectives: `--slo "p99<200ms,errors<1%"` parsed once, and judged against a measurement.

Pure: no I/O. An objective is a set of latency bounds (percentiles of the latency users see, measured
from each request's start in an open loop, a wait for a connection included) and an error-rate
bound. `meets` says whether a measurement meets it and, when not, by how much, in words a CI log can show.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from fastapi_tune.core.errors import UsageError

__all__ = [
    "DEFAULT_MAX_ERROR_RATIO",
    "PERCENTILES",
    "LatencyBound",
    "Measured",
    "Objective",
    "meets",
    "min_samples",
    "parse_slo",
]

# The percentiles an objective may name: the usual SLO vocabulary (p50/p90/p95/p99/p99.9).
PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0, 99.9)
# An objective that names only latency still fails a run where requests fail: 1% is k6's and the
# Google SRE book's customary error budget, and what `export --slo` assumes when errors are not named.
DEFAULT_MAX_ERROR_RATIO: Final = 0.01

_PART = re.compile(
    r"^\s*(?:(?P<p>p(?:50|90|95|99|99\.9))\s*<\s*(?P<lat>[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s)?"
    r"|errors\s*<\s*(?P<err>[0-9]*\.?[0-9]+)\s*(?P<pct>%)?)\s*$"
)
_EXAMPLE: Final = "e.g. 'p99<200ms', 'p50<50ms,p99.9<1s,errors<0.5%'"


@dataclass(frozen=True)
class LatencyBound:
    """The q-th percentile of latency must stay below limit_ms."""

    percentile: float  # one of PERCENTILES
    limit_ms: float

    @property
    def name(self) -> str:
        return f"p{self.percentile:g}"


@dataclass(frozen=True)
class Objective:
    """Latency bounds and an error-rate bound; `text` is how the user wrote it (for messages)."""

    latency: tuple[LatencyBound, ...]
    max_error_ratio: float  # 0.01 = 1%
    errors_stated: bool  # False: DEFAULT_MAX_ERROR_RATIO applies because the user named none
    text: str

    @property
    def largest_bound_s(self) -> float:
        """The loosest latency bound, in seconds: what open-loop timeouts and step lengths scale with."""
        return max(b.limit_ms for b in self.latency) / 1000.0

    def describe(self) -> str:
        """The objective as it is judged, the default error bound made visible."""
        parts = [f"{b.name}<{b.limit_ms:g}ms" for b in self.latency]
        parts.append(f"errors<{self.max_error_ratio * 100:g}%" + ("" if self.errors_stated else " (default)"))
        return ", ".join(parts)


@dataclass(frozen=True)
class Measured:
    """What an objective is judged on: one run (or several rounds merged) at a fixed arrival rate."""

    percentiles_ms: Mapping[float, float]  # at least the objective's percentiles
    requests: int  # requests the run meant to send (intended starts)
    failed: int  # error statuses, transport errors, timeouts, dropped starts
    samples: int  # responses timed

    @property
    def error_ratio(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


def parse_slo(text: str) -> Objective:
    """Parse "p99<200ms,errors<1%" (comma-separated; latency in ms or s; errors in % or a fraction)."""
    bounds: dict[float, LatencyBound] = {}
    max_errors: float | None = None
    for part in text.split(","):
        m = _PART.match(part)
        if m is None:
            raise UsageError(f"--slo {text!r}: cannot read {part.strip()!r}; {_EXAMPLE}")
        if m.group("p") is not None:
            q = float(m.group("p")[1:])
            value = float(m.group("lat")) * (1000.0 if m.group("unit") == "s" else 1.0)
            if q in bounds or value <= 0:
                raise UsageError(f"--slo {text!r}: {m.group('p')} must be named once, with a limit > 0")
            bounds[q] = LatencyBound(q, value)
        else:
            ratio = float(m.group("err")) / (100.0 if m.group("pct") else 1.0)
            if max_errors is not None or not 0 <= ratio < 1:
                raise UsageError(f"--slo {text!r}: errors must be named once, below 100%")
            max_errors = ratio
    if not bounds:
        raise UsageError(f"--slo {text!r}: name at least one latency percentile; {_EXAMPLE}")
    return Objective(
        latency=tuple(bounds[q] for q in sorted(bounds)),
        max_error_ratio=DEFAULT_MAX_ERROR_RATIO if max_errors is None else max_errors,
        errors_stated=max_errors is not None,
        text=text,
    )


def min_samples(percentile: float) -> int:
    """Responses for a percentile to be more than the maximum: ten beyond it (p99: 1000, p99.9: 10000)."""
    return math.ceil(10 * 100 / (100 - percentile)) if percentile < 100 else 1


def meets(objective: Objective, measured: Measured) -> tuple[bool, str]:
    """Whether `measured` meets `objective`, and the shortfall (or the margin) as one line."""
    misses: list[str] = []
    within: list[str] = []
    for b in objective.latency:
        value = measured.percentiles_ms.get(b.percentile)
        if value is None or math.isnan(value):
            misses.append(f"{b.name} not measured (no responses)")
            continue
        thin = (
            "" if measured.samples >= min_samples(b.percentile) else f" (from {measured.samples} responses)"
        )
        if value < b.limit_ms:
            within.append(f"{b.name} {value:.0f} ms < {b.limit_ms:g} ms{thin}")
        else:
            over = value / b.limit_ms - 1
            misses.append(f"{b.name} {value:.0f} ms >= {b.limit_ms:g} ms (+{over:.0%}){thin}")
    ratio = measured.error_ratio
    errors = f"errors {ratio:.2%} ({measured.failed} of {measured.requests})"
    if ratio < objective.max_error_ratio or (ratio == 0 and objective.max_error_ratio == 0):
        within.append(f"{errors} < {objective.max_error_ratio:.2%}")
    else:
        misses.append(f"{errors} >= {objective.max_error_ratio:.2%}")
    if misses:
        return False, "missed: " + "; ".join(misses)
    return True, "met: " + "; ".join(within)
