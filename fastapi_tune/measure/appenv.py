"""The user's app in its own environment: the server stack's versions there, and serving the app.

Commands printed for an app must work in the app's environment, not fastapi-tune's: a uvicorn
0.40 there rejects a flag that a newer uvicorn here accepts (FIELD-NOTES). So the versions are
read by running the app's own Python, and the app is served by that Python from its directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi_tune.core.errors import ServerFailedError, UsageError
from fastapi_tune.measure.launch import Running, free_port, run_server

# The distributions whose versions decide which commands and flags work.
STACK: Final = (
    "gunicorn", "uvicorn", "uvicorn-worker", "granian", "fastapi", "fastapi-cli", "fastapi-cli-slim",
)  # fmt: skip
_SCRIPT: Final = (
    "import importlib.metadata as m, json, platform\n"
    "def v(d):\n"
    "    try:\n"
    "        return m.version(d)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    f"print(json.dumps({{'python': platform.python_version(), **{{d: v(d) for d in {STACK!r}}}}}))\n"
)
# Starting an interpreter and importing importlib.metadata takes well under a second; a slow
# network filesystem may take a few.
_VERSIONS_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class AppEnv:
    """The Python that runs the app and the server stack installed there (None: not installed)."""

    python: str
    python_version: str | None = None
    gunicorn: str | None = None
    uvicorn: str | None = None
    uvicorn_worker: str | None = None
    granian: str | None = None
    fastapi: str | None = None
    fastapi_cli: str | None = None  # fastapi-cli or fastapi-cli-slim: what provides `fastapi run`


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """'0.41.0' -> (0, 41, 0); None for None or text without a number."""
    if text is None:
        return None
    numbers = tuple(int(x) for x in re.findall(r"\d+", text)[:3])
    return numbers or None


def parse_app_env(python: str, text: str) -> AppEnv:
    """The JSON the probe script printed, as an AppEnv (junk gives an AppEnv with nothing known)."""
    try:
        raw = json.loads(text.strip().splitlines()[-1]) if text.strip() else {}
    except json.JSONDecodeError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {}

    def get(name: str) -> str | None:
        value = raw.get(name)
        return value if isinstance(value, str) else None

    return AppEnv(
        python=python,
        python_version=get("python"),
        gunicorn=get("gunicorn"),
        uvicorn=get("uvicorn"),
        uvicorn_worker=get("uvicorn-worker"),
        granian=get("granian"),
        fastapi=get("fastapi"),
        fastapi_cli=get("fastapi-cli") or get("fastapi-cli-slim"),
    )


def read_app_env(python: str, app_dir: Path = Path()) -> AppEnv:
    """Run `python` and read the server stack's versions installed there."""
    try:
        proc = subprocess.run(
            [python, "-c", _SCRIPT],
            cwd=app_dir,
            capture_output=True,
            text=True,
            timeout=_VERSIONS_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"--python {python}: cannot run it ({e}); pass the app's interpreter") from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise UsageError(f"--python {python}: it failed to run ({tail[0]}); pass the app's interpreter")
    return parse_app_env(python, proc.stdout)


# ---------------------------------------------------------------------------------------
# Serving the app


def _cause(log: str) -> str:
    """The line of a server's output that names what went wrong (its last error line)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"(Error|Exception)\b", line) and ":" in line]
    return (errors or lines or ["no output"])[-1]


def _hint(cause: str, app: str, python: str, app_dir: Path) -> str:
    module = app.partition(":")[0]
    if "No module named uvicorn" in cause or "No module named 'uvicorn'" in cause:
        return f"uvicorn is not installed for {python}: pass --python with the app's own interpreter"
    if "Attribute" in cause and "not found" in cause:
        return f"check the name after the colon in {app}"
    if "import module" in cause or "ModuleNotFoundError" in cause or "ImportError" in cause:
        return (
            f"can {module!r} be imported from {app_dir}? run from the app's directory or pass"
            " --app-dir DIR, and --python for the environment where its dependencies are installed"
        )
    return "pass --app-dir for the directory the app imports from and --python for its environment"


def boot_failure(app: str, python: str, app_dir: Path, detail: str) -> str:
    """One line that says why the app did not start and what to try, then the server's last lines."""
    head, _, log = detail.partition("\n")
    cause = _cause(log)
    return f"{app} did not start ({cause}); {_hint(cause, app, python, app_dir)}\n{head}\n{log}".rstrip()


@contextmanager
def app_server(app: str, env: AppEnv, app_dir: Path) -> Iterator[Running]:
    """Serve `app` the way developers run it locally: one uvicorn worker from the app's own Python,
    in its directory, on a free loopback port; stopped whatever happens."""
    if env.uvicorn is None:
        raise ServerFailedError(
            f"uvicorn is not installed for {env.python}: pass --python with the app's own interpreter,"
            " or pip install uvicorn there"
        )
    port = free_port()
    argv = [
        env.python, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    directory = app_dir.resolve()
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join([str(directory), *filter(None, [child_env.get("PYTHONPATH")])])
    started = False
    try:
        with run_server(argv, port, cwd=directory, env=child_env, name=f"{app} under uvicorn") as running:
            started = True
            yield running
    except ServerFailedError as e:
        if started:
            raise
        raise ServerFailedError(boot_failure(app, env.python, directory, str(e))) from None
