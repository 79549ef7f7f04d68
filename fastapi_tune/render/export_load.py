"""Hand the probe to Locust or k6: a ready-to-run script for load one machine cannot generate.

`spec_from_report` turns a probe report (and an optional traffic mix) into a `LoadSpec`; the two
renderers turn the spec into text. Pure functions, no I/O: the CLI writes the file.

Every request is tagged with its route ("GET /orders/{oid}", Locust `name=`, k6 `tags.name`) and
every ladder step with its concurrency (k6 `tags.vus`; Locust's history CSV has the user count),
so `import_load` maps the results back to endpoints and levels.

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
from fastapi_tune.measure.report import ProbeReport
from fastapi_tune.plan.slo import parse_slo

# Locust's @task weights are integers: floats are scaled so the whole mix sums to ~1000, which
# keeps a 0.1% share distinguishable while a 1-weight route is never dropped.
LOCUST_WEIGHT_SCALE: Final = 1000
# Locust workers report to the master every 3 s by default; a ladder step of a few seconds would
# then get its neighbour's requests. Every second keeps the steps apart (runners.WORKER_REPORT_INTERVAL).
LOCUST_REPORT_INTERVAL_S: Final = 1.0
# Locust's history CSV gives percentiles over a sliding window (10 s by default,
# stats.CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW); the window is cut to fit inside one step,
# leaving 2 s for the step's own warm-up.
LOCUST_MAX_WINDOW_S: Final = 10
STEP_WARMUP_S: Final = 2
# Locust warns above 100 users started per second (runners.py), and stops users at the same rate.
LOCUST_SPAWN_RATE: Final = 100
# A step shorter than this leaves nothing counted once the warm-up and the report lag are cut.
MIN_STEP_SECONDS: Final = 3.0
# Locust's history has one row a second, and the importer needs three rows at one user count
# (import_load.MIN_STEP_ROWS); a 3 s step sometimes gets only two once the shape's 1 s tick lags.
LOCUST_MIN_STEP_SECONDS: Final = 4.0
# Arrival-rate runs: in-flight requests = rate x latency (Little's law). Users/VUs are sized for
# the whole objective latency with 2x headroom, so the generator never becomes the limit.
RATE_HEADROOM: Final = 2.0
# Between two routes of an isolated ladder: the shape ticks every second, so 2 s is surely seen.
ROUTE_PAUSE_S: Final = 2.0
# How long a k6 scenario waits for the last iterations of a step before the next endpoint starts.
K6_GRACEFUL_STOP: Final = "2s"
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
    endpoints = tuple(
        LoadEndpoint(
            name=name,
            method=e.method.upper(),
            path=_relative(e.url, e.path),
            weight=weights[name],
            body=(bodies or {}).get(name, (None, None))[0],
            content_type=(bodies or {}).get(name, (None, None))[1],
        )
        for e in report.endpoints
        if (name := route_name(e.method, e.path)) in weights
    )
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
    _check_pattern(pattern)
    base = urlsplit(report.target)
    return LoadSpec(
        base_url=f"{base.scheme}://{base.netloc}",
        endpoints=endpoints,
        pattern=pattern,
        header_names=tuple(header_names),
    )


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


def _describe(spec: LoadSpec) -> str:
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


def _header_lines(spec: LoadSpec, comment: str) -> list[str]:
    if not spec.header_names:
        return []
    lines = [f"{comment} Header values are read from the environment (never stored in this file):"]
    lines += [f"{comment}   export {header_env_var(n)}='...'   # {n}" for n in spec.header_names]
    return lines


def _steps(spec: LoadSpec, ladder: ScriptLadder) -> list[tuple[int | None, int, float]]:
    """(endpoint index or None for the mix, users, seconds) per step, in order.

    Between two routes of an isolated ladder all users stop for a moment: Locust keeps users of
    the old class when the count drops, so without the pause the next route shares the server.
    """
    if not ladder.isolate:
        return [(None, n, ladder.seconds) for n in ladder.levels]
    steps: list[tuple[int | None, int, float]] = []
    for i in range(len(spec.endpoints)):
        if i:
            steps.append((i, 0, ROUTE_PAUSE_S))
        steps += [(i, n, ladder.seconds) for n in ladder.levels]
    return steps


def _int_weights(spec: LoadSpec) -> list[int]:
    total = sum(e.weight for e in spec.endpoints)
    return [max(1, round(LOCUST_WEIGHT_SCALE * e.weight / total)) for e in spec.endpoints]


# ---------------------------------------------------------------------------------------
# Locust


def _locust_doc(spec: LoadSpec) -> list[str]:
    rate = isinstance(spec.pattern, ArrivalRate)
    end = (
        "exits 1 when the objective is missed."
        if rate
        else "then: fastapi-tune import locust out -o report.json"
    )
    return [
        '"""Locust load test exported by fastapi-tune.',
        "",
        *_describe(spec).splitlines(),
        "",
        "One machine:",
        "  locust -f THIS_FILE --headless --csv out --csv-full-history",
        "Distributed (one master, N worker processes on any number of load machines):",
        "  locust -f THIS_FILE --headless --master --expect-workers N --csv out --csv-full-history",
        "  locust -f THIS_FILE --worker --master-host MASTER_ADDRESS      # N times",
        f"The master writes out_stats_history.csv; {end}",
        f"Another target: --host URL (default {spec.base_url}).",
        *[line.removeprefix("# ") for line in _header_lines(spec, "#")],
        '"""',
    ]


