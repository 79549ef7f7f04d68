"""Session fixtures shared by the test modules, and the one environment fact every test shares."""

from __future__ import annotations

import os

# The CLI's stdout is 120 columns wide when piped unless COLUMNS says otherwise, and rich's own
# fallback is 80: tests that read a table must not depend on the terminal pytest runs in (a tty, a
# pipe, an xdist worker). Set before any test imports the CLI, whose consoles read it once.
os.environ["COLUMNS"] = "120"

from tests.pg import postgres

__all__ = ["postgres"]
