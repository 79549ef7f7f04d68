"""Questions asked on a terminal (never without one), and consent before a file is replaced."""

from __future__ import annotations

import select
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.markup import escape

from fastapi_tune.cli.base import err
from fastapi_tune.cli.options import host_facts
from fastapi_tune.core.errors import (
    FastapiTuneError,
    RefusedError,
    UsageError,
)
from fastapi_tune.core.fileio import Overwrite, existing_state, write_output
from fastapi_tune.measure.host import (
    HostFacts,
    parse_cpus_override,
    parse_memory_override,
)
from fastapi_tune.plan.profiles import DEFAULT_PROFILE, Profile, list_profiles, load_profile
from fastapi_tune.plan.target import (
    cpu_is_limited,
    memory_is_limited,
    runs_in_container,
    sizing_warning,
)

T = TypeVar("T")


# How often a prompt waiting for its answer lets Python run a pending signal handler.
_PROMPT_WAKE_S = 0.1


def _answer(prompt: str) -> str:
    """Show `prompt` on stderr and read one line from the terminal; Ctrl-C ends it at once.

    Not input() (typer.prompt): a Ctrl-C that lands between the prompt's write and input()'s read
    is only noticed at the next key (CPython runs the handler when the read is interrupted, and this
    one had not started): measured, 1 run in 6 hung on a busy machine. Waiting for the line in short
    selects lets the handler run within _PROMPT_WAKE_S.
    """
    typer.echo(prompt, nl=False, err=True)
    while not select.select([sys.stdin], [], [], _PROMPT_WAKE_S)[0]:
        pass
    line = sys.stdin.readline()
    if not line:
        raise typer.Abort  # end of input: as click does, and exit 130 like a Ctrl-C (cli/base.py)
    return line.rstrip("\r\n")


def prompt(question: str, default: str) -> str:
    """The answer to `question`, `default` when it is left empty."""
    return _answer(f"{question} [{default}]: ") or default


def confirm(question: str) -> bool:
    """Yes or no (no by default)."""
    return _answer(f"{question} [y/N]: ").strip().lower() in ("y", "yes")


def ask_value(question: str, default: str, accept: Callable[[str], T]) -> T:
    """Ask until `accept` takes the answer: a bad answer is said at once and asked again."""
    while True:
        answer = prompt(question, default)
        try:
            return accept(answer)
        except FastapiTuneError as e:
            err.print(f"[red]{e}[/]")


def app_spec(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise UsageError(f"{text!r}: expected MODULE:ATTRIBUTE, e.g. main:app")
    return text


def bind_spec(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if text.startswith("unix:") or (sep and host and port.isdigit() and 1 <= int(port) <= 65535):
        return text
    raise UsageError(f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:8000) or unix:/path.sock")


def ask_profile() -> Profile:
    for name, description in list_profiles():
        err.print(f"  [cyan]{name}[/]: {description}")
    return ask_value("Deployment profile (a name above or a .yaml path)", DEFAULT_PROFILE, load_profile)


def _ask_limit(question: str, parse: Callable[[str], object]) -> str | None:
    """A limit typed at the prompt, checked; 'none' keeps this machine's figure."""
    while True:
        answer = prompt(question, "none").strip()
        if answer.lower() == "none":
            return None
        try:
            parse(answer)
        except FastapiTuneError as e:
            err.print(f"[red]{e}[/]")
        else:
            return answer


def target_facts(profile: Profile, cpus: str | None, memory: str | None, ask: bool) -> HostFacts:
    """The CPUs and memory to plan for: --cpus/--memory, else asked for a container at a terminal,
    else this machine's (with a warning when a container is sized from a machine without limits)."""
    facts = host_facts(cpus, memory)
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
        facts = host_facts(cpus, memory)
    warning = sizing_warning(profile, facts)
    if warning is not None:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return facts


def interactive(yes: bool, as_json: bool) -> bool:
    """Prompts only for a person at a terminal: never with --yes, --json or piped input."""
    return not yes and not as_json and sys.stdin.isatty() and sys.stderr.isatty()


def show_and_write_file(output: Path, text: str, consent: bool, ask: bool, executable: bool = False) -> None:
    """Write one generated file, asking before replacing a different one (a backup is kept)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if existing_state(output, text) is Overwrite.ASK and ask:
        consent = confirm(f"{output} exists and differs. Replace it (the old one is kept as a backup)?")
        if not consent:
            err.print(f"Left {output} as it was; the new config was not written.")
            return
    written = write_output(output, text, consent)
    if executable:
        output.chmod(output.stat().st_mode | 0o111)  # a script to run: ./run-granian.sh
    if written.unchanged:
        err.print(f"{output} already holds this config; nothing written.")
    else:
        saved = f" (previous version kept as {written.backup})" if written.backup else ""
        check = f" Check it: gunicorn --check-config -c {output}" if output.suffix == ".py" else ""
        check = f" Run it from the app's directory: sh {output}" if executable else check
        err.print(f"Wrote [bold]{output}[/]{saved}.{check}")


def refuse_early(paths: list[Path], yes: bool, ask: bool) -> bool:
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
    if not confirm(f"{names} exist(s). Replace when done (old files are kept as backups)?"):
        raise RefusedError(f"left {names} as they were; pass --output or --deploy to write elsewhere")
    return True
