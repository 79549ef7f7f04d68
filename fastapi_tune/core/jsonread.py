"""Reading JSON that someone else wrote: every value checked where it enters, errors that name it.

One reader for the probe report, the host facts inside it and the other documents fastapi-tune
reads back, so that "a number" means the same everywhere: finite (JSON parsers accept NaN and
Infinity), and within the range the caller states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi_tune.core.errors import BadInputError


class JsonReader:
    """Typed accessors over parsed JSON; each failure names the source, the key and the expectation."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, expected: str) -> BadInputError:
        """The error for a value at `where` that is not `expected`."""
        prefix = f"{self.source}: " if self.source else ""
        return BadInputError(f"{prefix}{where}: expected {expected}")

    def obj(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "an object")
        return value

    def num(self, value: object, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, "a finite number")
        if not lo <= value <= hi:
            raise self.fail(where, f"a number from {lo:g} to {hi:g} (got {value:g})")
        return float(value)

    def opt_num(self, value: object, where: str, lo: float = -math.inf, hi: float = math.inf) -> float | None:
        return None if value is None else self.num(value, where, lo, hi)

    def int_(self, value: object, where: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "an integer")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(where, f"an integer from {lo} to {hi} (got {value})")
        return value

    def opt_int(self, value: object, where: str, lo: int | None = None, hi: int | None = None) -> int | None:
        return None if value is None else self.int_(value, where, lo, hi)

    def str_(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "a string")
        return value

    def opt_str(self, value: object, where: str) -> str | None:
        return None if value is None else self.str_(value, where)

    def bool_(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false")
        return value

    def list_(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "a list")
        return value
