"""Sample values from JSON Schema (OpenAPI 3.0 and 3.1): a small value that a validator accepts.

Used for the parameters and request bodies of operations found in an OpenAPI document. The
document is foreign input: every keyword is checked before use, recursion and size are bounded,
and whatever cannot be satisfied yields a reason (`NoSample`) instead of a value or a traceback.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from fastapi_tune.discover.patterns import strings_matching

# Pydantic models nest a handful of levels; deeper is a recursive schema or a hostile document.
MAX_DEPTH: Final = 32
# Schema nodes visited for one sample: bounds documents that multiply through $ref (A has ten
# B's, B has ten C's...), at far more than any real request body needs.
MAX_NODES: Final = 5000
# A sample is one request body, sent thousands of times: a megabyte minLength is not a sample.
MAX_STRING: Final = 10_000
MAX_ITEMS: Final = 100

# Values that Pydantic (and most validators) accept for each string format. The uuid is a
# version-4 one with the RFC variant, so that UUID4 fields accept it too.
FORMAT_SAMPLES: Final[Mapping[str, str]] = {
    "uuid": "00000000-0000-4000-8000-000000000001",
    "uuid1": "00000000-0000-1000-8000-000000000001",
    "uuid3": "00000000-0000-3000-8000-000000000001",
    "uuid4": "00000000-0000-4000-8000-000000000001",
    "uuid5": "00000000-0000-5000-8000-000000000001",
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "uri": "http://example.com/",
    "url": "http://example.com/",
    "iri": "http://example.com/",
    "uri-reference": "/",
    "iri-reference": "/",
    "multi-host-uri": "postgres://user@localhost:5432/db",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "ipvanyaddress": "127.0.0.1",
    "ipv4interface": "127.0.0.1/32",
    "ipv6interface": "::1/128",
    "ipvanyinterface": "127.0.0.1/32",
    "ipv4network": "127.0.0.0/8",
    "ipv6network": "::1/128",
    "ipvanynetwork": "127.0.0.0/8",
    "byte": "dGVzdA==",  # base64 of 'test'
    "json-string": "{}",
    "path": "/tmp",
}


@dataclass(frozen=True)
class Sample:
    value: Any


@dataclass(frozen=True)
class NoSample:
    reason: str


class Unsatisfiable(Exception):
    """Raised inside the walk; `sample_schema` turns it into a `NoSample`."""


def sample_schema(doc: Mapping[str, Any], schema: object, where: str = "value") -> Sample | NoSample:
    """A small value valid under `schema`: its example, default, or a minimal value of its type."""
    try:
        return Sample(_Walk(doc).value(schema, where, 0, ()))
    except Unsatisfiable as e:
        return NoSample(str(e))
    except RecursionError:
        return NoSample(f"{where}: the schema is nested too deeply")


def deref(doc: Mapping[str, Any], node: Any, where: str = "value") -> Any:
    """Follow local '$ref's ('#/components/...'); a foreign, broken or circular one is Unsatisfiable."""
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsatisfiable(f"{where}: $ref {ref!r} is not a reference into this document ('#/...')")
        if ref in seen:
            raise Unsatisfiable(f"{where}: $ref {ref!r} refers to itself")
        seen.add(ref)
        node = _pointer(doc, ref)
        if node is None:
            raise Unsatisfiable(f"{where}: $ref {ref!r} points to nothing in the document")
    return node


def _pointer(doc: Mapping[str, Any], ref: str) -> Any:
    cur: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def examples_of(node: Mapping[str, Any], doc: Mapping[str, Any]) -> list[Any]:
    """The examples an OpenAPI object carries: 'example', 'examples' as a 3.1 list or a 3.0 map."""
    found: list[Any] = []
    if "example" in node:
        found.append(node["example"])
    examples = node.get("examples")
    if isinstance(examples, list):
        found.extend(examples)
    elif isinstance(examples, dict):
        for ex in examples.values():
            try:
                ex = deref(doc, ex)
            except Unsatisfiable:
                continue
            if isinstance(ex, dict) and "value" in ex:
                found.append(ex["value"])
    return found


class _Walk:
    """One sample's walk through a schema, with its budget of nodes."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.nodes = 0

    def value(self, schema: Any, where: str, depth: int, refs: tuple[str, ...]) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise Unsatisfiable(f"{where}: the schema is too large to sample (over {MAX_NODES} parts)")
        if depth > MAX_DEPTH:
            raise Unsatisfiable(f"{where}: the schema nests deeper than {MAX_DEPTH} levels")
        if isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if isinstance(ref, str) and ref in refs:
                raise Unsatisfiable(f"{where}: {ref} requires a value of itself (a recursive schema)")
            target = deref(self.doc, {"$ref": ref}, where)
            return self.value(target, where, depth + 1, (*refs, str(ref)))
        if schema is True or schema == {}:
            return "test"  # any value is valid
        if not isinstance(schema, dict):
            raise Unsatisfiable(f"{where}: the schema is {_short(schema)}, not an object")
        return self._given(schema, where, depth, refs)

    def _given(self, schema: dict[str, Any], where: str, depth: int, refs: tuple[str, ...]) -> Any:
        """Values the document gives (examples, default, const, enum), else one made from the type."""
        examples = examples_of(schema, self.doc)
        if examples:
            return examples[0]
        for key in ("default", "const"):
            if key in schema:
                return schema[key]
        if "enum" in schema:
            enum = schema["enum"]
            if not isinstance(enum, list) or not enum:
                raise Unsatisfiable(f"{where}: 'enum' is {_short(enum)}, expected a non-empty list")
            return next((v for v in enum if v is not None), None)
        if "allOf" in schema:
            merged = self._merge_all_of(schema, where)
            return self.value(merged, where, depth + 1, refs)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self._one_of(schema, key, where, depth, refs)
        return self._typed(schema, where, depth, refs)

    def _merge_all_of(self, schema: dict[str, Any], where: str) -> dict[str, Any]:
        """allOf as one schema: properties and required united, bounds narrowed, the rest first-wins."""
        subs = schema["allOf"]
        if not isinstance(subs, list):
            raise Unsatisfiable(f"{where}: 'allOf' is {_short(subs)}, expected a list")
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in subs:
            sub = deref(self.doc, sub, where)
            if not isinstance(sub, dict):
                raise Unsatisfiable(f"{where}: an 'allOf' part is {_short(sub)}, not an object")
            for key, val in sub.items():
                _merge_keyword(merged, key, val)
        return merged

    def _one_of(self, schema: dict[str, Any], key: str, where: str, depth: int, refs: tuple[str, ...]) -> Any:
        subs = schema[key]
        if not isinstance(subs, list) or not subs:
            raise Unsatisfiable(f"{where}: '{key}' is {_short(subs)}, expected a non-empty list")
        rest = {k: v for k, v in schema.items() if k != key}
        nullable = False
        reason = f"{where}: no '{key}' branch can be sampled"
        for sub in subs:
            sub = deref(self.doc, sub, where)
            if isinstance(sub, dict) and sub.get("type") == "null":
                nullable = True
                continue
            # Keywords beside anyOf (FastAPI puts 'title' and 'default' there) apply to every branch.
            branch = {**rest, **sub} if isinstance(sub, dict) else sub
            try:
                return self.value(branch, where, depth + 1, refs)
            except Unsatisfiable as e:
                reason = str(e)
        if nullable:
            return None
        raise Unsatisfiable(reason)

    def _typed(self, schema: dict[str, Any], where: str, depth: int, refs: tuple[str, ...]) -> Any:  # noqa: PLR0911 - one return per JSON type
        kind = _type_of(schema, where)
        if kind == "null":
            return None
        if kind == "boolean":
            return True
        if kind == "integer":
            return _integer(schema, where)
        if kind == "number":
            return _number(schema, where)
        if kind == "string":
            return _string(schema, where)
        if kind == "array":
            return self._array(schema, where, depth, refs)
        if kind == "object":
            return self._object(schema, where, depth, refs)
        raise Unsatisfiable(f"{where}: unknown type {kind!r}")

    def _array(self, schema: dict[str, Any], where: str, depth: int, refs: tuple[str, ...]) -> list[Any]:
        lo = _count(schema, "minItems", where) or 0
        hi = _count(schema, "maxItems", where)
        if lo > MAX_ITEMS or (hi is not None and hi < lo):
            raise Unsatisfiable(f"{where}: minItems {lo} (maxItems {hi}) cannot be sampled")
        prefix = schema.get("prefixItems")  # 3.1 tuples: one schema per position
        if prefix is not None:
            if not isinstance(prefix, list):
                raise Unsatisfiable(f"{where}: 'prefixItems' is {_short(prefix)}, expected a list")
            head = [self.value(s, f"{where}[{i}]", depth + 1, refs) for i, s in enumerate(prefix)]
            if len(head) >= lo:
                return head
        items = schema.get("items", {})
        want = lo if (hi == 0 or schema.get("uniqueItems") is True) else max(lo, 1)
        if want > 1 and schema.get("uniqueItems") is True:
            raise Unsatisfiable(f"{where}: {want} unique items cannot be sampled")
        try:
            one = self.value(items, f"{where}[0]", depth + 1, refs)
        except Unsatisfiable:
            if lo == 0:
                return []  # an empty list is valid, and a recursive tree ends here
            raise
        if want == 0:
            return []
        return [one] * want

    def _object(
        self, schema: dict[str, Any], where: str, depth: int, refs: tuple[str, ...]
    ) -> dict[str, Any]:
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, dict):
            raise Unsatisfiable(f"{where}: 'properties' is {_short(props)}, expected an object")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise Unsatisfiable(f"{where}: 'required' is {_short(required)}, expected a list of names")
        extra = schema.get("additionalProperties", {})
        names = list(dict.fromkeys(required))
        want = _count(schema, "minProperties", where) or 0
        names += [n for n in props if n not in names][: max(0, want - len(names))]
        out: dict[str, Any] = {}
        for name in names:
            sub = props.get(name, extra if isinstance(extra, dict) else {})
            out[name] = self.value(sub, f"{where}.{name}", depth + 1, refs)
        return out


