"""Strings from simple regular expressions: literals, classes, groups, alternation, repeats.

Candidates only: the caller checks each with `re.search` and the length bounds, so a pattern
this walk misreads costs a candidate, never a wrong sample.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

# Longer patterns are not generated from (the caller's other candidates are still checked).
_MAX_PATTERN: Final = 500
# re's parser marks an unbounded repeat with MAXREPEAT (2**32 - 1 or more); any bound past this is it.
_UNBOUNDED: Final = 10_000
# As samples.MAX_STRING: a longer string is not a request anyone sends.
_MAX_OUTPUT: Final = 10_000


_sre: Any = importlib.import_module("re._parser")  # the stdlib's own regex parser (3.11+)
# Characters tried for a class, in order: what people expect in an id or a name.
_CLASS_TRIALS: Final = "a0A_-x. @"
_CATEGORY_TEST: Final[Mapping[str, Any]] = {
    "CATEGORY_DIGIT": str.isdigit,
    "CATEGORY_WORD": lambda c: c.isalnum() or c == "_",
    "CATEGORY_SPACE": str.isspace,
}


class _Unsupported(Exception):
    pass


def strings_matching(pattern: str, min_len: int) -> list[str]:
    """Strings built from a pattern, with more repetitions for each try; [] if it is not simple."""
    if len(pattern) > _MAX_PATTERN:
        return []
    try:
        tree = _sre.parse(pattern)
        return [_build(tree, extra) for extra in (0, 1, 4, max(min_len, 1))]
    except (_Unsupported, re.error, RecursionError, OverflowError):
        return []


def _build(tree: Any, extra: int) -> str:
    out: list[str] = []
    for op, av in tree:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(av))
        elif name in ("IN", "NOT_LITERAL", "ANY"):
            out.append(_class_char(name, av))
        elif name == "SUBPATTERN":
            out.append(_build(av[3], extra))
        elif name == "BRANCH":
            out.append(_build(av[1][0], extra))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = av
            count = min(hi, lo + extra) if hi < _UNBOUNDED else lo + extra
            piece = _build(sub, extra)
            if len(piece) * count > _MAX_OUTPUT:  # '(a{1000}){1000}' is no sample
                raise _Unsupported("too long")
            out.append(piece * count)
        elif name != "AT":  # anchors add nothing
            raise _Unsupported(name)
    return "".join(out)


def _class_char(name: str, av: Any) -> str:
    if name == "ANY":
        return "a"
    if name == "NOT_LITERAL":
        return next(c for c in _CLASS_TRIALS if ord(c) != av)
    items = list(av)
    negate = bool(items) and str(items[0][0]) == "NEGATE"
    if negate:
        items = items[1:]
    for c in _CLASS_TRIALS:
        if _in_class(c, items) != negate:
            return c
    if not negate and items and str(items[0][0]) in ("LITERAL", "RANGE"):
        first = items[0][1]
        return chr(first if isinstance(first, int) else first[0])
    raise _Unsupported("class")


def _in_class(c: str, items: Sequence[Any]) -> bool:
    for op, av in items:
        name = str(op)
        if name == "LITERAL" and ord(c) == av:
            return True
        if name == "RANGE" and av[0] <= ord(c) <= av[1]:
            return True
        if name == "CATEGORY":
            cat = str(av)
            negated = cat.startswith("CATEGORY_NOT_")
            test = _CATEGORY_TEST.get(cat.replace("_NOT_", "_"))
            if test is None:
                raise _Unsupported(cat)
            if bool(test(c)) != negated:
                return True
    return False
