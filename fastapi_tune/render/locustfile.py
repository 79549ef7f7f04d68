"""The probe's load as a locustfile: a LoadTestShape ladder, or an arrival rate with its objective.

A ladder's results must read back as the levels the probe would have measured, and Locust's own
files do not say which step a request belonged to: its history has one row a second with the
total user count, so the slowest requests of one route's last step (seconds long at c=128) land
in the next route's first step, ramps blur the steps, and a generator out of CPU looks like a
server that stopped scaling. So the script names each request by the step that sent it (the
conventions are import_locust's: "GET /x @8", "... warm-up", "... stopping"), and every process
that sends load measures per step how long it counted and how much CPU it wanted; the master
writes that to PREFIX_fastapi_tune.json with the server's worker count the probe saw.

Requests go through FastHttpUser (geventhttpclient): Locust's docs recommend it for load, and it
costs a fraction of HttpUser's CPU per request, so the generator stays out of the way longer.
"""

from __future__ import annotations

from typing import Final

from fastapi_tune.core.errors import UsageError
from fastapi_tune.measure.import_locust import (
    RESULTS_FORMAT,
    RESULTS_SUFFIX,
    STEP_MARK,
    STOPPING_MARK,
    WARMUP_MARK,
)
from fastapi_tune.render.export_load import (
    ArrivalRate,
    LoadEndpoint,
    LoadSpec,
    ScriptLadder,
    describe_spec,
    header_env_var,
    header_lines,
    rate_users,
)

# Locust's @task weights are integers: floats are scaled so the whole mix sums to ~1000, which
# keeps a 0.1% share distinguishable while a 1-weight route is never dropped.
LOCUST_WEIGHT_SCALE: Final = 1000
# Requests sent in a step's first seconds, while its users start (100 a second), are not counted.
STEP_WARMUP_S: Final = 2
# Locust warns above 100 users started per second (runners.py), and stops users at the same rate.
LOCUST_SPAWN_RATE: Final = 100
# The warm-up and at least 2 s counted (the shape changes steps on a 1 s tick).
LOCUST_MIN_STEP_SECONDS: Final = 4.0
# Between two routes of an isolated ladder, and after the last step: every user of the last
# route stops (the shape ticks every second, so 2 s is surely seen), and every process reports
# its last step's window while the run still goes on.
ROUTE_PAUSE_S: Final = 2.0


# One step of the script: (endpoint index or None for the mix, users, seconds, counted).
Step = tuple[int | None, int, float, bool]


def ladder_steps(spec: LoadSpec, ladder: ScriptLadder) -> list[Step]:
    """Every step in order: a route's counted levels, a drain, a pause; then the next route.

    The drain holds the top level's users, uncounted, while the requests its last counted second
    sent end (Locust drops a request in flight when its user stops). The pause stops every user:
    Locust keeps users of the old class when the count drops, so without it the next route would
    share the server; after the last route it lets every process report its last window.
    """
    top = ladder.levels[-1]
    if not ladder.isolate:
        drain = max(e.drain_s for e in spec.endpoints)
        counted: list[Step] = [(None, n, ladder.seconds, True) for n in ladder.levels]
        return [*counted, (None, top, drain, False), (None, 0, ROUTE_PAUSE_S, False)]
    steps: list[Step] = []
    for i, e in enumerate(spec.endpoints):
        steps += [(i, n, ladder.seconds, True) for n in ladder.levels]
        steps += [(i, top, e.drain_s, False), (i, 0, ROUTE_PAUSE_S, False)]
    return steps


def int_weights(spec: LoadSpec) -> list[int]:
    total = sum(e.weight for e in spec.endpoints)
    return [max(1, round(LOCUST_WEIGHT_SCALE * e.weight / total)) for e in spec.endpoints]


def _doc(spec: LoadSpec) -> list[str]:
    rate = isinstance(spec.pattern, ArrivalRate)
    end = (
        "exits 1 when the objective is missed."
        if rate
        else f"with out{RESULTS_SUFFIX} beside them; then: fastapi-tune import locust out -o report.json"
    )
    return [
        '"""Locust load test exported by fastapi-tune.',
        "",
        *describe_spec(spec).splitlines(),
        "",
        "One machine:",
        "  locust -f THIS_FILE --headless --csv out",
        "Distributed (one master, N worker processes on any number of load machines):",
        "  locust -f THIS_FILE --headless --master --expect-workers N --csv out",
        "  locust -f THIS_FILE --worker --master-host MASTER_ADDRESS      # N times",
        f"The master writes out_stats.csv {end}",
        f"Another target: --host URL (default {spec.base_url}).",
        *[line.removeprefix("# ") for line in header_lines(spec, "#")],
        '"""',
    ]


