"""Finding what to probe: the target's safety, its OpenAPI document, and concrete requests.

Everything here runs before any load is sent, so a refusal (non-loopback target) or a bad
document stops the probe before it touches the app.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx

from fastapi_tune.core.errors import BadInputError, RefusedError, TargetUnreachableError, UsageError
from fastapi_tune.core.redact import redact_path, redact_text, redact_url
from fastapi_tune.discover.samples import (
    FORM,
    JSON,
    Body,
    NoSample,
    Sample,
    Unsatisfiable,
    deref,
    examples_of,
    request_body,
    sample_schema,
    scalar_text,
)

SAFE_METHODS: Final = ("GET", "HEAD")
# Worded so that both flags that opt in are named where the skip is shown.
UNSAFE_REASON: Final = "not a safe method; name it with -e or pass --unsafe"
_ALL_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# An OpenAPI document larger than this is refused before it fills memory: the largest public
# ones (GitHub's REST API, Stripe's) are 10-20 MB of JSON; a server streaming forever is not one.
MAX_DOCUMENT_BYTES: Final = 64 * 2**20
# RFC 9110 token characters: what a header name may hold.
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class TargetUrl:
    base_url: str  # scheme://host:port with no trailing slash, plus any base path
    host: str
    port: int
    loopback: bool


class SkipCause(StrEnum):
    """Why an operation was not driven, as a kind: what the probe's exit code is decided from."""

    SCHEMA = "schema"  # the document cannot fill it: a broken or unsatisfiable schema (names the field)
    NEEDS_INPUT = "needs-input"  # a header or parameter only the user can give (-H, --param)
    NOT_SELECTED = "not-selected"  # an unsafe method not opted into, or --exclude
    PREFLIGHT = "preflight"  # its first request failed: an error status, a timeout, a broken answer
    BUDGET = "budget"  # --max-seconds or --max-requests ran out first, or Ctrl-C
    UNMEASURED = "unmeasured"  # its ladder ran but measured no level


@dataclass(frozen=True)
class Skipped:
    """An operation the probe did not drive, and why (the preflight's answer when one was sent)."""

    method: str
    path: str
    reason: str
    cause: SkipCause | None = None  # None: not recorded (a report from before causes were)
    status: int | None = None  # the preflight's HTTP status; None: none sent, or no answer
    elapsed_ms: float | None = None  # how long the preflight took (a hang: the whole --timeout)


@dataclass(frozen=True)
class Operation:
    """One concrete request to drive: the path template for the report, the URL to hit."""

    method: str
    path: str
    url: str
    body: bytes | None = None
    content_type: str | None = None  # the Content-Type header to send with `body`
    # Parameters filled with made-up values, as (name, value): a 404 may then blame the value,
    # not the route. Values given with --param are not in here.
    guessed: tuple[tuple[str, str], ...] = ()
    body_given: bool = False  # the body came from --body (it may hold secrets), not from the schema


@dataclass(frozen=True)
class Discovery:
    operations: tuple[Operation, ...]
    skipped: tuple[Skipped, ...]
    openapi_url: str | None


def route_name(method: str, path: str) -> str:
    """A route's one name everywhere (report, --mix, access logs, Locust/k6 tags): "GET /orders/{oid}"."""
    return f"{method.upper()} {path}"