def _merge_keyword(merged: dict[str, Any], key: str, val: Any) -> None:
    if key == "properties" and isinstance(val, dict):
        base = merged.get("properties")
        merged["properties"] = {**(base if isinstance(base, dict) else {}), **val}
    elif key == "required" and isinstance(val, list):
        base = merged.get("required")
        merged["required"] = [*(base if isinstance(base, list) else []), *val]
    elif key in ("minimum", "minLength", "minItems") and isinstance(merged.get(key), (int, float)):
        merged[key] = max(merged[key], val) if isinstance(val, (int, float)) else val
    elif key in ("maximum", "maxLength", "maxItems") and isinstance(merged.get(key), (int, float)):
        merged[key] = min(merged[key], val) if isinstance(val, (int, float)) else val
    else:
        merged.setdefault(key, val)


def _type_of(schema: Mapping[str, Any], where: str) -> str:
    """The first non-null type named, or one inferred from the keywords present."""
    kind = schema.get("type")
    if isinstance(kind, list) and kind and all(isinstance(k, str) for k in kind):
        return next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if kind is not None:
        raise Unsatisfiable(f"{where}: 'type' is {_short(kind)}, expected a type name")
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _count(schema: Mapping[str, Any], key: str, where: str) -> int | None:
    val = schema.get(key)
    if val is None:
        return None
    if isinstance(val, float) and val.is_integer():
        val = int(val)
    if isinstance(val, bool) or not isinstance(val, int) or val < 0:
        raise Unsatisfiable(f"{where}: '{key}' is {_short(val)}, expected a whole number >= 0")
    return val


