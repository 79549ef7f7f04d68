"""Statistics every measurement shares: percentiles, medians and the summary of one burst.

The probe's levels and verify's runs are both summaries of a burst; they count requests, errors
and percentiles here, the same way, so a p99 in one means what it means in the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi_tune.core.rules import P99_MIN_SAMPLES
from fastapi_tune.measure.loadgen import BurstResult


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100); NaN for no values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count); NaN for none."""
    s = sorted(values)
    if not s:
        return math.nan
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def errors_by_kind(status_counts: Mapping[int, int], transport: Mapping[str, int]) -> dict[str, int]:
    """Transport errors and error statuses, by kind: 429, 4xx, 5xx, timeout, connect, reset, other."""
    kinds: dict[str, int] = {k: v for k, v in transport.items() if v}
    for status, count in status_counts.items():
        kind = "429" if status == 429 else "5xx" if status >= 500 else "4xx" if status >= 400 else None
        if kind is not None and count:
            kinds[kind] = kinds.get(kind, 0) + count
    return kinds


@dataclass(frozen=True)
class BurstSummary:
    """One burst's counts and latency distribution (milliseconds)."""

    requests: int  # completed in the counted window: successes, error statuses, transport errors
    ok: int
    errors: int
    errors_by_kind: Mapping[str, int]
    errors_by_status: Mapping[int, int]
    throughput_rps: float  # successful responses per second of the window
    p50_ms: float | None  # latencies cover every response, errors included
    p90_ms: float | None
    p99_ms: float | None  # None below P99_MIN_SAMPLES: one or two requests' luck, not a percentile
    max_ms: float | None
    mean_ms: float | None
    samples: int
    client_cpu_cores: float


def summarize(result: BurstResult) -> BurstSummary:
    """Count one burst: the one place where ok, errors and percentiles are defined."""
    kinds = errors_by_kind(result.status_counts, result.errors_by_kind)
    ok = sum(c for s, c in result.status_counts.items() if s < 400)
    duration = max(result.duration_s, 1e-9)
    lat = sorted(result.latencies_ms)
    have = bool(lat)
    return BurstSummary(
        requests=sum(result.status_counts.values()) + sum(result.errors_by_kind.values()),
        ok=ok,
        errors=sum(kinds.values()),
        errors_by_kind=kinds,
        errors_by_status={s: c for s, c in result.status_counts.items() if s >= 400 and c},
        throughput_rps=ok / duration,
        p50_ms=percentile(lat, 50) if have else None,
        p90_ms=percentile(lat, 90) if have else None,
        p99_ms=percentile(lat, 99) if len(lat) >= P99_MIN_SAMPLES else None,
        max_ms=lat[-1] if have else None,
        mean_ms=sum(lat) / len(lat) if have else None,
        samples=len(lat),
        client_cpu_cores=result.client_cpu_s / duration,
    )
