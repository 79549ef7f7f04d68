"""The demo's sample server: the bundled app under one uvicorn worker on a free loopback port."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from fastapi_tune.core.errors import ServerFailedError
from fastapi_tune.measure.launch import Running, free_port, run_server

SAMPLE_APP: Final = "fastapi_tune.sample_app:app"


def check_server_stack() -> None:
    """The demo serves an app: fastapi and uvicorn must be importable (the `demo` extra)."""
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ServerFailedError(f"the demo needs {' and '.join(missing)}: pip install 'fastapi-tune[demo]'")


@contextmanager
def sample_server() -> Iterator[Running]:
    """Serve the sample app the way developers run locally: one uvicorn worker."""
    check_server_stack()
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", SAMPLE_APP, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with run_server(argv, port, name="the sample app (uvicorn)") as running:
        yield running
