"""Reading the tool's JSON tolerantly for the HTML report, and escaping every value on the way out.

JSON from older or newer versions, or edited by hand: a missing or unexpected key reads as nothing
(a dash on the page), never as a crash. Shared by html.py and html_verify.py.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from typing import Any, Final

_BACKTICKS: Final = re.compile(r"`([^`]+)`")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def as_map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_maps(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def strs(value: object) -> list[str]:
    return [str(v) for v in value if v is not None] if isinstance(value, list) else []


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def num(value: object) -> float | None:
    """A finite number, or None (Python's json reads NaN and Infinity, which count as nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def fmt(value: object, digits: int = 1, unit: str = "") -> str:
    """A number with fixed decimals, text as it is (escaped), a dash for nothing."""
    n = num(value)
    if n is not None:
        return f"{n:,.{digits}f}{unit}"
    if value is None or value == "" or isinstance(value, (Mapping, list)):
        return "–"
    return esc(value)


def short(value: object) -> str:
    """A number with up to three decimals, trailing zeros dropped (0.215, 92.3, 8); else as fmt."""
    return fmt(value, 3).rstrip("0").rstrip(".") if num(value) is not None else fmt(value)


def prose(value: object) -> str:
    """Prose from the tool: escaped, with `code` spans kept as code."""
    return _BACKTICKS.sub(r"<code>\1</code>", esc(value))


def td_num(value: str) -> str:
    """A right-aligned table cell for an already formatted number."""
    return f'<td class="num">{value}</td>'
