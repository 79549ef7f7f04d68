"""Session fixtures shared by the test modules."""

from __future__ import annotations

from tests.pg import postgres

__all__ = ["postgres"]
