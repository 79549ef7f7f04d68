"""Hand the probe to Locust or k6: a ready-to-run script for load one machine cannot generate.

`spec_from_report` turns a probe report (and an optional traffic mix) into a `LoadSpec`; the two
renderers turn the spec into text. Pure functions, no I/O: the CLI writes the file.

Every request is tagged with its route ("GET /orders/{oid}", Locust `name=`, k6 `tags.name`) and
every ladder step with its concurrency (k6 `tags.vus`; Locust: the step in the name, see
render/locustfile.py), so `import_load` and `import_locust` map the results back to endpoints and
levels. The Locust script is rendered by render/locustfile.py, the k6 script here.

Secrets never reach the file: the spec holds header NAMES only; the script reads each value from
an environment variable (see `header_env_var`) at run time and refuses to start without it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from fastapi_tune.core.errors import UsageError
from fastapi_tune.discover.openapi import route_name
from fastapi_tune.measure.import_load import K6_WORKERS_TAG
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.plan.slo import parse_slo

# A step shorter than this leaves nothing counted once the warm-up is cut.
MIN_STEP_SECONDS: Final = 3.0
# Arrival-rate runs: in-flight requests = rate x latency (Little's law). Users/VUs are sized for
# the whole objective latency with 2x headroom, so the generator never becomes the limit.
RATE_HEADROOM: Final = 2.0
# How long the last requests of a route's top step may take to end before its users stop (Locust
# drops a request in flight when its user stops; k6 drops one past the scenario's gracefulStop):
# its top level over the most throughput the probe saw (Little's law), with a margin, clamped.
DRAIN_MIN_S: Final = 2.0
DRAIN_MAX_S: Final = 60.0
DRAIN_MARGIN: Final = 1.5
HEADER_ENV_PREFIX: Final = "FASTAPI_TUNE_HEADER_"


@dataclass(frozen=True)
class LoadEndpoint:
    """One route to drive: what to send and how often relative to the others."""

    name: str  # the route tag, "GET /orders/{oid}": the key results are mapped back by
    method: str
    path: str  # relative to the spec's base URL, query included: "/orders/1?full=true"
    weight: float  # share of the mix (any positive scale)
    body: bytes | None = None
    content_type: str | None = None  # sent with the body, e.g. "application/json"
    drain_s: float = DRAIN_MIN_S  # after its last step, how long its slowest requests may take to end


@dataclass(frozen=True)
class ScriptLadder:
    """A closed-loop concurrency ladder, like the probe's: each level held `seconds`."""

    levels: tuple[int, ...]
    seconds: float
    # Each endpoint alone, one after the other (what classification needs: routes sharing one
    # server's event loop slow each other down), or the whole mix at every level.
    isolate: bool = True


@dataclass(frozen=True)
class ScriptObjective:
    """What a run at a fixed arrival rate must meet (k6 thresholds, Locust's exit code)."""

    p99_ms: float
    max_error_ratio: float  # 0.01 = 1%


@dataclass(frozen=True)
class ArrivalRate:
    """An open-loop run: `rps` requests per second of the mix for `seconds`, judged by `objective`."""

    rps: float
    seconds: float
    objective: ScriptObjective


@dataclass(frozen=True)
class LoadSpec:
    """Everything a load script needs, and nothing secret."""

    base_url: str
    endpoints: tuple[LoadEndpoint, ...]
    pattern: ScriptLadder | ArrivalRate
    header_names: tuple[str, ...] = ()  # values come from header_env_var(name) at run time
    # The server's worker processes as the probe saw them: written into the script so that its
    # results are judged against the same server (import --workers overrides it). None: unknown.
    server_workers: int | None = None


def header_env_var(name: str) -> str:
    """The variable holding a header's value: Authorization -> FASTAPI_TUNE_HEADER_AUTHORIZATION."""
    return HEADER_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def rate_users(rate: ArrivalRate) -> int:
    """Users (Locust) or VUs (k6) to hold `rps` when each request may take the objective's p99."""
    return max(1, math.ceil(rate.rps * rate.objective.p99_ms / 1000 * RATE_HEADROOM))


# ---------------------------------------------------------------------------------------
# From a probe report


def _relative(url: str, fallback: str) -> str:
    parts = urlsplit(url)
    path = parts.path or fallback
    return f"{path}?{parts.query}" if parts.query else path


