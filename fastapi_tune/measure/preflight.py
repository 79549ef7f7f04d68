"""Before any load: real ids from list routes, then one request per endpoint to see that it answers.

A route that answers 401, 404 or 422 to its first request would answer the same thousands of
times under load, and its "latency" would be the cost of an error page. The preflight skips it
with the status and what the user can pass to fix it. Deciding (`hint_for`, `id_from_listing`)
is pure; sending goes through a `SendFn` so tests and callers choose the transport.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

from fastapi_tune.core.errors import TargetUnreachableError
from fastapi_tune.discover.openapi import Operation, SkipCause, Skipped, build_operation, declared_parameters
from fastapi_tune.discover.samples import Body, Unsatisfiable, deref

# Enough of an error body for FastAPI's first validation message.
_PREFLIGHT_READ: Final = 64 * 1024
# A list route's first page; ids come from its first rows.
_LISTING_READ: Final = 1024 * 1024
_HINT_CHARS: Final = 200
# Keys under which APIs wrap a page of rows: {"items": [...], "total": 3}.
_PAGE_KEYS: Final = ("items", "data", "results", "records", "content", "rows", "values", "list")
_GENERIC_ID_KEYS: Final = ("id", "pk", "uuid", "slug", "key")
# A skipped route's reason starts so when its first request failed (compare: a route that now fails).
FAILED_PREFIX: Final = "preflight "
NOT_PREFLIGHTED: Final = (
    "time budget: not reached by the preflight within its share of --max-seconds"
    " (raise it, or probe fewer endpoints with -e/--exclude)"
)


@dataclass(frozen=True)
class Answer:
    status: int
    text: str  # the start of the body, decoded leniently


SendFn = Callable[[Operation], Answer]


@dataclass(frozen=True)
class PreflightResult:
    op: Operation
    status: int | None  # None: no answer within the deadline
    hint: str  # empty when ok
    elapsed_ms: float | None = None  # how long the request took (a hang: the whole deadline)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400

    def skipped(self) -> Skipped:
        if self.status is not None:
            said = f"answered {self.status}"
        else:
            said = "timed out" if self.timed_out else "failed"
        return Skipped(
            self.op.method,
            self.op.path,
            f"{FAILED_PREFIX}{said}: {self.hint}",
            SkipCause.PREFLIGHT,
            self.status,
            None if self.elapsed_ms is None else round(self.elapsed_ms, 1),
        )


def http_sender(client: httpx.Client, deadline_s: float, max_bytes: int = _PREFLIGHT_READ) -> SendFn:
    """Send an Operation with `client` (its headers carry -H), reading at most `max_bytes`."""

    def send(op: Operation) -> Answer:
        headers = {"Content-Type": op.content_type} if op.content_type else {}
        request = client.build_request(
            op.method, op.url, content=op.body, headers=headers, timeout=deadline_s
        )
        status, data = _read_bounded(client, request, deadline_s, max_bytes)
        return Answer(status, data.decode("utf-8", "replace"))

    return send


def _read_bounded(
    client: httpx.Client, request: httpx.Request, deadline_s: float, max_bytes: int
) -> tuple[int, bytes]:
    """Status and the body's first bytes; stops reading at the size cap or the deadline."""
    end = time.monotonic() + deadline_s
    chunks: list[bytes] = []
    size = 0
    resp = client.send(request, stream=True)
    try:
        for chunk in resp.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= max_bytes or time.monotonic() > end:
                break
    finally:
        resp.close()
    return resp.status_code, b"".join(chunks)[:max_bytes]


def preflight(send: SendFn | httpx.Client, op: Operation, deadline_s: float = 10.0) -> PreflightResult:
    """One request to `op`: ok on 2xx/3xx, else its status and a hint saying what to pass."""
    sender = http_sender(send, deadline_s) if isinstance(send, httpx.Client) else send
    start = time.monotonic()

    def took() -> float:
        return (time.monotonic() - start) * 1000

    try:
        answer = sender(op)
    except httpx.ConnectError as e:
        raise TargetUnreachableError(f"cannot connect for {op.method} {op.path}: {e}") from None
    except httpx.TimeoutException:
        hint = (
            f"no answer within --timeout {deadline_s:g} s: the route hangs, or raise --timeout if it is slow"
        )
        return PreflightResult(op, None, hint, took(), timed_out=True)
    except httpx.HTTPError as e:
        return PreflightResult(op, None, f"{type(e).__name__}: {_clean(str(e))}", took())
    return PreflightResult(op, answer.status, hint_for(answer.status, op, answer.text), took())


