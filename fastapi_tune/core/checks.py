"""Numbers from flags, checked where they enter: finite, and within a range that can be honoured.

Python's float() accepts 'nan' and 'inf', and NaN passes every `<= 0` test, so a bare
"positive" check lets `--duration nan` run forever. Every bound here is the largest value the
tool can keep its promises with (a time budget, the open-file limit), named in the README.
"""

from __future__ import annotations

import math
import resource
from typing import Final

from fastapi_tune.core.errors import UsageError

# Concurrency: one socket per connection in one Python thread; past a few thousand the client
# itself is the bottleneck (FIELD-NOTES: ~0.03 ms CPU per request, one core).
MAX_CONCURRENCY: Final = 4096
# Seconds: a day is longer than any probe or verify run anyone means.
MAX_SECONDS: Final = 86_400.0
# The smallest time budget a probe can spend on anything: one level is 0.2 s warm-up + 0.5 s.
MIN_BUDGET_S: Final = 1.0
# Per-request timeout: an hour is already a hung request.
MAX_TIMEOUT_S: Final = 3600.0
MIN_TIMEOUT_S: Final = 0.05
# Requests/s for replica sizing: beyond any single service's traffic.
MAX_RPS: Final = 1e9
MAX_REPEAT: Final = 100
MAX_REQUESTS: Final = 10**9
# File descriptors the process keeps besides the load's sockets (stdio, the server watcher,
# logs, httpx's pool during discovery).
_FD_RESERVE: Final = 64


def number(value: float, flag: str, lo: float, hi: float, unit: str = "") -> float:
    """`value` if finite and within [lo, hi], else a UsageError naming the flag and the range."""
    if isinstance(value, bool) or not math.isfinite(value) or not lo <= value <= hi:
        raise UsageError(f"{flag} {value:g}: expected a number from {lo:g} to {hi:g}{unit}")
    return float(value)


def whole(value: int, flag: str, lo: int, hi: int) -> int:
    """`value` if within [lo, hi], else a UsageError naming the flag and the range."""
    if isinstance(value, bool) or not lo <= value <= hi:
        raise UsageError(f"{flag} {value}: expected a whole number from {lo} to {hi}")
    return value


def open_files_allow(concurrency: int, flag: str) -> None:
    """Refuse a concurrency the open-file limit (ulimit -n) cannot hold, before any socket is opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = concurrency + _FD_RESERVE
    if (
        soft != resource.RLIM_INFINITY
        and needed > soft
        and (hard == resource.RLIM_INFINITY or hard >= needed)
    ):
        # The soft limit is a default (often 1024), not a decision: raise it as load tools do.
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise UsageError(
            f"{flag} {concurrency}: the open-file limit is {soft} (ulimit -n); raise it or use at most"
            f" {max(1, soft - _FD_RESERVE)}"
        )