def parse_header(text: str) -> tuple[str, str]:
    """'-H "Name: value"' into a pair; the value is never echoed (it may be a secret)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    shown = redact_text(name[:60]) if name else "<empty>"
    if not sep or not _TOKEN.fullmatch(name):
        raise UsageError(f"-H {shown}: expected 'Name: value' with a name of letters, digits and -")
    if any(c in value for c in "\r\n\0"):
        # A line break would smuggle a second header (or request) into every request sent.
        raise UsageError(f"-H {name}: the value holds a line break or NUL; pass one header per -H")
    if not value.isascii() or not value.isprintable():
        # HTTP/1.1 header bytes are ASCII; any other encoding is a guess the server may not share.
        raise UsageError(f"-H {name}: the value must be printable ASCII (percent- or base64-encode it)")
    return name, value


def parse_endpoint(text: str) -> tuple[str, str]:
    """'-e "GET /path"' (or just '/path', meaning GET) into (method, path)."""
    parts = text.split()
    if len(parts) == 1 and parts[0].startswith("/"):
        return "GET", parts[0]
    if (
        len(parts) != 2
        or parts[0].upper() not in _ALL_METHODS
        or not parts[1].startswith("/")
        or not parts[1].isprintable()
    ):
        raise UsageError(f"-e {text!r}: expected 'METHOD /path', e.g. -e 'GET /items/{{item_id}}'")
    return parts[0].upper(), parts[1]


def parse_param_option(text: str) -> tuple[str, str]:
    """'--param NAME=VALUE' into a pair: the value fills every path or query parameter so named."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or any(c.isspace() or c in "/{}" for c in name):
        raise UsageError(f"--param {text!r}: expected NAME=VALUE, e.g. --param item_id=42")
    return name, value


def parse_body_option(text: str, read_file: Callable[[str], bytes]) -> tuple[str, str, bytes, str]:
    """'--body "POST /items=@body.json"' (or inline JSON, or a=1&b=2) into (method, path, bytes, type)."""
    target, sep, raw = text.partition("=")
    usage = f"--body {text[:80]!r}: expected 'METHOD /path=@file.json' or 'METHOD /path={{...json...}}'"
    parts = target.split()
    if not sep or len(parts) != 2 or parts[0].upper() not in _ALL_METHODS or not parts[1].startswith("/"):
        raise UsageError(usage)
    method, path = parts[0].upper(), parts[1]
    raw = raw.strip()
    if raw.startswith("@"):
        try:
            content = read_file(raw[1:])
        except OSError as e:
            raise UsageError(f"--body {method} {path}: cannot read {raw[1:]!r} ({e.strerror or e})") from None
    else:
        content = raw.encode()
    if not content.strip():
        raise UsageError(f"--body {method} {path}: the body is empty")
    return method, path, content, _body_type(method, path, content)


def _body_type(method: str, path: str, content: bytes) -> str:
    """JSON if it parses as JSON; a urlencoded form if it reads as one; else a clear refusal."""
    try:
        text = content.decode()
    except UnicodeDecodeError:
        raise UsageError(f"--body {method} {path}: the body is not UTF-8 text") from None
    try:
        json.loads(text)
        return JSON
    except json.JSONDecodeError as e:
        json_error = e
    except RecursionError:
        raise UsageError(f"--body {method} {path}: the JSON nests too deeply") from None
    if _FORM_BODY.fullmatch(text.strip()):
        return FORM
    raise UsageError(
        f"--body {method} {path}: neither JSON ({json_error.msg} at line {json_error.lineno}"
        f" column {json_error.colno}) nor a form (a=1&b=2)"
    )


# name=value pairs joined by '&', as in a urlencoded form body.
_FORM_BODY: Final = re.compile(r"[^=&\s]+=[^&\s]*(?:&[^=&\s]+=[^&\s]*)*")