def preflight_all(
    send: SendFn | httpx.Client,
    ops: Sequence[Operation],
    deadline_s: float = 10.0,
    until: float | None = None,
) -> tuple[list[Operation], list[Skipped]]:
    """The operations that answered well, and the others as skipped with their hints.

    Past `until` (time.monotonic()) no request is sent: the rest are skipped as over the time budget.
    """
    kept: list[Operation] = []
    skipped: list[Skipped] = []
    for op in ops:
        if until is not None and time.monotonic() >= until:
            skipped.append(Skipped(op.method, op.path, NOT_PREFLIGHTED, SkipCause.BUDGET))
            continue
        result = preflight(send, op, deadline_s)
        if result.ok:
            kept.append(op)
        else:
            skipped.append(result.skipped())
    return kept, skipped


def hint_for(status: int, op: Operation, body_text: str) -> str:  # noqa: PLR0911 - one answer per status class
    """What the user can do about a first answer with this status; '' for 2xx and 3xx."""
    if 200 <= status < 400:
        return ""
    if status in (401, 403):
        return "pass credentials with -H 'Authorization: ...'"
    if status == 404:
        in_path = [(n, v) for n, v in op.guessed if "{" + n + "}" in op.path]
        if in_path:
            name, value = in_path[0]
            return f"{name}={value} was made up; pass a real value with --param {name}=VALUE"
        return "no such route at this URL (is the base path right?)"
    if status == 405:
        return f"the server does not accept {op.method} here"
    if status == 422:
        return _validation_hint(op, body_text)
    if status == 429:
        return "rate limited before any load; lift the limit for the probe"
    if status >= 500:
        return "the route fails on its own" + _detail_suffix(body_text)
    return "unexpected status" + _detail_suffix(body_text)


def _validation_hint(op: Operation, body_text: str) -> str:
    """FastAPI's first validation error as 'body.name: Field required', and the flag that fixes it."""
    first = _first_validation_error(body_text)
    if first is None:
        return "the request was refused as invalid" + _detail_suffix(body_text)
    loc, msg = first
    where = loc[0] if loc else ""
    name = str(loc[-1]) if loc else "NAME"
    if where == "body":
        fix = f"pass a valid body with --body '{op.method} {op.path}=@body.json'"
    elif where in ("path", "query"):
        fix = f"pass --param {name}=VALUE"
    elif where in ("header", "cookie"):
        fix = f"pass the {where} with -H"
    else:
        fix = "check the request"
    place = ".".join(str(part) for part in loc)
    return _clean(f"{place}: {msg}") + f"; {fix}"


def _first_validation_error(body_text: str) -> tuple[list[Any], str] | None:
    try:
        data = json.loads(body_text)
    except (json.JSONDecodeError, RecursionError):
        return None
    detail = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(detail, list) or not detail or not isinstance(detail[0], dict):
        return None
    loc = detail[0].get("loc")
    msg = detail[0].get("msg")
    return (loc if isinstance(loc, list) else []), (msg if isinstance(msg, str) else "invalid")


def _detail_suffix(body_text: str) -> str:
    try:
        data = json.loads(body_text)
    except (json.JSONDecodeError, RecursionError):
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    return f" ({_clean(detail)})" if isinstance(detail, str) and detail else ""