def _task(e: LoadEndpoint, i: int, weight: int | None, ladder: bool) -> list[str]:
    deco = "    @task" if weight is None else f"    @task({weight})"
    name = f"step_name({e.name!r})" if ladder else repr(e.name)
    args = [repr(e.method), repr(e.path), f"name={name}"]
    if e.body is not None:
        args.append(f"data={e.body!r}")
    headers = "HEADERS" if e.content_type is None else f"{{**HEADERS, 'Content-Type': {e.content_type!r}}}"
    args.append(f"headers={headers}")
    return [deco, f"    def route_{i}(self) -> None:", f"        self.client.request({', '.join(args)})", ""]


def _users(spec: LoadSpec) -> list[str]:
    p = spec.pattern
    ladder = isinstance(p, ScriptLadder)
    if isinstance(p, ScriptLadder) and p.isolate:
        out: list[str] = []
        for i, e in enumerate(spec.endpoints):
            out += [
                f"class Route{i}(FastHttpUser):",
                f'    """{e.name}: alone at every step of its ladder."""',
                "",
            ]
            out += [
                "    host = BASE_URL",
                "    wait_time = constant(0)  # closed loop: users = requests in flight",
                "",
            ]
            out += [*_task(e, i, None, ladder), ""]
        return out
    wait = (
        "constant(0)  # closed loop: users = requests in flight"
        if ladder
        else "constant_throughput(RATE / USERS)  # open loop: each user paces itself"
    )
    out = ["class Mix(FastHttpUser):", '    """The routes in their weighted mix."""', ""]
    out += ["    host = BASE_URL", f"    wait_time = {wait}", ""]
    for i, (e, w) in enumerate(zip(spec.endpoints, int_weights(spec), strict=True)):
        out += _task(e, i, w, ladder)
    return [*out, ""]


def _routes(spec: LoadSpec, ladder: ScriptLadder) -> str:
    """The route names each user class drives, for the results file."""
    if not ladder.isolate:
        return repr({"Mix": [e.name for e in spec.endpoints]})
    return repr({f"Route{i}": [e.name] for i, e in enumerate(spec.endpoints)})


# Run by Locust in every process: the steps, named requests, and each generator's windows.
_STEPS_RUNTIME: Final = '''
# The step in effect in this process, and the windows it counted: [index, seconds, CPU seconds,
# requests sent] (requests: a step's users may sit on one worker, whose window is what counts).
STEP = {"index": -1, "counted": None, "sent": 0}
ANNOUNCED = {"index": -1, "at": 0.0}
WINDOWS = []


def cpu_demand_s():
    """Seconds this process was on a CPU or runnable, waiting for one (Linux); CPU time elsewhere."""
    try:
        with open("/proc/self/schedstat") as f:
            on_cpu, waiting = f.read().split()[:2]
        return (int(on_cpu) + int(waiting)) / 1e9
    except (OSError, ValueError):
        return time.process_time()


def step_name(route):
    """The name of a request sent now: its route, its step's users, and whether it is counted."""
    index = STEP["index"]
    if index < 0 or not STEPS[index][3]:
        return route + STOPPING_MARK
    if not STEP["counted"]:
        return f"{route}{STEP_MARK}{STEPS[index][1]}{WARMUP_MARK}"
    STEP["sent"] += 1
    return f"{route}{STEP_MARK}{STEPS[index][1]}"


def enter_step(environment, index):
    """A new step: close the last one's window; count this one's after the warm-up."""
    close_window(environment)
    STEP.update(index=index, counted=None)
    gevent.spawn_later(WARMUP_S, open_window, index)


def open_window(index):
    if STEP["index"] == index and STEPS[index][3]:
        STEP.update(counted=(time.monotonic(), cpu_demand_s()), sent=0)


def close_window(environment):
    if STEP["counted"] is None:
        return
    (start, cpu), STEP["counted"] = STEP["counted"], None
    window = [STEP["index"], time.monotonic() - start, cpu_demand_s() - cpu, STEP["sent"]]
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message("fastapi_tune_window", window)
    else:
        WINDOWS.append(window)


def announce(runner, index):
    """Step `index` starts: tell every process that sends load (the shape calls this)."""
    ANNOUNCED.update(index=index, at=time.monotonic())
    if isinstance(runner, MasterRunner):
        runner.send_message("fastapi_tune_step", index)
    else:
        enter_step(runner.environment, index)


def on_step(environment, msg, **kwargs):
    enter_step(environment, msg.data)


def on_window(environment, msg, **kwargs):
    WINDOWS.append(msg.data)


@events.init.add_listener
def listen(environment, **kwargs):
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message("fastapi_tune_step", on_step)
    elif isinstance(runner, MasterRunner):
        runner.register_message("fastapi_tune_window", on_window)


@events.quitting.add_listener
def save_steps(environment, **kwargs):
    """PREFIX_fastapi_tune.json beside Locust's CSVs: what `fastapi-tune import locust` reads."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or isinstance(environment.runner, WorkerRunner):
        return
    steps = [
        {
            "index": i, "users": users, "seconds": seconds, "routes": ROUTES[user_class.__name__],
            "windows": [{"counted_s": w[1], "cpu_s": w[2], "requests": w[3]} for w in WINDOWS if w[0] == i],
        }
        for i, (user_class, users, seconds, counted) in enumerate(STEPS)
        if counted
    ]
    results = {"format": FORMAT, "warmup_s": WARMUP_S, "server_workers": SERVER_WORKERS, "steps": steps}
    with open(prefix + RESULTS_SUFFIX, "w") as f:
        json.dump(results, f, indent=1)


class LadderShape(LoadTestShape):
    """Hold each step of STEPS for its seconds from when it was announced, then stop.

    Counted from the announcement, not from the start of the run: a tick comes late when
    starting users takes a while (the master waits for the workers' reports), and a step must
    not lose its counted seconds to the one before.
    """

    def tick(self):
        index = ANNOUNCED["index"]
        if index < 0 or time.monotonic() - ANNOUNCED["at"] >= STEPS[index][2]:
            index += 1
            if index >= len(STEPS):
                return None
            announce(self.runner, index)
        return STEPS[index][1], SPAWN_RATE, [STEPS[index][0]]
'''


