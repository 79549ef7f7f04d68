"""Which of the app's routes served a request path: `/orders/123` -> `GET /orders/{oid}`.

Built once from the OpenAPI path templates, then asked once per access-log line, so the work per
line is a dict lookup (literal paths, repeated paths) or one compiled regex per method. The most
specific template wins, whatever order the document lists them in: the fewest parameters, then
the longest run of literal segments from the left, then the most literal characters, then the
document's order. Nothing is guessed:
a path no template matches, or a method the matching template does not have, is unmatched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote, urlsplit

from fastapi_tune.core.redact import strip_query
from fastapi_tune.discover.openapi import route_name

# Paths already matched (or not), kept for the next line that repeats one: logs repeat a few hot
# paths millions of times. Cleared when full, so memory stays flat however varied the paths are.
_CACHE_SIZE: Final = 1 << 14
NOT_SEEN: Final = ""  # not in `seen` yet (a route name is never empty)
_PARAM: Final = re.compile(r"\{[^{}/]*\}")


def _segment_pattern(segment: str) -> str:
    """A template segment as a regex: literals escaped, each `{name}` one or more non-slash characters."""
    parts = _PARAM.split(segment)
    return "[^/]+?".join(re.escape(p) for p in parts) if len(parts) > 1 else re.escape(segment)


def specificity(path: str, order: int) -> tuple[int, int, int, int]:
    """Sort key, most specific first: fewer parameters, more literal segments before the first one,
    more literal characters (`{name}.json` before `{name}`), earlier in the document."""
    segments = path.strip("/").split("/")
    params = sum(s.count("{") for s in segments)
    prefix = next((i for i, s in enumerate(segments) if "{" in s), len(segments))
    literal = len(_PARAM.sub("", path))
    return params, -prefix, -literal, order


def request_path(target: str) -> str:
    """The path of a request target, its query cut off: '/a?token=x' -> '/a'; the absolute form too."""
    target = strip_query(target)
    if target.startswith(("http://", "https://")):
        try:
            return urlsplit(target).path or "/"
        except ValueError:
            return target
    return target


class RouteMatcher:
    """Match (method, path) to a route name as the report spells it ("GET /orders/{oid}")."""

    def __init__(self, routes: Iterable[tuple[str, str]]) -> None:
        self._literal: dict[tuple[str, str], str] = {}
        templated: dict[str, list[tuple[tuple[int, int, int, int], str]]] = {}
        for order, (method, path) in enumerate(routes):
            method = method.upper()
            if "{" in path:
                templated.setdefault(method, []).append((specificity(path, order), path))
            else:
                self._literal.setdefault((method, path), route_name(method, path))
        # One alternation per method, most specific first: re tries the branches in order and
        # fullmatch backtracks to the next branch, so the first branch that matches is the winner.
        self._patterns: dict[str, tuple[re.Pattern[str], tuple[str, ...]]] = {}
        for method, entries in templated.items():
            entries.sort()
            paths = tuple(dict.fromkeys(p for _, p in entries))
            branches = "|".join(
                f"(?P<r{i}>/{'/'.join(_segment_pattern(s) for s in p.lstrip('/').split('/'))})"
                for i, p in enumerate(paths)
            )
            names = tuple(route_name(method, p) for p in paths)
            self._patterns[method] = (re.compile(branches), names)
        # (method, target) -> route, as matched before: the tally's hot loop reads it directly.
        self.seen: dict[tuple[str, str], str | None] = {}
        self.routes: frozenset[str] = frozenset(
            [*self._literal.values(), *(n for _, names in self._patterns.values() for n in names)]
        )

    def match(self, method: str, target: str) -> str | None:
        """The route serving a request target as logged (`/a/1`, `/a?token=x`, `http://host/a`), or None."""
        key = (method, target)
        found = self.seen.get(key, NOT_SEEN)
        if found != NOT_SEEN:
            return found
        if "?" in target or "#" in target or target[:1] != "/":
            target = request_path(target)
        found = self._match(method, unquote(target) if "%" in target else target)
        if len(self.seen) >= _CACHE_SIZE:
            self.seen.clear()
        self.seen[key] = found
        return found

    def _match(self, method: str, path: str) -> str | None:
        literal = self._literal.get((method, path))
        if literal is not None:
            return literal
        compiled = self._patterns.get(method)
        if compiled is None:
            return None
        pattern, names = compiled
        m = pattern.fullmatch(path)
        if m is None or m.lastgroup is None:
            return None
        return names[int(m.lastgroup[1:])]
