"""The console script: stop signals are handled before the (slow) imports, so an early Ctrl-C or
SIGTERM ends with exit 130 and one line, never a traceback."""

from __future__ import annotations

import sys

from fastapi_tune.core.signals import install_interrupt_handlers

_INTERRUPTED = (
    130  # errors.ExitCode.INTERRUPTED, not imported: errors pulls in nothing slow, but stay minimal
)


def main() -> None:
    """Install the signal handlers, import the CLI, run it."""
    install_interrupt_handlers()
    try:
        from fastapi_tune.cli.app import main as cli_main  # noqa: PLC0415 - imported under the handlers
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(_INTERRUPTED)
    cli_main()