def _is_loopback_ip(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolve_target(url: str, allow_remote: bool) -> TargetUrl:
    """Check the URL and refuse anything but loopback unless --allow-remote, before any request."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        given_port = parts.port
    except ValueError:
        raise UsageError(f"{shown!r}: the port is not a number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{shown!r}: expected an http:// or https:// URL such as http://127.0.0.1:8000")
    if given_port == 0:  # urlsplit reads ':0' as 0, which `or 80` would silently turn into 80
        raise UsageError(f"{shown!r}: the port is not a number from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            f"{shown!r}: credentials in the URL are not sent; pass them with -H 'Authorization: ...'"
        )
    if parts.query or parts.fragment:
        raise UsageError(
            f"{shown!r}: the base URL takes no ?query or #fragment (it would not be sent with each"
            " request); fill parameters with --param NAME=VALUE, credentials with -H"
        )
    host = parts.hostname
    port = given_port if given_port is not None else (443 if parts.scheme == "https" else 80)
    if _is_loopback_ip(host):
        loopback = True
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            if not allow_remote:
                raise RefusedError(
                    f"{host}: cannot resolve it to check that it is on this machine ({e.strerror});"
                    " fastapi-tune only loads loopback targets unless --allow-remote"
                ) from None
            raise TargetUnreachableError(f"{host}: DNS lookup failed ({e.strerror})") from None
        addrs = {str(info[4][0]) for info in infos}
        loopback = bool(addrs) and all(_is_loopback_ip(a) for a in addrs)
    if not loopback and not allow_remote:
        raise RefusedError(
            f"{host} is not a loopback address: fastapi-tune sends load only to this machine"
            " (127.0.0.1, ::1, localhost) unless you pass --allow-remote for a server you own"
        )
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    return TargetUrl(base_url=base, host=host, port=port, loopback=loopback)


# ---------------------------------------------------------------------------------------
# OpenAPI


def fetch_json(client: httpx.Client, url: str) -> object:
    """GET a JSON document, turning transport failures into one clear line."""
    shown = redact_url(url)
    try:
        status, data = _get_bounded(client, url, MAX_DOCUMENT_BYTES)
    except httpx.ConnectError as e:
        raise TargetUnreachableError(
            f"cannot connect to {shown}: {_reason(e)}; is the app running?"
        ) from None
    except httpx.TimeoutException:
        raise TargetUnreachableError(f"{shown}: no answer within the timeout") from None
    except httpx.HTTPError as e:
        raise TargetUnreachableError(f"{shown}: {type(e).__name__}: {redact_text(str(e))}") from None
    if status != 200:
        raise BadInputError(
            f"{shown} answered {status}: no OpenAPI document there;"
            " pass --openapi URL, or name endpoints with -e 'GET /path'"
            + (" (redirects are not followed)" if 300 <= status < 400 else "")
        )
    if data is None:
        raise BadInputError(f"{shown}: larger than {MAX_DOCUMENT_BYTES // 2**20} MiB; not read")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInputError(f"{shown}: not a JSON document (is it an OpenAPI document?)") from None
    except RecursionError:
        raise BadInputError(f"{shown}: the JSON document nests too deeply to read") from None


def _get_bounded(client: httpx.Client, url: str, max_bytes: int) -> tuple[int, bytes | None]:
    """Status and body of a GET; None for a body past `max_bytes` (not read further)."""
    with client.stream("GET", url) as resp:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            return resp.status_code, None
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                return resp.status_code, None
            chunks.append(chunk)
        return resp.status_code, b"".join(chunks)


def _reason(e: Exception) -> str:
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not trusted (self-signed? pass --insecure)"
    if "refused" in text.lower():
        return "connection refused"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "DNS lookup failed"
    return redact_text(text) or type(e).__name__


def _check_document(doc: object, source: str) -> dict[str, Any]:
    """The top-level keys every operation relies on; anything else broken skips one operation."""
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise BadInputError(f"{source}: not an OpenAPI document (no 'paths' object)")
    if "components" in doc and not isinstance(doc["components"], dict):
        kind = type(doc["components"]).__name__
        raise BadInputError(f"{source}: 'components' is {kind}, expected an object")
    if "openapi" in doc and not isinstance(doc["openapi"], str):
        raise BadInputError(f"{source}: 'openapi' is {doc['openapi']!r}, expected a version such as '3.1.0'")
    return doc


def sample_value(doc: Mapping[str, Any], param: Mapping[str, Any]) -> tuple[Any, bool]:
    """A value for a parameter: its example, default, first enum value or one of its type.

    Returns (value, ok); ok is False when nothing valid can be made.
    """
    examples = examples_of(param, doc)
    if examples:
        return examples[0], True
    # Swagger 2.0 puts the type on the parameter itself.
    schema = param.get("schema", param if "type" in param else {})
    got = sample_schema(doc, schema, str(param.get("name", "value")))
    return (got.value, True) if isinstance(got, Sample) else (None, False)


def declared_parameters(
    doc: Mapping[str, Any], op: Mapping[str, Any], path_item: Mapping[str, Any]
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Path-level then operation-level parameters by (in, name); the later override the earlier."""
    params: dict[tuple[str, str], Mapping[str, Any]] = {}
    for owner in (path_item, op):
        raw = owner.get("parameters")
        if raw is None:
            continue  # 'parameters: null' means none
        if not isinstance(raw, list):
            raise Unsatisfiable(f"'parameters' is {type(raw).__name__}, expected a list")
        for entry in raw:
            p = deref(doc, entry, "parameter")
            if not (isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("in"), str)):
                raise Unsatisfiable(f"a parameter is {str(p)[:60]}, expected an object with 'name' and 'in'")
            params[(p["in"], p["name"])] = p
    return params