def _check_pattern(pattern: ScriptLadder | ArrivalRate) -> None:
    if isinstance(pattern, ScriptLadder):
        if not pattern.levels or min(pattern.levels) < 1:
            raise UsageError("the ladder needs at least one concurrency level, each >= 1")
        if pattern.seconds < MIN_STEP_SECONDS:
            raise UsageError(
                f"each ladder step needs at least {MIN_STEP_SECONDS:.0f} s (got {pattern.seconds:g})"
            )
        return
    if pattern.rps <= 0 or pattern.seconds <= 0:
        raise UsageError("--rate and the duration must be positive")
    if pattern.objective.p99_ms <= 0 or not 0 <= pattern.objective.max_error_ratio < 1:
        raise UsageError("the objective needs p99 > 0 ms and an error rate between 0 and 1")


def _weights(report: ProbeReport, mix: Mapping[str, float] | None) -> dict[str, float]:
    names = [route_name(e.method, e.path) for e in report.endpoints]
    if mix is None:
        return dict.fromkeys(names, 1.0)
    unknown = sorted(set(mix) - set(names))
    if unknown:
        raise UsageError(f"--mix names {', '.join(unknown)}: not in the report ({', '.join(names)})")
    if any(w < 0 for w in mix.values()) or not any(w > 0 for w in mix.values()):
        raise UsageError("--mix weights must be >= 0 and at least one > 0")
    return {n: float(mix[n]) for n in names if mix.get(n, 0) > 0}


def spec_from_report(
    report: ProbeReport,
    mix: Mapping[str, float] | None = None,
    *,
    levels: Sequence[int] | None = None,
    seconds: float = 10.0,
    isolate: bool = True,
    rate: float | None = None,
    objective: ScriptObjective | None = None,
    header_names: Sequence[str] = (),
    bodies: Mapping[str, tuple[bytes, str]] | None = None,
) -> LoadSpec:
    """A load spec for the report's endpoints.

    `mix` maps route names ("GET /x") to weights; routes left out are not driven (None: all, equal).
    Without `rate` the pattern is a ladder over `levels` (default: every concurrency the probe
    measured); with `rate` it is an arrival rate judged by `objective` (required then).
    `bodies` maps route names to (body, content type).
    """
    if not report.endpoints:
        raise UsageError("the report has no endpoints to export")
    weights = _weights(report, mix)
    pattern: ScriptLadder | ArrivalRate
    if rate is None:
        measured = sorted({lv.concurrency for e in report.endpoints for lv in e.levels})
        pattern = ScriptLadder(
            levels=tuple(sorted(set(levels or measured or [1]))), seconds=seconds, isolate=isolate
        )
    else:
        if objective is None:
            raise UsageError("--rate needs an objective (--slo p99<300ms,errors<1%)")
        pattern = ArrivalRate(rps=rate, seconds=seconds, objective=objective)
    top = max(pattern.levels) if isinstance(pattern, ScriptLadder) else rate_users(pattern)
    endpoints = tuple(
        LoadEndpoint(
            name=name,
            method=e.method.upper(),
            path=_relative(e.url, e.path),
            weight=weights[name],
            body=(bodies or {}).get(name, (None, None))[0],
            content_type=(bodies or {}).get(name, (None, None))[1],
            drain_s=drain_seconds(top, max((lv.throughput_rps for lv in e.levels), default=0.0)),
        )
        for e in report.endpoints
        if (name := route_name(e.method, e.path)) in weights
    )
    _check_pattern(pattern)
    base = urlsplit(report.target)
    return LoadSpec(
        base_url=f"{base.scheme}://{base.netloc}",
        endpoints=endpoints,
        pattern=pattern,
        header_names=tuple(header_names),
        server_workers=report.server.workers,
    )


def drain_seconds(users: int, best_rps: float) -> float:
    """How long `users` requests in flight may take to end, at most `best_rps` completing a second."""
    if best_rps <= 0:
        return DRAIN_MAX_S
    return round(min(DRAIN_MAX_S, max(DRAIN_MIN_S, DRAIN_MARGIN * users / best_rps)), 1)