def _ladder_shape(spec: LoadSpec, p: ScriptLadder) -> list[str]:
    steps = [
        f"    ({'Mix' if i is None else f'Route{i}'}, {n}, {t!r}, {counted}),"
        for i, n, t, counted in ladder_steps(spec, p)
    ]
    return [
        "# (user class, users, seconds, counted): a route's levels; its drain (the top level's users,",
        "# uncounted, while the last requests end); then 0 users: every user stops.",
        "STEPS = [",
        *steps,
        "]",
        f"ROUTES = {_routes(spec, p)}",
        "# The server's worker processes when the probe measured it (None: unknown); import reads it.",
        f"SERVER_WORKERS = {spec.server_workers!r}",
        f"WARMUP_S = {STEP_WARMUP_S}",
        f"STEP_MARK, WARMUP_MARK, STOPPING_MARK = {STEP_MARK!r}, {WARMUP_MARK!r}, {STOPPING_MARK!r}",
        f"RESULTS_SUFFIX, FORMAT = {RESULTS_SUFFIX!r}, {RESULTS_FORMAT}",
        *_STEPS_RUNTIME.splitlines(),
    ]


def _rate_shape(p: ArrivalRate) -> list[str]:
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


def _imports(ladder: bool) -> list[str]:
    if not ladder:
        names = "FastHttpUser, LoadTestShape, constant_throughput, events, task"
        return ["import os", "", f"from locust import {names}"]
    return [
        "import json",
        "import os",
        "import time",
        "",
        "import gevent",
        "from locust import FastHttpUser, LoadTestShape, constant, events, task",
        "from locust.runners import MasterRunner, WorkerRunner",
    ]


def render_locust(spec: LoadSpec) -> str:
    """A locustfile for the spec (see the file's own docstring for how to run it)."""
    p = spec.pattern
    if isinstance(p, ScriptLadder) and p.seconds < LOCUST_MIN_STEP_SECONDS:
        raise UsageError(
            f"Locust ladder steps need at least {LOCUST_MIN_STEP_SECONDS:.0f} s (got {p.seconds:g})"
        )
    headers = ", ".join(f"({n!r}, {header_env_var(n)!r})" for n in spec.header_names)
    lines = [
        *_doc(spec),
        "",
        *_imports(isinstance(p, ScriptLadder)),
        "",
        f"BASE_URL = {spec.base_url!r}",
        f"SECONDS = {p.seconds!r}",
        "# Users started (and stopped) per second: a step changes at once; above 100 Locust warns.",
        f"SPAWN_RATE = {LOCUST_SPAWN_RATE}",
    ]
    if isinstance(p, ArrivalRate):
        lines += [f"RATE = {p.rps!r}  # requests/s of the whole mix", f"USERS = {rate_users(p)}"]
    lines += [
        "",
        f"HEADER_VARS = [{headers}]",
        "HEADERS = {}",
        "for _name, _var in HEADER_VARS:",
        "    if _var not in os.environ:",
        '        raise SystemExit(f"set {_var} to the value of the {_name} header")',
        "    HEADERS[_name] = os.environ[_var]",
        "",
        "",
        *_users(spec),
        "",
        *(_ladder_shape(spec, p) if isinstance(p, ScriptLadder) else _rate_shape(p)),
    ]
    return "\n".join(lines).rstrip() + "\n"