def build_operation(
    doc: Mapping[str, Any],
    path: str,
    method: str,
    op: Mapping[str, Any],
    path_item: Mapping[str, Any],
    base: str,
    params: Mapping[str, str] | None = None,
    body: Body | None = None,
) -> Operation | Skipped:
    """Fill the path and query parameters (--param values first) and make the request body."""
    given = params or {}
    body_given = body is not None
    try:
        declared = declared_parameters(doc, op, path_item)
        concrete, query, guessed = path, [], []
        for (where, name), p in declared.items():
            if where not in ("path", "query"):
                if p.get("required") is True and name not in given:
                    return Skipped(
                        method,
                        path,
                        f"needs a {where} parameter '{name}'; pass it with -H",
                        SkipCause.NEEDS_INPUT,
                    )
                continue
            if name in given:
                text = given[name]
            elif p.get("required") is True or where == "path":
                text = _made_up(doc, p, where, name)
                guessed.append((name, text))
            else:
                continue
            if where == "path":
                concrete = concrete.replace("{" + name + "}", quote(text, safe=""))
            else:
                query.append((name, text))
        if body is None and "requestBody" in op:
            body = request_body(doc, op["requestBody"])
    except Unsatisfiable as e:
        return Skipped(method, path, str(e), SkipCause.SCHEMA)
    concrete = _fill_literal(concrete, given)  # a {name} the document forgot to declare
    if "{" in concrete:
        return Skipped(
            method,
            path,
            "a path parameter is not declared in the document; pass it with --param",
            SkipCause.NEEDS_INPUT,
        )
    url = base + concrete + (("?" + urlencode(query)) if query else "")
    return Operation(
        method=method,
        path=path,
        url=url,
        body=body.content if body else None,
        content_type=body.content_type if body else None,
        guessed=tuple(guessed),
        body_given=body_given,
    )


def _made_up(doc: Mapping[str, Any], p: Mapping[str, Any], where: str, name: str) -> str:
    value, ok = sample_value(doc, p)
    if not ok:
        got = sample_schema(doc, p.get("schema", {}), name)
        why = got.reason if isinstance(got, NoSample) else "no value"
        raise Unsatisfiable(
            f"cannot make a value for {where} parameter '{name}' ({why}); pass --param {name}=VALUE"
        )
    if isinstance(value, list):  # an array in the query: one element is enough
        value = value[0] if value else ""
    return scalar_text(value)


def _is_unsafe(method: str) -> bool:
    return method not in SAFE_METHODS


