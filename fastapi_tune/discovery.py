"""Finding what to probe: the target's safety, its OpenAPI document, and concrete requests.

Everything here runs before any load is sent, so a refusal (non-loopback target) or a bad
document stops the probe before it touches the app.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import httpx

from fastapi_tune.errors import BadInputError, RefusedError, TargetUnreachableError, UsageError
from fastapi_tune.report import Skipped

SAFE_METHODS: Final = ("GET", "HEAD")
_ALL_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# Header names whose values never appear in a saved report or on screen.
_SENSITIVE_WORDS: Final = ("auth", "cookie", "token", "secret", "key", "session", "password", "signature")
REDACTED: Final = "<redacted>"


@dataclass(frozen=True)
class Target:
    base_url: str  # scheme://host:port with no trailing slash, plus any base path
    host: str
    port: int
    loopback: bool


@dataclass(frozen=True)
class Operation:
    """One concrete request to drive: the path template for the report, the URL to hit."""

    method: str
    path: str
    url: str


@dataclass(frozen=True)
class Discovery:
    operations: tuple[Operation, ...]
    skipped: tuple[Skipped, ...]
    openapi_url: str | None


def is_sensitive_header(name: str) -> bool:
    """Authorization, Cookie, X-API-Key and the like."""
    lowered = name.lower()
    return any(w in lowered for w in _SENSITIVE_WORDS)


def redact_headers(headers: Sequence[tuple[str, str]]) -> list[str]:
    """Headers as 'Name: value' with sensitive values replaced, for reports and screens."""
    return [f"{n}: {REDACTED if is_sensitive_header(n) else v}" for n, v in headers]


def parse_header(text: str) -> tuple[str, str]:
    """'-H "Name: value"' into a pair."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"-H {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def parse_endpoint(text: str) -> tuple[str, str]:
    """'-e "GET /path"' (or just '/path', meaning GET) into (method, path)."""
    parts = text.split()
    if len(parts) == 1 and parts[0].startswith("/"):
        return "GET", parts[0]
    if len(parts) != 2 or parts[0].upper() not in _ALL_METHODS or not parts[1].startswith("/"):
        raise UsageError(f"-e {text!r}: expected 'METHOD /path', e.g. -e 'GET /items/{{item_id}}'")
    return parts[0].upper(), parts[1]


def _is_loopback_ip(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolve_target(url: str, allow_remote: bool) -> Target:
    """Check the URL and refuse anything but loopback unless --allow-remote, before any request."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{url!r}: expected an http:// or https:// URL such as http://127.0.0.1:8000")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"{url!r}: the port is not a number from 1 to 65535") from None
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
    return Target(base_url=base, host=host, port=port, loopback=loopback)


# ---------------------------------------------------------------------------------------
# OpenAPI


def fetch_json(client: httpx.Client, url: str) -> object:
    """GET a JSON document, turning transport failures into one clear line."""
    try:
        resp = client.get(url)
    except httpx.ConnectError as e:
        raise TargetUnreachableError(f"cannot connect to {url}: {_reason(e)}; is the app running?") from None
    except httpx.TimeoutException:
        raise TargetUnreachableError(f"{url}: no answer within the timeout") from None
    except httpx.HTTPError as e:
        raise TargetUnreachableError(f"{url}: {type(e).__name__}: {e}") from None
    if resp.status_code != 200:
        raise BadInputError(
            f"{url} answered {resp.status_code}: no OpenAPI document there;"
            " pass --openapi URL, or name endpoints with -e 'GET /path'"
        )
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInputError(f"{url}: not a JSON document (is it an OpenAPI document?)") from None


def _reason(e: Exception) -> str:
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate is not trusted (self-signed? pass --insecure)"
    if "refused" in text.lower():
        return "connection refused"
    if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
        return "DNS lookup failed"
    return text or type(e).__name__


def _deref(doc: Mapping[str, Any], node: Any, depth: int = 0) -> Any:
    """Follow local '$ref's ('#/components/...'); a broken one yields an empty object."""
    while isinstance(node, dict) and "$ref" in node and depth < 20:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return {}
        cur: Any = doc
        for part in ref[2:].split("/"):
            cur = cur.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(cur, dict) else None
        node = cur if cur is not None else {}
        depth += 1
    return node


_FORMAT_SAMPLES: Final = {
    "uuid": "00000000-0000-4000-8000-000000000001",
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "email": "user@example.com",
    "uri": "http://example.com/",
}


def sample_value(doc: Mapping[str, Any], param: Mapping[str, Any]) -> tuple[Any, bool]:
    """A value for a parameter: its example, default, first enum value or one of its type.

    Returns (value, ok); ok is False when nothing sensible can be made (an object, say).
    """
    if "example" in param:
        return param["example"], True
    examples = param.get("examples")
    if isinstance(examples, dict):
        for ex in examples.values():
            ex = _deref(doc, ex)
            if isinstance(ex, dict) and "value" in ex:
                return ex["value"], True
    schema = _deref(doc, param.get("schema", {}))
    return _sample_schema(doc, schema, 0)


def _sample_schema(doc: Mapping[str, Any], schema: Any, depth: int) -> tuple[Any, bool]:
    schema = _deref(doc, schema)
    if not isinstance(schema, dict) or depth > 5:
        return None, False
    for key in ("example", "default", "const"):
        if key in schema:
            return schema[key], True
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0], True
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0], True
    for combo in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combo), list):
            for sub in schema[combo]:
                sub = _deref(doc, sub)
                if isinstance(sub, dict) and sub.get("type") == "null":
                    continue
                value, ok = _sample_schema(doc, sub, depth + 1)
                if ok:
                    return value, True
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "integer":
        raw_lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        lo = int(raw_lo) if isinstance(raw_lo, (int, float)) else 0
        lo += 1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0
        return max(1, lo), True
    if kind == "number":
        return float(max(1, schema.get("minimum", 1))), True
    if kind == "boolean":
        return True, True
    if kind == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
            return _FORMAT_SAMPLES[fmt], True
        min_len = int(schema.get("minLength", 1))
        return "x" * max(1, min_len) if min_len > 4 else "test"[: max(min_len, 4)], True
    if kind == "array":
        value, ok = _sample_schema(doc, schema.get("items", {}), depth + 1)
        return ([value] if ok else None), ok
    return None, False


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_operation(
    doc: Mapping[str, Any],
    path: str,
    method: str,
    op: Mapping[str, Any],
    path_item: Mapping[str, Any],
    base: str,
) -> Operation | Skipped:
    """Fill the required path and query parameters of one operation from its schema."""
    params: dict[tuple[str, str], Mapping[str, Any]] = {}
    for raw in [*path_item.get("parameters", []), *op.get("parameters", [])]:
        p = _deref(doc, raw)
        if isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("in"), str):
            params[(p["in"], p["name"])] = p  # operation-level overrides path-level
    body = _deref(doc, op.get("requestBody", {}))
    if isinstance(body, dict) and body.get("required"):
        return Skipped(method, path, "needs a request body; name it with -e and a server-side default")
    concrete = path
    query: list[tuple[str, str]] = []
    for (where, name), p in params.items():
        required = bool(p.get("required")) or where == "path"
        if not required:
            continue
        value, ok = sample_value(doc, p)
        if not ok:
            return Skipped(method, path, f"cannot make a value for required {where} parameter '{name}'")
        if where == "path":
            concrete = concrete.replace("{" + name + "}", quote(_fmt(value), safe=""))
        elif where == "query":
            values = value if isinstance(value, list) else [value]
            query.extend((name, _fmt(v)) for v in values)
        else:
            return Skipped(method, path, f"needs a {where} parameter '{name}'; pass it with -H")
    if "{" in concrete:
        return Skipped(method, path, "a path parameter is not declared in the document")
    url = base + concrete + (("?" + urlencode(query)) if query else "")
    return Operation(method=method, path=path, url=url)


def discover(doc: object, base: str, source: str) -> Discovery:
    """Every safe operation of an OpenAPI document as a concrete request, or a reason to skip it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("paths"), dict):
        raise BadInputError(f"{source}: not an OpenAPI document (no 'paths' object)")
    ops: list[Operation] = []
    skipped: list[Skipped] = []
    for path, item in doc["paths"].items():
        item = _deref(doc, item)
        if not isinstance(item, dict) or not isinstance(path, str):
            continue
        for method_lower, op in item.items():
            method = method_lower.upper()
            if method not in _ALL_METHODS or not isinstance(op, dict):
                continue
            if method not in SAFE_METHODS:
                skipped.append(Skipped(method, path, "not a safe method; name it with -e to probe it"))
                continue
            built = build_operation(doc, path, method, op, item, base)
            (ops if isinstance(built, Operation) else skipped).append(built)  # type: ignore[arg-type]
    return Discovery(operations=tuple(ops), skipped=tuple(skipped), openapi_url=source)


def explicit_operations(
    endpoints: Sequence[tuple[str, str]], doc: object | None, base: str
) -> tuple[list[Operation], list[Skipped]]:
    """Operations named with -e: filled from the document when it declares them, else literal."""
    ops: list[Operation] = []
    skipped: list[Skipped] = []
    paths = doc.get("paths") if isinstance(doc, dict) else None
    for method, path in endpoints:
        item = paths.get(path) if isinstance(paths, dict) else None
        op = item.get(method.lower()) if isinstance(item, dict) else None
        if isinstance(doc, dict) and isinstance(item, dict) and isinstance(op, dict):
            built = build_operation(doc, path, method, op, item, base)
            if isinstance(built, Skipped):
                skipped.append(built)
            else:
                ops.append(built)
        elif "{" in path:
            skipped.append(Skipped(method, path, "has a {parameter} the OpenAPI document does not declare"))
        else:
            ops.append(Operation(method=method, path=path, url=base + path))
    return ops, skipped


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
            skipped.append(Skipped(op.method, op.path, f"excluded by --exclude {hit!r}"))
    return kept, skipped