def _locust_task(e: LoadEndpoint, i: int, weight: int | None) -> list[str]:
    deco = "    @task" if weight is None else f"    @task({weight})"
    args = [repr(e.method), repr(e.path), f"name={e.name!r}"]
    if e.body is not None:
        args.append(f"data={e.body!r}")
    headers = "HEADERS" if e.content_type is None else f"{{**HEADERS, 'Content-Type': {e.content_type!r}}}"
    args.append(f"headers={headers}")
    return [deco, f"    def route_{i}(self) -> None:", f"        self.client.request({', '.join(args)})", ""]


def _locust_users(spec: LoadSpec) -> list[str]:
    p = spec.pattern
    if isinstance(p, ScriptLadder) and p.isolate:
        out: list[str] = []
        for i, e in enumerate(spec.endpoints):
            out += [
                f"class Route{i}(HttpUser):",
                f'    """{e.name}: alone at every step of its ladder."""',
                "",
            ]
            out += [
                "    host = BASE_URL",
                "    wait_time = constant(0)  # closed loop: users = requests in flight",
                "",
            ]
            out += _locust_task(e, i, None)
            out.append("")
        return out
    wait = (
        "constant(0)  # closed loop: users = requests in flight"
        if isinstance(p, ScriptLadder)
        else "constant_throughput(RATE / USERS)  # open loop: each user paces itself"
    )
    out = ["class Mix(HttpUser):", '    """The routes in their weighted mix."""', ""]
    out += ["    host = BASE_URL", f"    wait_time = {wait}", ""]
    for i, (e, w) in enumerate(zip(spec.endpoints, _int_weights(spec), strict=True)):
        out += _locust_task(e, i, w)
    return [*out, ""]


def _locust_shape(spec: LoadSpec) -> list[str]:
    p = spec.pattern
    if isinstance(p, ScriptLadder):
        steps = [f"    ({'Mix' if i is None else f'Route{i}'}, {n}, {t!r})," for i, n, t in _steps(spec, p)]
        return [
            "# (user class, users, seconds); 0 users between two routes: all of the last route's stop.",
            "STEPS = [",
            *steps,
            "]",
            "",
            "",
            "class LadderShape(LoadTestShape):",
            '    """Hold each step of STEPS for its seconds, then stop."""',
            "",
            "    def tick(self):",
            "        left = self.get_run_time()",
            "        for user_class, users, seconds in STEPS:",
            "            if left < seconds:",
            "                return users, SPAWN_RATE, [user_class]",
            "            left -= seconds",
            "        return None",
        ]
    o = p.objective
    return [
        "class RateShape(LoadTestShape):",
        '    """USERS users for SECONDS, then stop."""',
        "",
        "    def tick(self):",
        "        return (USERS, SPAWN_RATE) if self.get_run_time() < SECONDS else None",
        "",
        "",
        "@events.quitting.add_listener",
        "def objective(environment, **kwargs):",
        '    """The exit code says whether the objective was met (1: missed)."""',
        "    total = environment.stats.total",
        "    p99 = total.get_response_time_percentile(0.99) or 0",
        f"    if p99 >= {o.p99_ms!r} or total.fail_ratio >= {o.max_error_ratio!r}:",
        f'        print(f"objective missed: p99 {{p99}} ms (< {o.p99_ms:g}), errors {{total.fail_ratio:.2%}} '
        f'(< {o.max_error_ratio:.2%})")',
        "        environment.process_exit_code = 1",
    ]