def discover(
    doc: object,
    base: str,
    source: str,
    include_unsafe: bool = False,
    params: Mapping[str, str] | None = None,
    bodies: Mapping[tuple[str, str], Body] | None = None,
) -> Discovery:
    """Every operation of an OpenAPI document as a concrete request, or a reason to skip it.

    Unsafe methods (POST, PUT, PATCH, DELETE...) are only driven with `include_unsafe` or when
    --body names them: a probe sends each thousands of times.
    """
    checked = _check_document(doc, source)
    given = bodies or {}
    ops: list[Operation] = []
    skipped: list[Skipped] = []
    seen: set[tuple[str, str]] = set()
    for path, method, op, item in _operations(checked, skipped):
        seen.add((method, path))
        if _is_unsafe(method) and not include_unsafe and (method, path) not in given:
            skipped.append(Skipped(method, path, UNSAFE_REASON, SkipCause.NOT_SELECTED))
            continue
        built = build_operation(checked, path, method, op, item, base, params, given.get((method, path)))
        (ops if isinstance(built, Operation) else skipped).append(built)  # type: ignore[arg-type]
    unknown = [f"{m} {p}" for m, p in given if (m, p) not in seen]
    if unknown:
        raise UsageError(f"--body {unknown[0]!r}: the OpenAPI document has no such operation")
    return Discovery(operations=tuple(ops), skipped=tuple(skipped), openapi_url=source)


def _operations(
    doc: Mapping[str, Any], skipped: list[Skipped]
) -> Iterator[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]:
    """(path, METHOD, operation, path item) for each operation; broken path items go to `skipped`."""
    for path, raw in doc["paths"].items():
        if not isinstance(path, str) or not path.startswith("/"):
            skipped.append(Skipped("*", str(path)[:80], "a path must start with '/'", SkipCause.SCHEMA))
            continue
        if not path.isprintable() or any(c.isspace() for c in path):
            # Sent as is, a space or line break would end the request line early (or inject headers).
            skipped.append(
                Skipped(
                    "*", ascii(path)[:80], "the path holds spaces or control characters", SkipCause.SCHEMA
                )
            )
            continue
        try:
            item = deref(doc, raw, path)
        except Unsatisfiable as e:
            skipped.append(Skipped("*", path, str(e), SkipCause.SCHEMA))
            continue
        if not isinstance(item, dict):
            shown = f"the path item is {type(item).__name__}, expected an object"
            skipped.append(Skipped("*", path, shown, SkipCause.SCHEMA))
            continue
        for method_lower, op in item.items():
            method = str(method_lower).upper()
            if method not in _ALL_METHODS:
                continue
            if not isinstance(op, dict):
                shown = f"the operation is {type(op).__name__}, not an object"
                skipped.append(Skipped(method, path, shown, SkipCause.SCHEMA))
                continue
            yield path, method, op, item


def document_routes(doc: object, source: str) -> list[tuple[str, str]]:
    """Every (METHOD, path template) the document declares, unsafe ones included (access logs have them)."""
    return [(method, path) for path, method, _, _ in _operations(_check_document(doc, source), [])]