def _clean(text: str) -> str:
    """One line of printable text, cut short: it comes from the app and goes to a terminal."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text if len(text) <= _HINT_CHARS else text[: _HINT_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------
# Real ids from list routes


@dataclass(frozen=True)
class Listing:
    param: str  # the path parameter a listing fills, e.g. 'item_id'
    path: str  # the list route's path template, e.g. '/items/'


def find_listing(doc: Mapping[str, Any], path: str, param: str) -> Listing | None:
    """The GET route that lists what `{param}` names: '/items' or '/items/' beside '/items/{item_id}'."""
    marker = "/{" + param + "}"
    if marker not in path:
        return None
    prefix = path[: path.index(marker)]
    paths = doc.get("paths")
    for candidate in (prefix, prefix + "/"):
        item = paths.get(candidate) if isinstance(paths, dict) and candidate else None
        if isinstance(item, dict) and isinstance(item.get("get"), dict):
            return Listing(param=param, path=candidate)
    return None


def id_from_listing(
    doc: Mapping[str, Any], op: Operation, listing_json: object, param: str | None = None
) -> str | int | None:
    """A value for `param` (default: the path's last parameter) taken from a list route's response."""
    name = param or _last_path_param(op.path)
    if name is None:
        return None
    schema = _param_schema(doc, op, name)
    keys = list(dict.fromkeys([name, *_name_variants(name), *_GENERIC_ID_KEYS]))
    for row in _rows(listing_json)[:20]:
        for key in keys:
            value = row.get(key)
            if _fits(value, schema):
                return value
    return None


def _last_path_param(path: str) -> str | None:
    found = re.findall(r"\{([^{}]+)\}", path)
    return found[-1] if found else None


def _name_variants(name: str) -> list[str]:
    """item_id -> itemId, id; itemId -> item_id, id."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    words = [w for w in snake.split("_") if w]
    camel = words[0] + "".join(w.title() for w in words[1:]) if words else name
    return [snake, camel, *(words[-1:] if len(words) > 1 else [])]


def _rows(data: object) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        for key in (*_PAGE_KEYS, *data.keys()):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []


def _param_schema(doc: Mapping[str, Any], op: Operation, name: str) -> Mapping[str, Any]:
    paths = doc.get("paths")
    item = paths.get(op.path) if isinstance(paths, dict) else None
    spec = item.get(op.method.lower()) if isinstance(item, dict) else None
    if not isinstance(item, dict) or not isinstance(spec, dict):
        return {}
    try:
        declared = declared_parameters(doc, spec, item)
        schema = deref(doc, declared.get(("path", name), {}).get("schema", {}))
    except Unsatisfiable:
        return {}
    return schema if isinstance(schema, dict) else {}


def _fits(value: object, schema: Mapping[str, Any]) -> bool:
    """An id the path parameter's type accepts: an int for an integer, any scalar text otherwise."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return False
    if schema.get("type") == "integer":
        return isinstance(value, int) or value.lstrip("-").isdigit()
    if schema.get("format") == "uuid":
        return isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F-]{32,36}", value) is not None
    return True


def resolve_ids(
    doc: Mapping[str, Any],
    ops: Sequence[Operation],
    base: str,
    get_json: Callable[[str], object | None],
    params: Mapping[str, str] | None = None,
) -> list[Operation]:
    """Replace made-up path values with real ones from list routes; each listing is fetched once."""
    cache: dict[str, object | None] = {}

    def fetch(url: str) -> object | None:
        if url not in cache:
            cache[url] = get_json(url)
        return cache[url]

    return [_resolve_one(doc, op, base, fetch, dict(params or {})) for op in ops]


def _resolve_one(
    doc: Mapping[str, Any],
    op: Operation,
    base: str,
    fetch: Callable[[str], object | None],
    params: dict[str, str],
) -> Operation:
    guessed = [n for n, _ in op.guessed if "{" + n + "}" in op.path]
    if not guessed:
        return op
    for name in sorted(guessed, key=op.path.index):  # outer resources first: /users/{u}/posts/{p}
        listing = find_listing(doc, op.path, name)
        listed = _rebuild(doc, listing.path, "GET", base, params) if listing else None
        if listed is None or listed.guessed:
            continue  # no list route, or it would itself need a made-up value
        value = id_from_listing(doc, op, fetch(listed.url), name)
        if value is not None:
            params[name] = str(value)
    body = Body(op.body, op.content_type or "application/json") if op.body is not None else None
    return _rebuild(doc, op.path, op.method, base, params, body) or op


def _rebuild(
    doc: Mapping[str, Any],
    path: str,
    method: str,
    base: str,
    params: Mapping[str, str],
    body: Body | None = None,
) -> Operation | None:
    paths = doc.get("paths")
    item = paths.get(path) if isinstance(paths, dict) else None
    spec = item.get(method.lower()) if isinstance(item, dict) else None
    if not isinstance(item, dict) or not isinstance(spec, dict):
        return None
    built = build_operation(doc, path, method, spec, item, base, params, body)
    return built if isinstance(built, Operation) else None


def json_getter(client: httpx.Client, deadline_s: float) -> Callable[[str], object | None]:
    """GET a list route for `resolve_ids`: its JSON, or None on any failure (the id stays made up)."""

    def get(url: str) -> object | None:
        try:
            status, data = _read_bounded(client, client.build_request("GET", url), deadline_s, _LISTING_READ)
            return json.loads(data) if status == 200 else None
        except (httpx.HTTPError, ValueError, RecursionError):
            return None

    return get