def render_locust(spec: LoadSpec) -> str:
    """A locustfile for the spec (see the file's own docstring for how to run it)."""
    p = spec.pattern
    if isinstance(p, ScriptLadder) and p.seconds < LOCUST_MIN_STEP_SECONDS:
        raise UsageError(
            f"Locust ladder steps need at least {LOCUST_MIN_STEP_SECONDS:.0f} s (got {p.seconds:g})"
        )
    window = max(1, min(LOCUST_MAX_WINDOW_S, int(p.seconds) - STEP_WARMUP_S))
    headers = ", ".join(f"({n!r}, {header_env_var(n)!r})" for n in spec.header_names)
    used = ("constant",) if isinstance(p, ScriptLadder) else ("constant_throughput", "events")
    names = ", ".join(sorted(("HttpUser", "LoadTestShape", "task", *used)))
    lines = [
        *_locust_doc(spec),
        "",
        "import os",
        "",
        "import locust.runners",
        "import locust.stats",
        f"from locust import {names}",
        "",
        f"BASE_URL = {spec.base_url!r}",
        f"SECONDS = {p.seconds!r}",
        "# Users started (and stopped) per second: a step changes at once; above 100 Locust warns.",
        f"SPAWN_RATE = {LOCUST_SPAWN_RATE}",
    ]
    if isinstance(p, ArrivalRate):
        lines += [f"RATE = {p.rps!r}  # requests/s of the whole mix", f"USERS = {rate_users(p)}"]
    lines += [
        "# Workers report every second (default 3 s), so requests land in the step that sent them.",
        f"locust.runners.WORKER_REPORT_INTERVAL = {LOCUST_REPORT_INTERVAL_S!r}",
        "# The history CSV's percentiles cover a sliding window: keep it inside one step.",
        f"locust.stats.CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW = {window}",
        "",
        f"HEADER_VARS = [{headers}]",
        "HEADERS = {}",
        "for _name, _var in HEADER_VARS:",
        "    if _var not in os.environ:",
        '        raise SystemExit(f"set {_var} to the value of the {_name} header")',
        "    HEADERS[_name] = os.environ[_var]",
        "",
        "",
        *_locust_users(spec),
        "",
        *_locust_shape(spec),
    ]
    return "\n".join(lines).rstrip() + "\n"


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
        *[f"// {line}" for line in _describe(spec).splitlines()],
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
        *_header_lines(spec, "//"),
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
        return [
            "    mix: {",
            f"      executor: 'ramping-vus', exec: 'mix', startVUs: 0, stages: {stages},",
            f"      gracefulRampDown: '0s', gracefulStop: '{K6_GRACEFUL_STOP}',",
            "    },",
        ]
    out: list[str] = []
    # Each route's ladder starts after the previous one and its graceful stop.
    span = p.seconds * len(p.levels) + float(K6_GRACEFUL_STOP.rstrip("s"))
    for i in range(len(spec.endpoints)):
        out += [
            f"    route_{i}: {{",
            f"      executor: 'ramping-vus', exec: 'route_{i}', startVUs: 0, startTime: '{i * span:g}s',",
            f"      stages: {stages}, gracefulRampDown: '0s', gracefulStop: '{K6_GRACEFUL_STOP}',",
            "    },",
        ]
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
