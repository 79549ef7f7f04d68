"""Generated access logs of a known mix and peak, in every format the reader knows (tests, benchmarks).

Arrivals: BASE_RPS requests every second, and BURST_RPS for BURST_S seconds in the middle, so the
busiest 60-second window holds exactly BURST_RPS x 60 matched requests. Routes are picked from a
fixed cycle of weights, so the shares are exact. Lines are written slightly out of order (a line
may come up to JITTER_S seconds late), and extra lines are mixed in that must not count: requests
no route serves (EXTRA share), garbage (GARBAGE share), and secrets in every query string.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Final

# The app's routes as its OpenAPI document names them, and their weights in the traffic.
ROUTES: Final = (
    ("GET", "/orders/{oid}"),
    ("GET", "/items"),
    ("POST", "/login"),
    ("GET", "/users/me"),
    ("GET", "/users/{uid}"),
    ("GET", "/health"),
)
# route -> (weight out of 20, a concrete path, its duration in ms)
MIX: Final = {
    "GET /orders/{oid}": (9, "/orders/{n}", 12.0),
    "GET /items": (5, "/items", 40.0),
    "POST /login": (3, "/login", 150.0),
    "GET /users/me": (2, "/users/me", 5.0),
    "GET /users/{uid}": (1, "/users/{n}", 8.0),
}
SHARES: Final = {route: w / 20 for route, (w, _, _) in MIX.items()}
UNMATCHED_PATHS: Final = ("/favicon.ico", "/wp-login.php", "/.env")
SECRETS: Final = ("SeCrEtKeY42", "T0kenValue99", "Pa55w0rdXyz")
QUERY: Final = f"?api_key={SECRETS[0]}&token={SECRETS[1]}&password={SECRETS[2]}&page=2"
FORMATS: Final = ("nginx", "gunicorn", "uvicorn", "json")
START: Final = datetime(2026, 3, 14, 9, 0, 0, tzinfo=UTC)
JITTER_S: Final = 3


@dataclass(frozen=True)
class Shape:
    """How much traffic, and where its peak is."""

    seconds: int = 600
    base_rps: int = 20
    burst_rps: int = 50
    burst_s: int = 90
    extra: float = 0.05  # unmatched lines, as a share of all request lines
    garbage: float = 0.01  # unreadable lines

    @property
    def burst_start(self) -> int:
        return self.seconds // 2

    def rate(self, second: int) -> int:
        return (
            self.burst_rps if self.burst_start <= second < self.burst_start + self.burst_s else self.base_rps
        )

    @property
    def requests(self) -> int:
        """Matched requests in the whole log."""
        return sum(self.rate(s) for s in range(self.seconds))

    @property
    def peak_rps(self) -> float:
        return float(self.burst_rps if self.burst_s >= 60 else self.base_rps)

    def for_lines(self, lines: int) -> Shape:
        """The same burst in a log long enough for about `lines` matched requests."""
        quiet = max(0, lines - self.burst_rps * self.burst_s) // self.base_rps
        return replace(self, seconds=max(2 * self.burst_s, quiet + self.burst_s))


def _cycle() -> list[str]:
    routes = [route for route, (w, _, _) in MIX.items() for _ in range(w)]
    random.Random(7).shuffle(routes)
    return routes


def _events(shape: Shape) -> Iterator[tuple[float, str, str, str, int, float]]:
    """(time, METHOD, target with query, route or "", status, duration ms), roughly in time order."""
    rng = random.Random(26)
    cycle = _cycle()
    k = 0
    pending: list[tuple[float, str, str, str, int, float]] = []
    for second in range(shape.seconds):
        n = shape.rate(second)
        for i in range(n):
            route = cycle[k % len(cycle)]
            k += 1
            _, concrete, ms = MIX[route]
            method = route.split(" ")[0]
            path = concrete.format(n=rng.randrange(1, 10**6))
            target = path + (QUERY if k % 7 == 0 else "")
            status = 200 if k % 50 else 404
            pending.append((second + i / n, method, target, route, status, ms * rng.uniform(0.9, 1.1)))
            if rng.random() < shape.extra / (1 - shape.extra):
                junk = UNMATCHED_PATHS[k % len(UNMATCHED_PATHS)] + (QUERY if k % 2 else "")
                pending.append((second + i / n, "GET", junk, "", 404, 1.0))
        # Written out of order: this second's lines go out with the lines of up to JITTER_S later.
        if second % (JITTER_S + 1) == JITTER_S or second == shape.seconds - 1:
            rng.shuffle(pending)
            yield from pending
            pending = []


def _garbage(rng: random.Random) -> str:
    return rng.choice(
        (
            "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            f"Traceback (most recent call last): GET /orders/1{QUERY}",
            '{"event": "cache warm", "password": "' + SECRETS[2] + '"}',
            "-",
        )
    )


def _when(t: float, tz: timezone) -> datetime:
    return (START + timedelta(seconds=t)).astimezone(tz)


def line(fmt: str, t: float, method: str, target: str, status: int, ms: float) -> str:
    """One request as `fmt` writes it."""
    if fmt == "nginx":
        when = _when(t, UTC).strftime("%d/%b/%Y:%H:%M:%S %z")
        request = f'"{method} {target} HTTP/1.1"'
        return f'10.0.0.7 - - [{when}] {request} {status} 512 "-" "curl/8.5" rt={ms / 1000:.3f}'
    if fmt == "gunicorn":
        when = _when(t, timezone(timedelta(hours=-7))).strftime("%d/%b/%Y:%H:%M:%S %z")
        return f'127.0.0.1 - - [{when}] "{method} {target} HTTP/1.1" {status} - "-" "python-httpx/0.28"'
    if fmt == "uvicorn":
        phrase = "OK" if status == 200 else "Not Found"
        return f'INFO:     127.0.0.1:51234 - "{method} {target} HTTP/1.1" {status} {phrase}'
    record = {
        "time": _when(t, UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "method": method,
        "path": target,
        "status": status,
        "duration_ms": round(ms, 3),
    }
    return json.dumps(record)


@dataclass(frozen=True)
class Written:
    """What a generated log holds."""

    shape: Shape
    requests: int  # lines of the app's routes
    unmatched: int  # request lines no route serves
    garbage: int  # unreadable lines

    @property
    def lines(self) -> int:
        return self.requests + self.unmatched + self.garbage


def write_log(path: Path, fmt: str, shape: Shape | None = None, compress: bool = False) -> Written:
    """Write a log of `shape` in `fmt` (gzip with `compress`); what it holds."""
    shape = shape or Shape()
    rng = random.Random(3)
    requests = unmatched = garbage = 0
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        for t, method, target, route, status, ms in _events(shape):
            f.write(line(fmt, t, method, target, status, ms) + "\n")
            requests += bool(route)
            unmatched += not route
            if rng.random() < shape.garbage:
                f.write(_garbage(rng) + "\n")
                garbage += 1
    return Written(shape, requests, unmatched, garbage)


def log_text(fmt: str, shape: Shape) -> str:
    """The log as one string (for stdin)."""
    return "".join(line(fmt, t, m, target, s, ms) + "\n" for t, m, target, _, s, ms in _events(shape))


def weighted_log(path: Path, weights: dict[str, int], seconds: int = 120) -> None:
    """An nginx log: each second, `weights[p]` GETs of each path `p` (a query with secrets on some)."""
    with path.open("w") as f:
        for second in range(seconds):
            for p, n in weights.items():
                for i in range(n):
                    target = p + (QUERY if i % 5 == 0 else "")
                    f.write(line("nginx", second + i / max(n, 1), "GET", target, 200, 3.0) + "\n")