def parse_mix(text: str) -> dict[str, float]:
    """Parse --mix "GET /orders/{oid}=8,POST /login=1" into route name -> weight."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.rpartition("=")
        try:
            mix[route_name(*name.strip().split(" ", 1))] = float(weight)
        except (TypeError, ValueError):
            raise UsageError(f"--mix {text!r}: expected e.g. 'GET /orders/{{oid}}=8,POST /login=1'") from None
        if not sep:
            raise UsageError(f"--mix {text!r}: expected e.g. 'GET /orders/{{oid}}=8,POST /login=1'")
    return mix


# What an exported file checks when the objective names no latency (slo.py reads the same grammar).
DEFAULT_EXPORT_P99_MS: Final = 1000.0


def parse_objective(text: str) -> ScriptObjective:
    """Parse "p99<300ms,errors<1%" with slo.parse_slo; the files check p99 and errors only."""
    slo = parse_slo(text)
    others = [b.name for b in slo.latency if b.name != "p99"]
    if others:
        raise UsageError(
            f"--slo {text!r}: the exported files check p99 and errors; {others[0]} is not exported"
        )
    p99 = next((b.limit_ms for b in slo.latency if b.name == "p99"), DEFAULT_EXPORT_P99_MS)
    return ScriptObjective(p99_ms=p99, max_error_ratio=slo.max_error_ratio)


# ---------------------------------------------------------------------------------------
# Shared text


def describe_spec(spec: LoadSpec) -> str:
    p = spec.pattern
    routes = ", ".join(f"{e.name} (weight {e.weight:g})" for e in spec.endpoints)
    if isinstance(p, ScriptLadder):
        levels = ",".join(str(n) for n in p.levels)
        how = "each route alone, one after the other" if p.isolate else "the whole mix at every step"
        total = p.seconds * len(p.levels) * (len(spec.endpoints) if p.isolate else 1)
        return (
            f"Closed-loop ladder, {how}: concurrency {levels}, {p.seconds:g} s per step "
            f"(about {total:.0f} s in all).\nRoutes: {routes}."
        )
    o = p.objective
    return (
        f"Open loop: {p.rps:g} requests/s of the mix for {p.seconds:g} s; objective p99 < {o.p99_ms:g} ms "
        f"and errors < {o.max_error_ratio:.2%}.\nRoutes: {routes}."
    )


def header_lines(spec: LoadSpec, comment: str) -> list[str]:
    if not spec.header_names:
        return []
    lines = [f"{comment} Header values are read from the environment (never stored in this file):"]
    lines += [f"{comment}   export {header_env_var(n)}='...'   # {n}" for n in spec.header_names]
    return lines


# ---------------------------------------------------------------------------------------
# k6


def _js(value: object) -> str:
    """A JavaScript literal (JSON is valid JavaScript; ensure_ascii keeps U+2028 out)."""
    return json.dumps(value)


def _k6_body(body: bytes | None) -> str:
    if body is None:
        return "null"
    try:
        return _js(body.decode("utf-8"))
    except UnicodeDecodeError:
        return f"new Uint8Array({_js(list(body))}).buffer"


def _k6_doc(spec: LoadSpec) -> list[str]:
    rate = isinstance(spec.pattern, ArrivalRate)
    end = (
        "k6 exits 99 when a threshold (the objective) is missed."
        if rate
        else "then: fastapi-tune import k6 out.json -o report.json"
    )
    return [
        "// k6 load test exported by fastapi-tune.",
        "//",
        *[f"// {line}" for line in describe_spec(spec).splitlines()],
        "//",
        "// One machine:",
        "//   k6 run --no-usage-report --out json=out.json --summary-export summary.json THIS_FILE",
        "// Distributed: the same file on N machines started together, each with its share, e.g. N=2:",
        "//   k6 run --no-usage-report --execution-segment 0:1/2 --execution-segment-sequence 0,1/2,1 \\",
        "//     --out json=out-1.json THIS_FILE      # machine 1",
        "//   k6 run --no-usage-report --execution-segment 1/2:1 --execution-segment-sequence 0,1/2,1 \\",
        "//     --out json=out-2.json THIS_FILE      # machine 2",
        "// (import all the out-*.json files together), or on Kubernetes the k6-operator's",
        "// TestRun with `parallelism: N` does the same split.",
        f"// {end}",
        f"// Another target: -e BASE_URL=URL (default {spec.base_url}).",
        *header_lines(spec, "//"),
    ]


def _k6_scenarios(spec: LoadSpec) -> list[str]:
    p = spec.pattern
    if isinstance(p, ArrivalRate):
        # k6 wants an integer rate per time unit: a fractional rps is given per minute.
        per_s = float(p.rps).is_integer()
        rate, unit = (int(p.rps), "1s") if per_s else (round(p.rps * 60), "1m")
        users = rate_users(p)
        return [
            "    mix: {",
            "      executor: 'constant-arrival-rate', exec: 'mix',",
            f"      rate: {rate}, timeUnit: '{unit}', duration: '{p.seconds:g}s',",
            f"      preAllocatedVUs: {users}, maxVUs: {2 * users},",
            "    },",
        ]
    # Instant steps: a 0 s stage jumps to the level, a SECONDS stage holds it.
    stages = "STAGES"
    if not p.isolate:
        drain = max(e.drain_s for e in spec.endpoints)
        return [
            "    mix: {",
            f"      executor: 'ramping-vus', exec: 'mix', startVUs: 0, stages: {stages},",
            f"      gracefulRampDown: '0s', gracefulStop: '{drain:g}s',",
            "    },",
        ]
    out: list[str] = []
    # Each route's ladder starts after the previous one and its graceful stop (its drain).
    start = 0.0
    for i, e in enumerate(spec.endpoints):
        out += [
            f"    route_{i}: {{",
            f"      executor: 'ramping-vus', exec: 'route_{i}', startVUs: 0, startTime: '{start:g}s',",
            f"      stages: {stages}, gracefulRampDown: '0s', gracefulStop: '{e.drain_s:g}s',",
            "    },",
        ]
        start += p.seconds * len(p.levels) + e.drain_s
    return out


def _k6_exec(spec: LoadSpec) -> list[str]:
    p = spec.pattern
    tags = "{}" if isinstance(p, ArrivalRate) else "{ vus: String(level()) }"
    out: list[str] = []
    if isinstance(p, ScriptLadder):
        out += [
            "// The ladder step in effect, the same on every instance of a distributed run: the results",
            "// are grouped by it (tags.vus) when imported.",
            "function level() {",
            "  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;",
            "  return LEVELS[Math.min(Math.floor(elapsed / SECONDS), LEVELS.length - 1)];",
            "}",
            "",
        ]
    if isinstance(p, ScriptLadder) and p.isolate:
        for i in range(len(spec.endpoints)):
            out += [f"export function route_{i}() {{", f"  send(ROUTES[{i}], {tags});", "}", ""]
        return out
    return [
        *out,
        "const TOTAL_WEIGHT = ROUTES.reduce((sum, r) => sum + r.weight, 0);",
        "",
        "export function mix() {",
        "  let pick = Math.random() * TOTAL_WEIGHT;",
        "  const route = ROUTES.find((r) => (pick -= r.weight) < 0) || ROUTES[ROUTES.length - 1];",
        f"  send(route, {tags});",
        "}",
    ]


def render_k6(spec: LoadSpec) -> str:
    """A k6 script for the spec (see the file's own top comment for how to run it)."""
    p = spec.pattern
    routes = [
        f"  {{ name: {_js(e.name)}, method: {_js(e.method)}, path: {_js(e.path)}, weight: {e.weight!r}, "
        f"body: {_k6_body(e.body)}, contentType: {_js(e.content_type)} }},"
        for e in spec.endpoints
    ]
    header_vars = ", ".join(f"[{_js(n)}, {_js(header_env_var(n))}]" for n in spec.header_names)
    lines = [
        *_k6_doc(spec),
        "",
        "import http from 'k6/http';",
        "import exec from 'k6/execution';",
        "",
        f"const BASE_URL = __ENV.BASE_URL || {_js(spec.base_url)};",
        "const HEADERS = {};",
        f"for (const [name, variable] of [{header_vars}]) {{",
        "  if (__ENV[variable] === undefined) {",
        "    throw new Error(`set ${variable} to the value of the ${name} header`);",
        "  }",
        "  HEADERS[name] = __ENV[variable];",
        "}",
        "const ROUTES = [",
        *routes,
        "];",
    ]
    if isinstance(p, ScriptLadder):
        stages = ", ".join(
            f"{{ duration: '0s', target: {n} }}, {{ duration: '{p.seconds:g}s', target: {n} }}"
            for n in p.levels
        )
        lines += [
            f"const LEVELS = {_js(list(p.levels))};",
            f"const SECONDS = {p.seconds!r};",
            f"const STAGES = [{stages}];",
        ]
    lines += ["", "export const options = {", "  scenarios: {", *_k6_scenarios(spec), "  },"]
    if isinstance(p, ScriptLadder) and spec.server_workers is not None:
        # On every sample: the server this ladder was exported for, read back by `import k6`.
        lines.append(f"  tags: {{ {K6_WORKERS_TAG}: {_js(str(spec.server_workers))} }},")
    if isinstance(p, ArrivalRate):
        o = p.objective
        lines += [
            "  thresholds: {",
            f"    http_req_duration: ['p(99)<{o.p99_ms:g}'],",
            f"    http_req_failed: ['rate<{o.max_error_ratio:g}'],",
            "  },",
        ]
    lines += [
        "  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],",
        "};",
        "",
        "function send(route, tags) {",
        "  const headers = route.contentType ? { ...HEADERS, 'Content-Type': route.contentType } : HEADERS;",
        "  http.request(route.method, BASE_URL + route.path, route.body, {",
        "    headers, tags: { name: route.name, ...tags },",
        "  });",
        "}",
        "",
        *_k6_exec(spec),
    ]
    return "\n".join(lines).rstrip() + "\n"
