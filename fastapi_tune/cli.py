"""The command line: each command reads options, calls one function, hands the result to a renderer."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fastapi_tune import __version__, checks
from fastapi_tune.accesslog import Progress, read_access_logs
from fastapi_tune.appenv import read_app_env
from fastapi_tune.classify import classify_report
from fastapi_tune.demo import SAMPLE_APP
from fastapi_tune.deploy import decide_deploy
from fastapi_tune.discovery import document_routes, parse_header
from fastapi_tune.errors import (
    BadInputError,
    ExitCode,
    FastapiTuneError,
    Interrupted,
    RefusedError,
    RunErrorsError,
    SloMissedError,
    UsageError,
)
from fastapi_tune.export_load import parse_mix, parse_objective, render_k6, render_locust, spec_from_report
from fastapi_tune.fileio import Overwrite, atomic_write, check_writable, existing_state, write_output
from fastapi_tune.host import (
    HostFacts,
    host_to_json,
    parse_cpus_override,
    parse_memory_override,
    read_host,
)
from fastapi_tune.import_load import import_k6, import_locust
from fastapi_tune.plan import Choices, Plan, make_plan
from fastapi_tune.plan_traffic import TrafficDefaults, traffic_defaults, with_traffic_input
from fastapi_tune.probe import DEFAULT_MAX_CONCURRENCY, ProbeOptions, ProbeOutcome
from fastapi_tune.profiles import DEFAULT_PROFILE, Profile, list_profiles, load_profile
from fastapi_tune.redact import option_secrets, redact_secrets_in, redact_text
from fastapi_tune.render_conf import DEFAULT_CONF, render_gunicorn_conf
from fastapi_tune.render_deploy import deploy_files
from fastapi_tune.render_host import print_host
from fastapi_tune.render_html import render_html
from fastapi_tune.render_plan import plan_to_json, print_brief, print_plan
from fastapi_tune.render_probe import LiveProgress, print_report
from fastapi_tune.render_traffic import print_traffic, traffic_summary
from fastapi_tune.render_tune import TuneProgress, print_files, print_tune, tune_to_json
from fastapi_tune.render_verify import VerifyProgress, print_verify, verify_to_json
from fastapi_tune.report import DEFAULT_REPORT, ProbeReport, load_report, report_routes, report_to_json
from fastapi_tune.slo import parse_slo
from fastapi_tune.target import (
    cpu_is_limited,
    memory_is_limited,
    runs_in_container,
    sizing_warning,
    with_overrides,
)
from fastapi_tune.traffic import TrafficProfile, traffic_to_json
from fastapi_tune.verify import VerifyOptions, VerifyResult, run_verify, verify_notes
from fastapi_tune.workflow import (
    TuneOptions,
    TuneResult,
    probe_and_classify,
    read_traffic,
    run_demo,
    run_tune,
    save_report,
    save_report_somewhere,
)

app = typer.Typer(
    name="fastapi-tune",
    help=(
        "Measure a FastAPI app, then size its gunicorn/uvicorn deployment from the evidence.\n\n"
        "The usual order: `host` (what this machine allows), `probe URL` (how each endpoint scales),"
        " `recommend` (a gunicorn command and gunicorn.conf.py), `verify` (prove it against the"
        " alternatives). `demo` runs the whole loop on a bundled sample app."
    ),
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# Results go to stdout; progress, warnings and errors go to stderr, so `--json | jq` works.
def _width() -> int | None:
    """Piped output is read later, in wider windows than rich's 80-column fallback: 120 unless COLUMNS."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 120


out = Console(width=_width())
err = Console(stderr=True, soft_wrap=True)