def explicit_operations(
    endpoints: Sequence[tuple[str, str]],
    doc: object | None,
    base: str,
    params: Mapping[str, str] | None = None,
    bodies: Mapping[tuple[str, str], Body] | None = None,
) -> tuple[list[Operation], list[Skipped]]:
    """Operations named with -e: filled from the document when it declares them, else literal.

    A query given with the path (-e 'GET /x?api_key=...') is sent as given, over any generated
    value of the same name; everything shown or saved names the operation with its sensitive
    values hidden (redact.redact_path), so the secret only ever travels in the request.
    """
    given_bodies = bodies or {}
    unknown = [f"{m} {p}" for m, p in given_bodies if (m, p) not in set(endpoints)]
    if unknown:
        raise UsageError(f"--body {unknown[0]!r}: name that operation with -e as well")
    ops: list[Operation] = []
    skipped: list[Skipped] = []
    paths = doc.get("paths") if isinstance(doc, dict) else None
    for method, given in endpoints:
        body = given_bodies.get((method, given))
        path, _, query = given.partition("?")
        shown = redact_path(given)
        item = paths.get(path) if isinstance(paths, dict) else None
        template = _template_for(path, paths) if item is None and isinstance(paths, dict) else None
        if template is not None and "{" not in path:
            # A concrete path (-e 'GET /items/7') of a declared template: the report names the
            # route by its template, so that two ids of it are one route, probed once.
            ops.append(Operation(method=method, path=template, url=_with_query(base + path, query),
                                 body=body.content if body else None,
                                 content_type=body.content_type if body else None,
                                 body_given=body is not None))  # fmt: skip
            continue
        op = item.get(method.lower()) if isinstance(item, dict) else None
        if isinstance(doc, dict) and isinstance(item, dict) and isinstance(op, dict):
            built = build_operation(doc, path, method, op, item, base, params, body)
            if isinstance(built, Operation):
                ops.append(replace(built, path=shown, url=_with_query(built.url, query)))
            else:
                skipped.append(replace(built, path=shown))
            continue
        literal = _fill_literal(path, params or {})
        if "{" in literal:
            reason = "has a {parameter} the OpenAPI document does not declare; pass --param"
            skipped.append(Skipped(method, shown, reason, SkipCause.NEEDS_INPUT))
        else:
            ops.append(
                Operation(
                    method=method,
                    path=shown,
                    url=_with_query(base + literal, query),
                    body=body.content if body else None,
                    content_type=body.content_type if body else None,
                    body_given=body is not None,
                )
            )
    return ops, skipped


def _template_for(path: str, paths: Mapping[str, Any]) -> str | None:
    """The one declared path template a concrete path matches (`/items/7` -> `/items/{item_id}`)."""
    found = [
        t
        for t in paths
        if isinstance(t, str)
        and "{" in t
        and re.fullmatch(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(t)), path)
    ]
    return found[0] if len(found) == 1 else None


def same_route_once(ops: Sequence[Operation]) -> tuple[list[Operation], list[Skipped]]:
    """One operation per method and path template: other ids of a route probed already are skipped."""
    kept: list[Operation] = []
    skipped: list[Skipped] = []
    seen: set[tuple[str, str]] = set()
    for op in ops:
        if (op.method, op.path) in seen:
            why = f"the same route as {op.method} {op.path}, probed once whatever its ids"
            skipped.append(Skipped(op.method, urlsplit(op.url).path, why, SkipCause.NOT_SELECTED))
            continue
        seen.add((op.method, op.path))
        kept.append(op)
    return kept, skipped


def _with_query(url: str, query: str) -> str:
    """`url` with the user's own query string: their names replace generated ones, sent as typed."""
    if not query:
        return url
    head, _, generated = url.partition("?")
    theirs = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    kept = [(n, v) for n, v in parse_qsl(generated, keep_blank_values=True) if n not in theirs]
    return f"{head}?{'&'.join(filter(None, [urlencode(kept), query]))}"


def _fill_literal(path: str, params: Mapping[str, str]) -> str:
    for name, value in params.items():
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path


def apply_excludes(
    ops: Sequence[Operation], patterns: Sequence[str]
) -> tuple[list[Operation], list[Skipped]]:
    """Drop operations whose path or 'METHOD path' matches a --exclude glob."""
    kept: list[Operation] = []
    skipped: list[Skipped] = []
    for op in ops:
        hit = next(
            (
                p
                for p in patterns
                if fnmatch.fnmatchcase(op.path, p) or fnmatch.fnmatchcase(f"{op.method} {op.path}", p)
            ),
            None,
        )
        if hit is None:
            kept.append(op)
        else:
            skipped.append(
                Skipped(op.method, op.path, f"excluded by --exclude {hit!r}", SkipCause.NOT_SELECTED)
            )
    return kept, skipped
