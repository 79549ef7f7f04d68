"""Session fixtures shared by the test modules, the one environment fact every test shares, and the
order the test files start in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The CLI's stdout is 120 columns wide when piped unless COLUMNS says otherwise, and rich's own
# fallback is 80: tests that read a table must not depend on the terminal pytest runs in (a tty, a
# pipe, an xdist worker). Set before any test imports the CLI, whose consoles read it once.
os.environ["COLUMNS"] = "120"

from tests.pg import postgres

__all__ = ["postgres"]

# The files that took longest (`pytest --durations`, 2 cores: 280, 113, 90, 57, 55, 50 s...), started
# first: the workers take whole files in order (--dist loadfile), and a long file started last
# would leave the other workers idle while it ends the run.
LONGEST_FIRST = (
    "test_load_agreement.py",
    "test_overload_live.py",
    "test_slo_live.py",
    "test_classify_live.py",
    "test_terminal_report.py",
    "test_check_live.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = Path(str(item.path)).name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's own order, and the rest's, unchanged