_state: dict[str, bool] = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"fastapi-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, flag("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, flag("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    _state["debug"] = debug


P = ParamSpec("P")


def flag(*names: str, **kwargs: Any) -> Any:
    """A boolean option shown as a plain flag (typer would print `<bool>`, inviting `--json true`)."""
    return typer.Option(*names, metavar="", **kwargs)


def _guarded(f: Callable[P, None]) -> Callable[P, None]:
    """`f` with its errors turned into one red line and the README's exit code.

    Done per command rather than only in main() so that in-process runs (typer's CliRunner,
    the tests) see the same exit codes as the installed script.
    """

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        secrets = option_secrets(kwargs.get("header") or (), kwargs.get("param") or ())  # type: ignore[arg-type]
        try:
            f(*args, **kwargs)
        except FastapiTuneError as e:
            raise typer.Exit(_report_error(e, secrets)) from None
        except OSError as e:
            if e.filename is None:
                raise  # not about a file: a bug, shown as an internal error
            failed = BadInputError(f"{e.filename}: {e.strerror or e}")
            raise typer.Exit(_report_error(failed, secrets)) from None
        except (typer.Abort, KeyboardInterrupt):
            # Ctrl-C at a prompt (click says "Aborted." and exits 1) or anywhere else: exit 130.
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


def command(f: Callable[P, None]) -> Callable[P, None]:
    """Register a top-level command (errors handled as _guarded says)."""
    wrapper = _guarded(f)
    app.command()(wrapper)
    return wrapper


def subcommand(group: typer.Typer, name: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Register `name` under a command group such as `export` (errors handled as _guarded says)."""

    def register(f: Callable[P, None]) -> Callable[P, None]:
        wrapper = _guarded(f)
        group.command(name)(wrapper)
        return wrapper

    return register


export_app = typer.Typer(
    help="Write the probe's load as a Locust or k6 script, for load beyond one machine.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
import_app = typer.Typer(
    help="Read Locust or k6 results back as a probe report that `recommend` plans from.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(export_app, name="export")
app.add_typer(import_app, name="import")


def _report_error(e: FastapiTuneError, secrets: Sequence[str] = ()) -> int:
    """One red line for an error the user is meant to read (re-raised with --debug); its exit code.

    The text passes through redaction: it may quote a URL with a password, a server's output,
    or a value the user passed with -H.
    """
    if _state["debug"]:
        raise e
    err.print(f"[bold red]error:[/] {escape(redact_secrets_in(str(e), secrets))}", highlight=False)
    return int(e.exit_code)


def print_json(data: Any) -> None:
    """One JSON document on stdout and nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


_Cpus = Annotated[
    str | None,
    typer.Option("--cpus", help="CPUs of the deployment target if not this machine, e.g. 2 or 1.5."),
]
_Memory = Annotated[
    str | None,
    typer.Option("--memory", help="Memory of the deployment target if not this machine, e.g. 512M."),
]


_AccessLog = Annotated[
    list[str] | None,
    typer.Option(
        "--access-log",
        help="Production access log (nginx/gunicorn combined, uvicorn, JSON lines; .gz read directly;"
        " - for stdin); repeatable. Its routes' shares and its busiest 60 s guide the run.",
    ),
]


def _read_logs(read: Callable[[Progress], TrafficProfile], say: bool = True) -> TrafficProfile:
    """Read access logs with a progress line on stderr, then say what was found (one line)."""
    with err.status("Reading the access logs") as status:
        traffic = read(lambda n: status.update(f"Reading the access logs: {n:,} lines"))
    if say:
        err.print(escape(traffic_summary(traffic)), highlight=False)
    for note in traffic.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    return traffic


def _host_facts(cpus: str | None, memory: str | None) -> HostFacts:
    """This machine's facts, with the target's CPUs and memory where the user named them."""
    return read_host(env=with_overrides(os.environ, cpus, memory))


@command
def host(
    cpus: _Cpus = None,
    memory: _Memory = None,
    as_json: Annotated[bool, flag("--json", help="Print one JSON object to stdout.")] = False,
) -> None:
    """Show the CPUs and memory a server on this machine can really use.

    Reads cgroup v1/v2 CPU quota, cpuset and memory limit (which os.cpu_count(), psutil and
    gunicorn ignore) and the CPU affinity. Override with --cpus/--memory (or FASTAPI_TUNE_CPUS=1.5,
    FASTAPI_TUNE_MEMORY=512M) when you know better.
    """
    facts = _host_facts(cpus, memory)
    if as_json:
        print_json(host_to_json(facts))
    else:
        print_host(out, facts)


def _parse_levels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"--levels {text!r}: expected positive integers such as 1,8,64") from None
    if not levels or min(levels) < 1:
        raise UsageError(f"--levels {text!r}: expected positive integers such as 1,8,64")
    return levels


@command
def probe(  # long mostly in its signature: one typer parameter per option
    url: Annotated[str, typer.Argument(help="The running app, e.g. http://127.0.0.1:8000 (loopback only).")],
    endpoint: Annotated[
        list[str] | None,
        typer.Option("-e", "--endpoint", help="Probe exactly this 'METHOD /path' (repeatable); any method."),
    ] = None,
    openapi: Annotated[
        str | None, typer.Option(help="Where the OpenAPI document is (URL or path on the app).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip paths matching this glob, e.g. '/admin/*' (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "-H", "--header", help="'Name: value' sent with every request (repeatable); secrets are redacted."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", help="NAME=VALUE for a path or query parameter, e.g. --param item_id=42 (repeatable)."
        ),
    ] = None,
    body: Annotated[
        list[str] | None,
        typer.Option(
            "--body",
            help="'METHOD /path=@file.json' or inline JSON: the body for one operation (repeatable);"
            " otherwise one is generated from the document's schema.",
        ),
    ] = None,
    unsafe: Annotated[
        bool,
        flag(
            "--unsafe",
            help="Also drive POST, PUT, PATCH and DELETE from the document (each is sent thousands of"
            " times: only against data you can lose).",
        ),
    ] = False,
    no_preflight: Annotated[
        bool,
        flag("--no-preflight", help="Load every endpoint, even one whose first request fails."),
    ] = False,
    no_profile: Annotated[
        bool,
        flag(
            "--no-profile",
            help="Do not sample the server's stacks with py-spy (the line that limits a route).",
        ),
    ] = False,
    levels: Annotated[
        str | None, typer.Option(help="Fixed concurrency levels, e.g. 1,8,64 (no adaptive stop).")
    ] = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option(
            help=f"Highest level of the ladder (default: {DEFAULT_MAX_CONCURRENCY}, more if still flat)."
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Counted seconds per level (default: adaptive, 0.5 s or more).")
    ] = None,
    max_seconds: Annotated[float, typer.Option(help="Time budget for the whole probe.")] = 60.0,
    max_requests: Annotated[int, typer.Option(help="Request budget for the whole probe.")] = 500_000,
    timeout: Annotated[float, typer.Option(help="Seconds before a request counts as a timeout.")] = 10.0,
    insecure: Annotated[bool, flag("--insecure", help="Accept a self-signed TLS certificate.")] = False,
    allow_remote: Annotated[
        bool,
        flag("--allow-remote", help="Allow a target that is not on this machine (a server you own)."),
    ] = False,
    out_path: Annotated[Path, typer.Option("-o", "--out", help="Where the report is saved (always).")] = Path(
        "fastapi-tune-probe.json"
    ),
    as_json: Annotated[bool, flag("--json", help="Also print the report as JSON on stdout.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts) here.")
    ] = None,
    access_log: _AccessLog = None,
) -> None:
    """Measure how each endpoint of a running app scales, and classify it.

    Finds the endpoints in the app's OpenAPI document (or takes them from -e), drives each with
    closed-loop bursts at rising concurrency (1, 2, 4 ... 128), watches the server's CPU and
    memory when it runs on this machine, and tells each endpoint's class: io-bound, cpu-bound,
    loop-blocking, threadpool-bound (or serialized / inconclusive), with the evidence and the fix.
    The report is saved to --out for `fastapi-tune recommend`.
    """
    options = ProbeOptions(
        url=url,
        openapi=openapi,
        endpoints=tuple(endpoint or ()),
        excludes=tuple(exclude or ()),
        headers=tuple(header or ()),
        params=tuple(param or ()),
        bodies=tuple(body or ()),
        unsafe=unsafe,
        preflight=not no_preflight,
        profile=not no_profile,
        levels=_parse_levels(levels),
        max_concurrency=max_concurrency,
        duration_s=duration,
        max_seconds=max_seconds,
        max_requests=max_requests,
        timeout_s=timeout,
        verify_tls=not insecure,
        allow_remote=allow_remote,
    )
    check_writable(out_path, "--out")  # never measure into a path that cannot be written
    if html is not None:
        check_writable(html, "--html")
    traffic = _read_logs(lambda p: read_traffic(options, access_log, p)) if access_log else None
    _probe_and_save(options, read_host(), out_path, as_json, html, traffic)


def _probe_and_save(
    options: ProbeOptions,
    facts: HostFacts,
    out_path: Path,
    as_json: bool,
    html: Path | None = None,
    traffic: TrafficProfile | None = None,
) -> ProbeReport:
    """Run a probe with live progress, save the report always, show it, and raise on a bad end."""
    with LiveProgress(err) as progress:
        outcome = probe_and_classify(options, facts, progress, traffic)
    return _save_and_show(outcome, out_path, as_json, html)


def _save_and_show(
    outcome: ProbeOutcome, out_path: Path, as_json: bool, html: Path | None = None
) -> ProbeReport:
    """Save the report always, show it, and raise for a dead server or an interruption."""
    report = outcome.report
    saved, failure = save_report_somewhere(report, out_path)
    if html is not None and failure is None:
        atomic_write(html, render_html(report_to_json(report)))
        err.print(f"HTML report saved to [bold]{html}[/]")
    if as_json:
        print_json(report_to_json(report))
    else:
        print_report(out, report)
    if failure is not None:  # measured, then the disk filled: say where the results are
        where = f"the report was saved to {saved} instead" if saved else "the report is shown above only"
        raise BadInputError(f"{failure}; {where}")
    err.print(f"Report saved to [bold]{out_path}[/]")
    if outcome.error is not None:
        raise type(outcome.error)(f"{outcome.error}; the levels measured before are in {out_path}")
    if report.interrupted:
        levels_kept = sum(len(e.levels) for e in report.endpoints)
        raise Interrupted(f"interrupted: {levels_kept} level(s) measured before Ctrl-C are in {out_path}")
    return report


T = TypeVar("T")


def _ask(question: str, default: str, accept: Callable[[str], T]) -> T:
    """Ask until `accept` takes the answer: a bad answer is said at once and asked again."""
    while True:
        answer = typer.prompt(question, default=default, err=True)
        try:
            return accept(answer)
        except FastapiTuneError as e:
            err.print(f"[red]{e}[/]")


def _app_spec(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"{text!r}: expected MODULE:ATTRIBUTE, e.g. main:app")
    return text


def _bind_spec(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if text.startswith("unix:") or (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
        return text
    raise UsageError(f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path.sock")


def _ask_profile() -> Profile:
    for name, description in list_profiles():
        err.print(f"  [cyan]{name}[/]: {description}")
    return _ask("Deployment profile (a name above or a .yaml path)", DEFAULT_PROFILE, load_profile)


_DEPLOY_HELP = (
    "Also write deployment files into this directory: a Dockerfile (exec-form CMD), and for the kubernetes"
    " profile deployment.yaml (and hpa.yaml with --target-rps)."
)
_HEALTH_HELP = "Route for the readiness/liveness probes (default: the fastest io-bound GET route measured)."


def _ask_limit(question: str, parse: Callable[[str], object]) -> str | None:
    """A limit typed at the prompt, checked; 'none' keeps this machine's figure."""
    while True:
        answer = str(typer.prompt(question, default="none", err=True)).strip()
        if answer.lower() == "none":
            return None
        try:
            parse(answer)
        except FastapiTuneError as e:
            err.print(f"[red]{e}[/]")
        else:
            return answer


def _target_facts(profile: Profile, cpus: str | None, memory: str | None, ask: bool) -> HostFacts:
    """The CPUs and memory to plan for: --cpus/--memory, else asked for a container at a terminal,
    else this machine's (with a warning when a container is sized from a machine without limits)."""
    facts = _host_facts(cpus, memory)
    if ask and runs_in_container(profile):
        if cpus is None and not cpu_is_limited(facts):
            cpus = _ask_limit(
                f"CPU limit of the container, e.g. 1 or 0.5 ('none': this host's {facts.cpu.effective:g})",
                parse_cpus_override,
            )
        if memory is None and not memory_is_limited(facts):
            memory = _ask_limit(
                "Memory limit of the container, e.g. 512M or 2G ('none': this host's"
                f" {facts.memory.effective_bytes / (1 << 30):.1f} GiB)",
                parse_memory_override,
            )
        facts = _host_facts(cpus, memory)
    warning = sizing_warning(profile, facts)
    if warning is not None:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return facts


def _interactive(yes: bool, as_json: bool) -> bool:
    """Prompts only for a person at a terminal: never with --yes, --json or piped input."""
    return not yes and not as_json and sys.stdin.isatty() and sys.stderr.isatty()


@command
def recommend(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[
        str | None, typer.Option("--app", help="The app to serve, as module:attribute (default: main:app).")
    ] = None,
    probe_path: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Probe report to plan from (default: ./fastapi-tune-probe.json if present)."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Deployment profile: vm, container, kubernetes, small-memory, or a path to a .yaml."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--out", help="Where to write the gunicorn config.")
    ] = DEFAULT_CONF,
    bind: Annotated[str | None, typer.Option(help="Address to listen on (default: the profile's).")] = None,
    worker_class: Annotated[
        str | None, typer.Option(help="uvicorn-worker (default) or asgi (gunicorn's native worker, >= 24).")
    ] = None,
    preload: Annotated[bool, flag(help="Agree to preload_app (saves memory with several workers).")] = False,
    target_rps: Annotated[
        float | None,
        typer.Option(
            help="Requests/s to plan for: with --slo, the fewest workers predicted to meet the objective"
            " at this rate; on kubernetes, the replicas."
        ),
    ] = None,
    slo: Annotated[
        str | None,
        typer.Option(
            "--slo",
            help="Objective to size for, e.g. 'p99<300ms' or 'p50<50ms,p99.9<1s,errors<0.5%'"
            " (p50/p90/p95/p99/p99.9; errors default to <1%).",
        ),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix", help="Traffic shares of the probed routes, e.g. 'GET /a=70,POST /b=30' (default: equal)."
        ),
    ] = None,
    db_max_connections: Annotated[
        int | None,
        typer.Option(help="The database's max_connections: caps workers (and replicas) so their pools fit."),
    ] = None,
    db_pool_size: Annotated[
        int | None,
        typer.Option(help="Connections one worker's pool may open (pool_size + max_overflow)."),
    ] = None,
    cpus: _Cpus = None,
    memory: _Memory = None,
    yes: Annotated[
        bool,
        flag("--yes", "-y", help="Take the defaults, never prompt; replace --out (kept as .bak)."),
    ] = False,
    as_json: Annotated[bool, flag("--json", help="Print the plan as JSON on stdout.")] = False,
    brief: Annotated[
        bool,
        flag(
            "--brief", help="The plan on one screen: workers, key settings, the command (the file has all)."
        ),
    ] = False,
    python: Annotated[
        str, typer.Option(help="Python of the app's environment: the printed commands match its versions.")
    ] = sys.executable,
    deploy: Annotated[Path | None, typer.Option(help=_DEPLOY_HELP)] = None,
    health_path: Annotated[str | None, typer.Option(help=_HEALTH_HELP)] = None,
    access_log: _AccessLog = None,
) -> None:
    """Turn host facts + the probe report + a profile into gunicorn.conf.py and a command.

    Every number comes with what was measured and why (no (2 x cores) + 1). At a terminal it asks
    for what it cannot know (app module, deployment profile, bind, overwrite); with --yes or
    without a terminal it takes the defaults and never replaces an existing file unless --yes.
    """
    check_writable(output, "--out")
    if target_rps is not None:
        checks.number(target_rps, "--target-rps", 1e-3, checks.MAX_RPS, " requests/s")
    _check_db_options(db_max_connections, db_pool_size)
    if target_rps is not None and not (math.isfinite(target_rps) and target_rps > 0):
        raise UsageError("--target-rps: expected a positive number of requests per second")
    report = load_report(probe_path)
    traffic = _recommend_traffic(report, access_log)
    ask = _interactive(yes, as_json)
    if ask:
        app_module = app_module or _ask("App to serve (module:attribute)", "main:app", _app_spec)
    chosen = _ask_profile() if ask and profile is None else load_profile(profile or DEFAULT_PROFILE)
    if ask and bind is None:
        bind = _ask("Bind address", chosen.bind, _bind_spec)
    facts = _target_facts(chosen, cpus, memory, ask)
    stack = read_app_env(python)
    choices = Choices(
        app=app_module or "main:app",
        bind=bind,
        worker_class=worker_class,
        preload=preload,
        target_rps=target_rps,
        gunicorn_version=stack.gunicorn,
        stack=stack,
        db_max_connections=db_max_connections,
        db_pool_size=db_pool_size,
        objective=parse_slo(slo) if slo else None,
        mix=parse_mix(mix) if mix else None,
    )
    defaults = None if traffic is None else traffic_defaults(choices, traffic, report)
    plan = make_plan(facts, report, chosen, defaults.choices if defaults else choices)
    if defaults is not None:
        plan = with_traffic_input(plan, defaults)
        _say_defaults(defaults)
    _show_and_write(plan, output, consent=yes, ask=ask, as_json=as_json, brief=brief)
    if deploy is not None:
        spec = decide_deploy(plan, report, chosen, facts, Path.cwd().name, health_path, output.name)
        for name, text in deploy_files(spec):
            _show_and_write_file(deploy / name, text, consent=yes, ask=ask)


def _recommend_traffic(report: ProbeReport | None, access_log: list[str] | None) -> TrafficProfile | None:
    """The traffic to plan for: --access-log matched to the report's routes, else the report's own."""
    if not access_log:
        return None if report is None else report.traffic
    if report is None:
        raise UsageError(
            "--access-log needs the app's routes to match requests to: probe the app first"
            " (`fastapi-tune probe URL`), or pass --probe REPORT"
        )
    return _read_logs(lambda p: read_access_logs(access_log, report_routes(report), p))


def _say_defaults(defaults: TrafficDefaults) -> None:
    err.print(escape(defaults.line), highlight=False)
    for note in defaults.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def _check_db_options(max_connections: int | None, pool_size: int | None) -> None:
    if (max_connections is None) != (pool_size is None):
        raise UsageError("--db-max-connections and --db-pool-size go together: the cap needs both")
    if max_connections is not None and not 1 <= max_connections <= 1_000_000:
        raise UsageError("--db-max-connections: expected a number of connections from 1 to 1000000")
    if pool_size is not None and not 1 <= pool_size <= 100_000:
        raise UsageError("--db-pool-size: expected connections per worker from 1 to 100000")


def _show_and_write(
    plan: Plan, output: Path, consent: bool, ask: bool, as_json: bool, brief: bool = False
) -> None:
    """Print the plan, then write gunicorn.conf.py without ever replacing a file silently."""
    text = render_gunicorn_conf(plan)
    if as_json:
        print_json(plan_to_json(plan))
    elif brief:
        print_brief(out, plan)
    else:
        print_plan(out, plan)
    _show_and_write_file(output, text, consent, ask)


def _show_and_write_file(output: Path, text: str, consent: bool, ask: bool) -> None:
    """Write one generated file, asking before replacing a different one (a backup is kept)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if existing_state(output, text) is Overwrite.ASK and ask:
        consent = typer.confirm(
            f"{output} exists and differs. Replace it (the old one is kept as a backup)?", err=True
        )
        if not consent:
            err.print(f"Left {output} as it was; the new config was not written.")
            return
    written = write_output(output, text, consent)
    if written.unchanged:
        err.print(f"{output} already holds this config; nothing written.")
    else:
        saved = f" (previous version kept as {written.backup})" if written.backup else ""
        check = f" Check it: gunicorn --check-config -c {output}" if output.suffix == ".py" else ""
        err.print(f"Wrote [bold]{output}[/]{saved}.{check}")


@command
def demo(
    output: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Directory for the probe report and gunicorn.conf.py (default: a temp dir)."
        ),
    ] = None,
    max_seconds: Annotated[float, typer.Option(help="Time budget for the probe.")] = 45.0,
    as_json: Annotated[
        bool, flag("--json", help="Print the probe report and the plan as one JSON object on stdout.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts) here.")
    ] = None,
) -> None:
    """Run the whole loop on a bundled sample app: start it, probe, classify, recommend, stop it.

    The sample app (fastapi_tune.sample_app) has one route of each kind: async I/O, a `def` route
    doing blocking I/O, a blocking call inside `async def`, and CPU-heavy work. It is served by one
    uvicorn worker on a free loopback port, and stopped whatever happens (Ctrl-C included).
    """
    max_seconds = checks.number(max_seconds, "--max-seconds", checks.MIN_BUDGET_S, checks.MAX_SECONDS)
    facts = read_host()
    directory = output or Path(tempfile.mkdtemp(prefix="fastapi-tune-demo-"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"--dir {directory}: cannot create the directory ({e.strerror or e})") from None
    report_path = directory / "fastapi-tune-probe.json"
    check_writable(report_path, "--dir")
    check_writable(directory / "gunicorn.conf.py", "--dir")
    err.print(f"[bold]Sample app[/] {SAMPLE_APP} under 1 uvicorn worker on a free loopback port")
    with LiveProgress(err) as progress:
        result = run_demo(facts, max_seconds, progress)
    conf = directory / "gunicorn.conf.py"
    if as_json:
        save_report(result.outcome.report, report_path)
        print_json({"report": report_to_json(result.outcome.report), "plan": plan_to_json(result.plan)})
        write_output(conf, render_gunicorn_conf(result.plan), consent=True)
    else:
        _save_and_show(result.outcome, report_path, False, html)
        out.rule("Recommendation")
        _show_and_write(result.plan, conf, consent=True, ask=False, as_json=False)
    err.print(f"Demo files are in [bold]{directory}[/]. Prove the recommendation against the alternatives:")
    err.print(f"  fastapi-tune verify {SAMPLE_APP} -c {conf} --probe {report_path} --sweep", soft_wrap=True)


def _refuse_early(paths: list[Path], yes: bool, ask: bool) -> bool:
    """Consent to replace existing outputs, settled before minutes of measuring: True to replace."""
    existing = [p for p in paths if p.exists()]
    if not existing or yes:
        return True
    names = ", ".join(str(p) for p in existing)
    if not ask:
        raise RefusedError(
            f"{names} already exist(s); not replacing without consent: pass --yes (old files are kept as"
            " backups) or write elsewhere (--output, --deploy)"
        )
    if not typer.confirm(f"{names} exist(s). Replace when done (old files are kept as backups)?", err=True):
        raise RefusedError(f"left {names} as they were; pass --output or --deploy to write elsewhere")
    return True


@command
def tune(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[str, typer.Argument(help="Your app, as module:attribute (e.g. main:app).")],
    python: Annotated[
        str, typer.Option(help="Python of the app's environment (default: this one).")
    ] = sys.executable,
    app_dir: Annotated[Path, typer.Option(help="Directory the app imports from (default: here).")] = Path(),
    profile: Annotated[
        str | None,
        typer.Option(help="Deployment profile: vm, container, kubernetes, small-memory, or a .yaml path."),
    ] = None,
    cpus: Annotated[
        str | None, typer.Option(help="CPU limit where it will run (container/pod), e.g. 1 or 0.5.")
    ] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory limit where it will run (container/pod), e.g. 512M.")
    ] = None,
    target_rps: Annotated[
        float | None, typer.Option(help="Requests/s to size replicas for (kubernetes profile).")
    ] = None,
    bind: Annotated[str | None, typer.Option(help="Address to listen on (default: the profile's).")] = None,
    worker_class: Annotated[
        str | None, typer.Option(help="uvicorn-worker (default) or asgi (gunicorn's native worker, >= 24).")
    ] = None,
    preload: Annotated[bool, flag(help="Agree to preload_app (saves memory with several workers).")] = False,
    output: Annotated[
        Path, typer.Option("-o", "--out", help="Where to write the gunicorn config.")
    ] = DEFAULT_CONF,
    out_path: Annotated[Path, typer.Option("--report", help="Where the probe report is saved.")] = Path(
        "fastapi-tune-probe.json"
    ),
    deploy: Annotated[Path | None, typer.Option(help=_DEPLOY_HELP)] = None,
    health_path: Annotated[str | None, typer.Option(help=_HEALTH_HELP)] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option("-e", "--endpoint", help="Probe exactly this 'METHOD /path' (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Skip paths matching this glob, e.g. '/admin/*' (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("-H", "--header", help="'Name: value' sent with every request.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="NAME=VALUE for a path or query parameter (repeatable)."),
    ] = None,
    max_seconds: Annotated[float, typer.Option(help="Time budget for the probe.")] = 40.0,
    verify_it: Annotated[
        bool,
        flag("--verify", help="Then measure the config against the rule of thumb and one worker."),
    ] = False,
    yes: Annotated[
        bool,
        flag("--yes", "-y", help="Take the defaults, never prompt; replace files (kept as .bak)."),
    ] = False,
    as_json: Annotated[bool, flag("--json", help="Print report, plan and files as one JSON object.")] = False,
    access_log: _AccessLog = None,
) -> None:
    """Your own app in one command: start it, probe it, recommend, write the config, stop it.

    Serves APP with one uvicorn worker from the app's environment (--python, --app-dir) on a free
    loopback port, probes and classifies every endpoint, plans for where it will run (--profile,
    --cpus, --memory), writes gunicorn.conf.py (and with --deploy a Dockerfile and Kubernetes
    files), and with --verify proves the config. The app is stopped whatever happens.
    """
    ask = _interactive(yes, as_json)
    chosen = _ask_profile() if ask and profile is None else load_profile(profile or DEFAULT_PROFILE)
    target = _target_facts(chosen, cpus, memory, ask)
    paths = [output] + ([deploy / n for n in ("Dockerfile", "deployment.yaml", "hpa.yaml")] if deploy else [])
    consent = _refuse_early(paths, yes, ask)
    options = TuneOptions(
        app=app_module,
        profile=chosen,
        choices=Choices(
            app=app_module, bind=bind, worker_class=worker_class, preload=preload, target_rps=target_rps
        ),
        probe=ProbeOptions(
            url="",
            endpoints=tuple(endpoint or ()),
            excludes=tuple(exclude or ()),
            headers=tuple(header or ()),
            params=tuple(param or ()),
            max_seconds=max_seconds,
        ),
        python=python,
        app_dir=app_dir,
        report_path=out_path,
        conf_path=output,
        deploy_dir=deploy,
        health_path=health_path,
        replace=consent,
        verify=verify_it,
        access_logs=tuple(access_log or ()),
    )
    if deploy is not None:
        deploy.mkdir(parents=True, exist_ok=True)
    result = run_tune(options, read_host(), target, TuneProgress(err))
    _show_tune(result, out_path, as_json)


def _show_tune(result: TuneResult, out_path: Path, as_json: bool) -> None:
    """Print the run, say where its files went, and raise for a dead app or an interruption."""
    if as_json:
        print_json(tune_to_json(result))
    else:
        print_tune(out, result)
    err.print(f"Report saved to [bold]{out_path}[/]")
    outcome = result.outcome
    if outcome.error is not None:
        raise type(outcome.error)(f"{outcome.error}; the levels measured before are in {out_path}")
    if outcome.report.interrupted:
        raise Interrupted(f"interrupted: what was measured is in {out_path}; the app was stopped")
    if result.traffic is not None:
        _say_defaults(result.traffic)
    print_files(err, result)
    if result.verify is not None and result.verify.interrupted:
        raise Interrupted("interrupted during --verify; every server started was stopped")


@command
def verify(  # long mostly in its signature: one typer parameter per option
    app_module: Annotated[str, typer.Argument(help="The app, as module:attribute (e.g. main:app).")],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The gunicorn.conf.py to verify.")
    ] = DEFAULT_CONF,
    probe_path: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Report whose endpoints make the load (default: ./fastapi-tune-probe.json)."
        ),
    ] = None,
    endpoint: Annotated[
        list[str] | None,
        typer.Option("-e", "--endpoint", help="Drive this 'GET /path' instead (repeatable)."),
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("-H", "--header", help="'Name: value' sent with every request.")
    ] = None,
    python: Annotated[
        str, typer.Option(help="Python of the environment where the app imports.")
    ] = sys.executable,
    app_dir: Annotated[Path, typer.Option(help="Directory the app imports from.")] = Path(),
    concurrency: Annotated[int, typer.Option(help="Concurrent connections for every run.")] = 64,
    duration: Annotated[float, typer.Option(help="Counted seconds per run (after 1 s warm-up).")] = 3.0,
    repeat: Annotated[
        int, typer.Option(help="Rounds through every configuration; the table shows medians.")
    ] = 3,
    sweep: Annotated[
        bool,
        flag("--sweep", help="Also try 1 .. 2 x effective CPUs workers and show which was best."),
    ] = False,
    slo: Annotated[
        str | None,
        typer.Option(
            "--slo",
            help="Objective, e.g. 'p99<300ms,errors<1%': judged at --rate (exit 7 when the recommended"
            " config misses it) and by --capacity.",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", help="Also drive every configuration at this arrival rate (req/s, open loop)."
        ),
    ] = None,
    capacity: Annotated[
        bool,
        flag("--capacity", help="Find each configuration's highest arrival rate meeting --slo (~15 s each)."),
    ] = False,
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix", help="Traffic shares of the routes driven, e.g. 'GET /a=70,GET /b=30' (default: equal)."
        ),
    ] = None,
    as_json: Annotated[bool, flag("--json", help="Print runs[] and the verdict as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report (charts) here.")
    ] = None,
) -> None:
    """Prove a recommendation: run it against the rule of thumb and a single worker on the real app.

    Starts gunicorn with --config on a free loopback port (only --bind, and --workers for the
    baselines, are overridden; WEB_CONCURRENCY, BIND and PORT are ignored), drives it with the
    same load (every connection sends the probe report's endpoints in turn), stops it, and moves
    to the next: recommended, rule-of-thumb (2 x cores + 1), single-worker, and with --sweep every
    count from 1 to 2 x effective CPUs. --repeat interleaved rounds; the table shows medians.
    """
    if html is not None:
        check_writable(html, "--html")
    facts = read_host()
    report = None if endpoint else load_report(probe_path)
    options = VerifyOptions(
        app=app_module,
        config=config,
        python=python,
        app_dir=app_dir,
        endpoints=tuple(endpoint or ()),
        headers=tuple(header or ()),
        concurrency=concurrency,
        duration_s=duration,
        repeat=repeat,
        sweep=sweep,
        mix=parse_mix(mix) if mix else None,
        objective=parse_slo(slo) if slo else None,
        rate_rps=rate,
        capacity=capacity,
    )
    for note in verify_notes(options, report):
        err.print(f"[yellow]note:[/] {escape(note)}")
    with VerifyProgress(err) as progress:
        result = run_verify(options, facts, report, progress)
    if as_json:
        print_json(verify_to_json(result))
    else:
        print_verify(out, result)
    if html is not None:
        atomic_write(
            html, render_html(report_to_json(report) if report else {}, None, verify_to_json(result))
        )
        err.print(f"HTML report saved to [bold]{html}[/]")
    if result.interrupted:
        raise Interrupted(f"interrupted after {len(result.runs)} run(s); every server started was stopped")
    _verify_exit(result)


def _verify_exit(result: VerifyResult) -> None:
    """The exit code CI gates on: the objective missed (7) first, then runs with errors (8)."""
    if result.slo_met is False and result.slo_line is not None:
        raise SloMissedError(result.slo_line)
    out_of_play = result.verdict.not_comparable if result.verdict else tuple(r.names for r in result.runs)
    if out_of_play:
        raise RunErrorsError("runs not comparable: " + "; ".join(out_of_play))


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BadInputError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadInputError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    return data


@command
def report(
    path: Annotated[Path, typer.Argument(help="A saved probe report (fastapi-tune-probe.json).")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the HTML report.")],
    plan: Annotated[Path | None, typer.Option("--plan", help="`recommend --json` output to include.")] = None,
    verify_json: Annotated[
        Path | None, typer.Option("--verify", help="`verify --json` output to include.")
    ] = None,
) -> None:
    """Render a saved probe report (and optionally a plan and a verify run) as one HTML page.

    The page is self-contained: inline SVG charts, no scripts, nothing fetched when it opens.
    """
    data = _read_json_object(path)
    plan_data = _read_json_object(plan) if plan else None
    verify_data = _read_json_object(verify_json) if verify_json else None
    atomic_write(html, render_html(data, plan_data, verify_data))
    err.print(f"HTML report saved to [bold]{html}[/]")


@command
def traffic(
    access_log: Annotated[
        list[str],
        typer.Option(
            "--access-log",
            help="Access log (nginx/gunicorn combined, uvicorn, JSON lines; .gz read directly; - for stdin);"
            " repeatable: several servers' logs add up.",
        ),
    ],
    probe_path: Annotated[
        Path | None,
        typer.Option(
            "--probe", help="Probe report whose routes to match (default: ./fastapi-tune-probe.json)."
        ),
    ] = None,
    openapi: Annotated[
        Path | None,
        typer.Option("--openapi", help="The app's OpenAPI document as a file (instead of a probe report)."),
    ] = None,
    as_json: Annotated[bool, flag("--json", help="Print the traffic profile as JSON on stdout.")] = False,
) -> None:
    """What production traffic looks like, from access logs: each route's share, the peak rate, statuses.

    Every request is matched to the app's path templates (from --openapi, or the probe report):
    /orders/123 -> GET /orders/{oid}, the most specific template winning. Unmatched paths are counted,
    never guessed. The peak is the highest mean rate over any 60 s. `recommend --access-log` plans
    for this mix and peak; `probe --access-log` measures the busiest routes first.
    """
    if openapi is not None:
        routes = document_routes(_read_json_object(openapi), str(openapi))
    else:
        report = load_report(probe_path)
        if report is None:
            raise UsageError(
                "traffic: the app's routes are needed to match requests to: pass --openapi FILE"
                " (the app's /openapi.json) or --probe REPORT (run `fastapi-tune probe URL` first)"
            )
        routes = report_routes(report)
    profile = _read_logs(lambda p: read_access_logs(access_log, routes, p), say=as_json)
    if as_json:
        print_json(traffic_to_json(profile))
    else:
        print_traffic(out, profile)


_EXPORT_REPORT = typer.Option(
    "--report",
    help="The probe report whose endpoints and levels to reproduce (default: ./fastapi-tune-probe.json).",
)


def _export(
    kind: str,
    report_path: Path | None,
    out_path: Path,
    mix: str | None,
    levels: str | None,
    seconds: float,
    together: bool,
    rate: float | None,
    slo: str | None,
    header: list[str] | None,
) -> None:
    report = load_report(report_path or DEFAULT_REPORT)
    if report is None:
        raise BadInputError(
            f"{report_path or DEFAULT_REPORT}: no probe report; run `fastapi-tune probe URL` first"
        )
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise UsageError("--rate: expected a positive number of requests per second")
    if not (math.isfinite(seconds) and 1 <= seconds <= 3600):
        raise UsageError("--seconds: expected seconds per step from 1 to 3600")
    spec = spec_from_report(
        report,
        parse_mix(mix) if mix else None,
        levels=_parse_levels(levels),
        seconds=seconds,
        isolate=not together,
        rate=rate,
        objective=parse_objective(slo) if slo else None,
        header_names=[parse_header(h)[0] for h in header or ()],
    )
    text = render_locust(spec) if kind == "locust" else render_k6(spec)
    written = write_output(out_path, text, consent=True)
    saved = f" (previous version kept as {written.backup})" if written.backup else ""
    err.print(f"Wrote [bold]{out_path}[/]{saved}; how to run it is at its top.")


_ExportMix = Annotated[
    str | None, typer.Option("--mix", help="Route weights, e.g. 'GET /a=70,POST /b=30' (default: equal).")
]
_ExportLevels = Annotated[
    str | None,
    typer.Option("--levels", help="Concurrency ladder, e.g. 1,8,64 (default: the probe's levels)."),
]
_ExportSeconds = Annotated[
    float, typer.Option("--seconds", help="Seconds per ladder step (Locust: 20-30 s).")
]
_ExportTogether = Annotated[
    bool,
    flag("--together", help="Drive the routes mixed in every step (default: one route at a time)."),
]
_ExportRate = Annotated[
    float | None, typer.Option("--rate", help="An arrival rate (req/s) instead of a ladder; needs --slo.")
]
_ExportSlo = Annotated[
    str | None, typer.Option("--slo", help="The objective as thresholds, e.g. 'p99<300ms,errors<1%'.")
]
_ExportHeader = Annotated[
    list[str] | None,
    typer.Option(
        "-H",
        "--header",
        help="'Name: value': only the NAME goes in the file; the value is read from"
        " an environment variable at run time.",
    ),
]
_ExportOut = Annotated[Path, typer.Option("-o", "--out", help="Where to write the script.")]


@subcommand(export_app, "locust")
def export_locust(
    out_path: _ExportOut = Path("locustfile.py"),
    report_path: Annotated[Path | None, _EXPORT_REPORT] = None,
    mix: _ExportMix = None,
    levels: _ExportLevels = None,
    seconds: _ExportSeconds = 20.0,
    together: _ExportTogether = False,
    rate: _ExportRate = None,
    slo: _ExportSlo = None,
    header: _ExportHeader = None,
) -> None:
    """A locustfile that reproduces the probe (a LoadTestShape ladder, or a rate with its objective)."""
    _export("locust", report_path, out_path, mix, levels, seconds, together, rate, slo, header)


@subcommand(export_app, "k6")
def export_k6(
    out_path: _ExportOut = Path("load.js"),
    report_path: Annotated[Path | None, _EXPORT_REPORT] = None,
    mix: _ExportMix = None,
    levels: _ExportLevels = None,
    seconds: _ExportSeconds = 10.0,
    together: _ExportTogether = False,
    rate: _ExportRate = None,
    slo: _ExportSlo = None,
    header: _ExportHeader = None,
) -> None:
    """A k6 script that reproduces the probe (stages, or constant-arrival-rate with thresholds)."""
    _export("k6", report_path, out_path, mix, levels, seconds, together, rate, slo, header)


def _imported(report: ProbeReport, out_path: Path, as_json: bool) -> None:
    outcome = ProbeOutcome(report=classify_report(report))
    _save_and_show(outcome, out_path, as_json)


_ImportOut = Annotated[Path, typer.Option("-o", "--out", help="Where the probe report is saved.")]
_ImportJson = Annotated[bool, flag("--json", help="Also print the report as JSON on stdout.")]
_ImportWorkers = Annotated[
    int | None, typer.Option("--workers", help="Worker processes the measured server ran (for the knees).")
]


@subcommand(import_app, "locust")
def import_locust_cmd(
    prefix: Annotated[Path, typer.Argument(help="The --csv PREFIX of a `--csv-full-history` run.")],
    out_path: _ImportOut = DEFAULT_REPORT,
    workers: _ImportWorkers = None,
    as_json: _ImportJson = False,
) -> None:
    """Turn Locust's CSV history into a probe report: levels per route and user count, classified."""
    report = import_locust(prefix)
    _imported(replace(report, server=replace(report.server, workers=workers)), out_path, as_json)


@subcommand(import_app, "k6")
def import_k6_cmd(
    files: Annotated[list[Path], typer.Argument(help="`k6 run --out json=FILE` output (one per instance).")],
    out_path: _ImportOut = DEFAULT_REPORT,
    workers: _ImportWorkers = None,
    as_json: _ImportJson = False,
) -> None:
    """Turn k6's JSON output into a probe report: levels per route and stage, classified."""
    report = import_k6(*files)
    _imported(replace(report, server=replace(report.server, workers=workers)), out_path, as_json)


def main() -> None:
    """Entry point: run the app, turning our errors into one red line and an exit code.

    typer (its vendored click) handles usage errors itself (exit 2) and lets other
    exceptions through; ours carry the exit code the README lists.
    """
    try:
        app()
    except FastapiTuneError as e:
        sys.exit(_report_error(e))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as e:  # anything else is a bug: one line, the traceback with --debug
        if _state["debug"]:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {escape(redact_text(str(e)))}"
            " (run with --debug for the traceback)",
            highlight=False,
        )
        sys.exit(int(ExitCode.ERROR))