def _number_kw(schema: Mapping[str, Any], key: str, where: str) -> float | None:
    val = schema.get(key)
    if val is None or (isinstance(val, bool) and key.startswith("exclusive")):
        return None  # OpenAPI 3.0 spells exclusiveMinimum as a flag on 'minimum'
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise Unsatisfiable(f"{where}: '{key}' is {_short(val)}, expected a number")
    return val


def _bounds(schema: Mapping[str, Any], where: str) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is exclusive, high, high is exclusive) from 3.0 or 3.1 spellings."""
    lo, hi = _number_kw(schema, "minimum", where), _number_kw(schema, "maximum", where)
    lo_x, hi_x = schema.get("exclusiveMinimum") is True, schema.get("exclusiveMaximum") is True
    x_lo, x_hi = _number_kw(schema, "exclusiveMinimum", where), _number_kw(schema, "exclusiveMaximum", where)
    if x_lo is not None and (lo is None or x_lo >= lo):
        lo, lo_x = x_lo, True
    if x_hi is not None and (hi is None or x_hi <= hi):
        hi, hi_x = x_hi, True
    return lo, lo_x, hi, hi_x


def _integer(schema: Mapping[str, Any], where: str) -> int:
    lo, lo_x, hi, hi_x = _bounds(schema, where)
    low = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
    high = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
    step = _number_kw(schema, "multipleOf", where)
    if step is not None and (step <= 0 or not float(step).is_integer()):
        raise Unsatisfiable(f"{where}: integer with multipleOf {step} cannot be sampled")
    m = int(step or 1)
    # 1 rather than 0: an id of 0 is often refused, and 1 is what people type.
    start = 1
    if low is not None and low > 1:
        start = low
    elif high is not None and high < 1:
        start = high
    value = math.ceil(start / m) * m
    if high is not None and value > high:
        value = math.floor(high / m) * m
    if (low is not None and value < low) or (high is not None and value > high):
        raise Unsatisfiable(f"{where}: no integer lies between {lo} and {hi} (multipleOf {m})")
    return value


def _number(schema: Mapping[str, Any], where: str) -> float:
    lo, lo_x, hi, hi_x = _bounds(schema, where)
    step = _number_kw(schema, "multipleOf", where)
    if step is not None and step <= 0:
        raise Unsatisfiable(f"{where}: multipleOf {step} is not positive")

    def inside(v: float) -> bool:
        above = lo is None or (v > lo if lo_x else v >= lo)
        below = hi is None or (v < hi if hi_x else v <= hi)
        return above and below

    picks = [1.0]
    if lo is not None:
        picks += [float(lo), lo + 1.0, (lo + hi) / 2 if hi is not None else lo + 0.5]
    if hi is not None:
        picks += [float(hi), hi - 1.0]
    for v in picks:
        if step is not None:
            v = math.ceil(v / step) * step
        if inside(v):
            return v
    raise Unsatisfiable(f"{where}: no number lies between {lo} and {hi}")


def _string(schema: Mapping[str, Any], where: str) -> str:
    lo = _count(schema, "minLength", where) or 0
    hi = _count(schema, "maxLength", where)
    if lo > MAX_STRING or (hi is not None and hi < lo):
        raise Unsatisfiable(f"{where}: minLength {lo} (maxLength {hi}) cannot be sampled")
    fmt = schema.get("format")
    rx = _pattern(schema, where)
    candidates = [FORMAT_SAMPLES[fmt]] if isinstance(fmt, str) and fmt in FORMAT_SAMPLES else []
    candidates += ["test", _fit("test", lo, hi)]
    if rx is not None:
        candidates += [_fit(c, lo, hi) for c in strings_matching(rx.pattern, lo)]
    for c in candidates:
        if lo <= len(c) and (hi is None or len(c) <= hi) and (rx is None or rx.search(c)):
            return c
    shown = f" matching {rx.pattern!r}" if rx is not None else ""
    raise Unsatisfiable(f"{where}: cannot make a {fmt or 'string'} of length {lo}..{hi}{shown}")


def _pattern(schema: Mapping[str, Any], where: str) -> re.Pattern[str] | None:
    pattern = schema.get("pattern")
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise Unsatisfiable(f"{where}: 'pattern' is {_short(pattern)}, expected a regular expression")
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        shown = pattern[:80]
        raise Unsatisfiable(f"{where}: pattern {shown!r} is not a regular expression Python reads") from None


def _fit(text: str, lo: int, hi: int | None) -> str:
    text = text + "x" * max(0, lo - len(text))
    return text if hi is None else text[:hi]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------
# Request bodies

FORM: Final = "application/x-www-form-urlencoded"
JSON: Final = "application/json"


@dataclass(frozen=True)
class Body:
    content: bytes
    content_type: str


def request_body(doc: Mapping[str, Any], spec: object) -> Body | None:
    """A valid body for an OpenAPI requestBody (JSON or form); None when it is optional and unmakeable.

    Raises Unsatisfiable with the reason when the body is required and cannot be made.
    """
    spec = deref(doc, spec, "requestBody")
    if not isinstance(spec, dict):
        raise Unsatisfiable(f"'requestBody' is {_short(spec)}, expected an object")
    try:
        return _body(doc, spec)
    except Unsatisfiable:
        if spec.get("required") is True:
            raise
        return None  # the route takes no body as well


def _body(doc: Mapping[str, Any], spec: Mapping[str, Any]) -> Body:
    content = spec.get("content")
    if not isinstance(content, dict) or not content:
        raise Unsatisfiable(f"the request body's 'content' is {_short(content)}, expected media types")
    media_type, media = _pick_media(content)
    if not isinstance(media, dict):
        raise Unsatisfiable(f"the request body's {media_type!r} is {_short(media)}, not an object")
    examples = examples_of(media, doc)
    if examples:
        value = examples[0]
    else:
        got = sample_schema(doc, media.get("schema", {}), "body")
        if isinstance(got, NoSample):
            raise Unsatisfiable(got.reason)
        value = got.value
    if media_type == FORM:
        return Body(_form(value), FORM)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise Unsatisfiable(f"the body example is not JSON: {e}") from None
    return Body(text.encode(), JSON if media_type == "*/*" else media_type)


def _pick_media(content: Mapping[str, Any]) -> tuple[str, Any]:
    """JSON first (what most routes take), then a urlencoded form; multipart and others are left out."""
    for media_type, media in content.items():
        base = str(media_type).split(";")[0].strip().lower()
        if base in (JSON, "*/*") or (base.startswith("application/") and base.endswith("+json")):
            return str(media_type), media
    if FORM in content:
        return FORM, content[FORM]
    kinds = ", ".join(str(k) for k in content)
    raise Unsatisfiable(f"the request body is {kinds}, which fastapi-tune cannot make; pass one with --body")


def _form(value: Any) -> bytes:
    if not isinstance(value, dict):
        raise Unsatisfiable(f"a form body must be an object of fields, not {_short(value)}")
    pairs: list[tuple[str, str]] = []
    for name, field in value.items():
        for v in field if isinstance(field, list) else [field]:
            if isinstance(v, (dict, list)):
                raise Unsatisfiable(f"form field {name!r} holds {_short(v)}; a form field is text")
            pairs.append((str(name), scalar_text(v)))
    return urlencode(pairs).encode()


def scalar_text(value: Any) -> str:
    """How a JSON scalar reads in a URL or a form: true/false, not Python's True/False."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)
