"""Discovery without a server: sample values from schemas, the option parsers, hostile documents."""

from __future__ import annotations

import copy
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastapi_tune.core.errors import BadInputError, UsageError
from fastapi_tune.discover.openapi import (
    UNSAFE_REASON,
    Operation,
    Skipped,
    discover,
    explicit_operations,
    parse_body_option,
    parse_param_option,
)
from fastapi_tune.discover.samples import Body, NoSample, Sample, sample_schema
from fastapi_tune.measure.preflight import find_listing, hint_for, id_from_listing
from tests.apps.bodies_app import app as bodies_app

BASE = "http://127.0.0.1:1"


def value_of(schema: object, doc: dict[str, Any] | None = None) -> Any:
    got = sample_schema(doc or {}, schema)
    assert isinstance(got, Sample), got
    return got.value


def reason_of(schema: object, doc: dict[str, Any] | None = None) -> str:
    got = sample_schema(doc or {}, schema)
    assert isinstance(got, NoSample), got
    return got.reason


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param({"type": "string"}, "test", id="string"),
        pytest.param({"type": "string", "minLength": 6}, "testxx", id="minLength"),
        pytest.param({"type": "string", "maxLength": 2}, "te", id="maxLength"),
        pytest.param({"type": "string", "format": "email"}, "user@example.com", id="email"),
        pytest.param({"type": "string", "format": "date-time"}, "2024-01-01T00:00:00Z", id="date-time"),
        pytest.param({"type": "string", "format": "uuid"}, "00000000-0000-4000-8000-000000000001", id="uuid"),
        pytest.param({"type": "string", "format": "uri", "minLength": 1}, "http://example.com/", id="uri"),
        pytest.param({"type": "string", "pattern": r"^[A-Z]{3}-\d{4}$"}, "AAA-0000", id="pattern"),
        pytest.param(
            {"type": "string", "pattern": r"^(foo|bar)+$", "minLength": 5}, "foofoo", id="pattern-len"
        ),
        pytest.param({"type": "string", "pattern": "es"}, "test", id="unanchored-pattern"),
        pytest.param({"type": "integer"}, 1, id="integer"),
        pytest.param({"type": "integer", "minimum": 10, "maximum": 20, "multipleOf": 7}, 14, id="multipleOf"),
        pytest.param({"type": "integer", "exclusiveMinimum": 17}, 18, id="exclusiveMinimum-3.1"),
        pytest.param(
            {"type": "integer", "minimum": 5, "exclusiveMinimum": True}, 6, id="exclusiveMinimum-3.0"
        ),
        pytest.param({"type": "integer", "maximum": -3}, -3, id="negative"),
        pytest.param({"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}, 0.25, id="number-range"),
        pytest.param({"type": "boolean"}, True, id="boolean"),
        pytest.param({"type": "null"}, None, id="null"),
        pytest.param({"type": ["null", "integer"]}, 1, id="type-list"),
        pytest.param({"type": "string", "nullable": True}, "test", id="nullable-3.0"),
        pytest.param({"anyOf": [{"type": "null"}, {"type": "integer"}]}, 1, id="anyOf-null-first"),
        pytest.param({"enum": [None, "b", "c"]}, "b", id="enum"),
        pytest.param({"const": "cat"}, "cat", id="const"),
        pytest.param({"type": "integer", "default": 7}, 7, id="default"),
        pytest.param({"type": "string", "example": "ex"}, "ex", id="example-3.0"),
        pytest.param({"type": "string", "examples": ["ex1", "ex2"]}, "ex1", id="examples-3.1"),
        pytest.param(
            {"type": "array", "items": {"type": "integer"}, "minItems": 3}, [1, 1, 1], id="minItems"
        ),
        pytest.param({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, [], id="set"),
        pytest.param(
            {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
            [1, "test"],
            id="tuple",
        ),
        pytest.param(
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                "required": ["a"],
            },
            {"a": 1},
            id="only-required",
        ),
        pytest.param(
            {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"required": ["b"]}]},
            {"a": 1, "b": "test"},
            id="allOf",
        ),
        pytest.param(
            {"allOf": [{"type": "string", "minLength": 2}, {"maxLength": 3}]}, "tes", id="allOf-bounds"
        ),
        pytest.param({}, "test", id="any"),
    ],
)
def test_sample_values(schema: dict[str, Any], expected: object) -> None:
    assert value_of(schema) == expected


def test_refs_and_recursion() -> None:
    ref = "#/components/schemas/"
    tree = {
        "type": "object",
        "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": ref + "Tree"}}},
        "required": ["v", "kids"],
    }
    a_needs_b = {"type": "object", "properties": {"b": {"$ref": ref + "B"}}, "required": ["b"]}
    b_needs_a = {"type": "object", "properties": {"a": {"$ref": ref + "A"}}, "required": ["a"]}
    schemas = {"Tree": tree, "A": a_needs_b, "B": b_needs_a, "Self": {"$ref": ref + "Self"}}
    doc: dict[str, Any] = {"components": {"schemas": schemas}}
    # A required list of itself ends with an empty list; a required self never ends.
    assert value_of({"$ref": "#/components/schemas/Tree"}, doc) == {"v": 1, "kids": []}
    assert "recursive" in reason_of({"$ref": "#/components/schemas/A"}, doc)
    assert "refers to itself" in reason_of({"$ref": "#/components/schemas/Self"}, doc)
    assert "points to nothing" in reason_of({"$ref": "#/components/schemas/Nope"}, doc)
    assert "not a reference into this document" in reason_of({"$ref": "other.json#/X"}, doc)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        pytest.param({"type": "string", "minLength": "five"}, "'minLength' is 'five'", id="minLength-text"),
        pytest.param({"type": "string", "minLength": -1}, "'minLength' is -1", id="minLength-negative"),
        pytest.param({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5", id="min-over-max"),
        pytest.param({"type": "string", "minLength": 10**9}, "minLength", id="huge-minLength"),
        pytest.param({"type": "string", "pattern": "((("}, "not a regular expression", id="bad-pattern"),
        pytest.param({"type": "string", "pattern": "^(?=x)y$"}, "matching", id="lookahead"),
        pytest.param({"type": "string", "pattern": "^(a{1000}){1000}$"}, "matching", id="huge-repeat"),
        pytest.param({"type": "integer", "minimum": 5, "maximum": 4}, "no integer", id="empty-range"),
        pytest.param({"type": "integer", "maximum": "ten"}, "'maximum' is 'ten'", id="maximum-text"),
        pytest.param({"type": "number", "minimum": float("nan")}, "'minimum'", id="nan"),
        pytest.param({"enum": []}, "'enum'", id="empty-enum"),
        pytest.param({"type": 5}, "'type' is 5", id="type-number"),
        pytest.param({"type": "tuple"}, "unknown type", id="unknown-type"),
        pytest.param({"anyOf": "x"}, "'anyOf'", id="anyOf-text"),
        pytest.param({"type": "object", "properties": []}, "'properties'", id="properties-list"),
        pytest.param({"type": "object", "required": "a"}, "'required'", id="required-text"),
        pytest.param({"type": "array", "minItems": 2, "uniqueItems": True}, "unique", id="unique-items"),
        pytest.param(False, "not an object", id="false-schema"),
        pytest.param("string", "not an object", id="schema-text"),
    ],
)
def test_unsatisfiable_schemas_give_reasons(schema: object, words: str) -> None:
    assert words in reason_of(schema)


def test_deep_and_exploding_schemas_are_bounded() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        deep = {"type": "object", "properties": {"a": deep}, "required": ["a"]}
    assert "deeper than" in reason_of(deep)
    # Ten of the next level at each of ten levels: 10**10 values if nothing bounded the walk.
    schemas: dict[str, Any] = {"L10": {"type": "integer"}}
    for i in range(10):
        props = {f"p{k}": {"$ref": f"#/components/schemas/L{i + 1}"} for k in range(10)}
        schemas[f"L{i}"] = {"type": "object", "properties": props, "required": list(props)}
    started = time.monotonic()
    assert "too large" in reason_of({"$ref": "#/components/schemas/L0"}, {"components": {"schemas": schemas}})
    assert time.monotonic() - started < 5  # bounded work, generous on a busy machine


# ---------------------------------------------------------------------------------------
# Documents


def doc_with(op: dict[str, Any], path: str = "/items/{item_id}", method: str = "get") -> dict[str, Any]:
    return {"openapi": "3.1.0", "paths": {path: {method: op}}}


ID_PARAM: dict[str, Any] = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}
ITEM_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        }
    },
}


def only(found: Any) -> Operation | Skipped:
    items = [*found.operations, *found.skipped]
    assert len(items) == 1, items
    result: Operation | Skipped = items[0]
    return result


def test_unsafe_methods_are_opt_in() -> None:
    doc = doc_with({"requestBody": ITEM_BODY}, "/items", "post")
    skipped = only(discover(doc, BASE, "d"))
    assert isinstance(skipped, Skipped)
    assert skipped.reason == UNSAFE_REASON
    op = only(discover(doc, BASE, "d", include_unsafe=True))
    assert isinstance(op, Operation)
    assert (op.body, op.content_type) == (b'{"name":"test"}', "application/json")
    # -e names it: the generated body is used.
    ops, skipped_e = explicit_operations([("POST", "/items")], doc, BASE)
    assert (ops[0].body, skipped_e) == (b'{"name":"test"}', [])
    # --body names it too, and its bytes win.
    given = Body(b'{"name":"mine"}', "application/json")
    op = only(discover(doc, BASE, "d", bodies={("POST", "/items"): given}))
    assert isinstance(op, Operation)
    assert op.body == b'{"name":"mine"}'


def test_a_body_for_an_unknown_operation_is_a_usage_error() -> None:
    doc = doc_with({"requestBody": ITEM_BODY}, "/items", "post")
    given = {("POST", "/itmes"): Body(b"{}", "application/json")}
    with pytest.raises(UsageError, match="POST /itmes"):
        discover(doc, BASE, "d", bodies=given)
    with pytest.raises(UsageError, match="-e"):
        explicit_operations([("POST", "/items")], doc, BASE, bodies=given)


def test_param_values_fill_path_and_query() -> None:
    query = {"name": "colour", "in": "query", "required": False, "schema": {"type": "string"}}
    doc = doc_with({"parameters": [ID_PARAM, query]})
    op = only(discover(doc, BASE, "d"))
    assert isinstance(op, Operation)
    assert op.url == f"{BASE}/items/1"
    assert op.guessed == (("item_id", "1"),)
    op = only(discover(doc, BASE, "d", params={"item_id": "a/b", "colour": "dark red"}))
    assert isinstance(op, Operation)
    assert op.url == f"{BASE}/items/a%2Fb?colour=dark+red"
    assert op.guessed == ()
    # A literal -e path the document does not know is filled by name as well.
    ops, _ = explicit_operations([("GET", "/orders/{order_id}")], doc, BASE, params={"order_id": "77"})
    assert ops[0].url == f"{BASE}/orders/77"


@pytest.mark.parametrize(
    ("op", "words"),
    [
        pytest.param({"parameters": None}, None, id="parameters-null"),
        pytest.param({"parameters": "junk"}, "'parameters' is str", id="parameters-text"),
        pytest.param({"parameters": [None]}, "a parameter is None", id="parameter-null"),
        pytest.param(
            {"parameters": [{**ID_PARAM, "name": "n", "in": "query", "schema": {"minLength": "five"}}]},
            "'minLength' is 'five'",
            id="minLength-five",
        ),
        pytest.param(
            {"parameters": [{"$ref": "#/components/parameters/X"}]}, "points to nothing", id="bad-ref"
        ),
        pytest.param(
            {"parameters": [ID_PARAM, {"name": "X-Key", "in": "header", "required": True}]},
            "pass it with -H",
            id="header",
        ),
        pytest.param({"parameters": [ID_PARAM], "requestBody": "x"}, "'requestBody' is 'x'", id="body-text"),
        pytest.param(
            {
                "parameters": [ID_PARAM],
                "requestBody": {"required": True, "content": {"multipart/form-data": {}}},
            },
            "multipart/form-data",
            id="multipart",
        ),
        pytest.param(
            {"parameters": [ID_PARAM], "requestBody": {"content": {"multipart/form-data": {}}}},
            None,
            id="optional-multipart",
        ),
    ],
)
def test_bad_parts_skip_one_operation(op: dict[str, Any], words: str | None) -> None:
    result = only(discover(doc_with(op), BASE, "d", include_unsafe=True, params={"item_id": "3"}))
    if words is None:
        assert isinstance(result, Operation)
    else:
        assert isinstance(result, Skipped)
        assert words in result.reason


def test_broken_path_items_are_skipped_with_reasons() -> None:
    doc: dict[str, Any] = {
        "paths": {
            "items": {"get": {}},
            "/list": [],
            "/ref": {"$ref": "#/nowhere"},
            "/text-op": {"get": "nope", "parameters": None},
            "/fine": {"get": {"responses": {}}},
        }
    }
    found = discover(doc, BASE, "d")
    assert [op.path for op in found.operations] == ["/fine"]
    reasons = {s.path: s.reason for s in found.skipped}
    assert "must start with '/'" in reasons["items"]
    assert "expected an object" in reasons["/list"]
    assert "points to nothing" in reasons["/ref"]
    assert "not an object" in reasons["/text-op"]


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        pytest.param([1], "paths", id="not-an-object"),
        pytest.param({"paths": None}, "paths", id="paths-null"),
        pytest.param({"paths": {}, "components": []}, "components", id="components-list"),
        pytest.param({"paths": {}, "openapi": 3.1}, "openapi", id="openapi-number"),
    ],
)
def test_broken_documents_name_the_key(doc: object, key: str) -> None:
    with pytest.raises(BadInputError, match=f"'{key}'"):
        discover(doc, BASE, "x.json")


def test_a_huge_document_is_read_in_linear_time() -> None:
    paths = {
        f"/r{i}/{{item_id}}": {"parameters": [ID_PARAM], "get": {}, "post": {"requestBody": ITEM_BODY}}
        for i in range(20_000)
    }
    started = time.monotonic()
    found = discover({"paths": paths}, BASE, "d", include_unsafe=True)
    assert len(found.operations) == 40_000
    assert time.monotonic() - started < 30  # about a second here; generous for a busy machine


_JUNK: list[Any] = [None, "five", -1, 10**30, [], {}, {"$ref": "#/x"}, {"$ref": 5}, "(((", True, 1.5]


def _mutate(node: Any, rng: random.Random) -> None:
    """Replace one value somewhere below `node` with junk."""
    while True:
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if rng.random() < 0.3 or not isinstance(node[key], (dict, list)) or not node[key]:
                node[key] = rng.choice(_JUNK)
                return
            node = node[key]
        elif isinstance(node, list) and node:
            i = rng.randrange(len(node))
            if rng.random() < 0.3 or not isinstance(node[i], (dict, list)) or not node[i]:
                node[i] = rng.choice(_JUNK)
                return
            node = node[i]
        else:
            return


def test_mutated_fastapi_documents_never_crash() -> None:
    """A real document with junk put in random places: operations skip, the document may be refused."""
    original = bodies_app.openapi()
    rng = random.Random(1234)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        doc = copy.deepcopy(original)
        for _ in range(rng.randint(1, 4)):
            _mutate(doc, rng)
        try:
            found = discover(doc, BASE, "d", include_unsafe=True)
        except BadInputError:
            outcomes["refused"] += 1
            continue
        outcomes["ok"] += 1
        assert all(isinstance(s.reason, str) and s.reason for s in found.skipped)
    # Junk on 'paths' or 'components' refuses the document; elsewhere it skips operations.
    assert outcomes["ok"] > 100
    assert outcomes["refused"] > 0


# ---------------------------------------------------------------------------------------
# Option parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("item_id=42", ("item_id", "42"), id="plain"),
        pytest.param("q=a=b", ("q", "a=b"), id="equals-in-value"),
        pytest.param("X-Tenant=", ("X-Tenant", ""), id="empty-value"),
    ],
)
def test_parse_param(text: str, expected: tuple[str, str]) -> None:
    assert parse_param_option(text) == expected


@pytest.mark.parametrize("text", ["item_id", "=5", "item id=5", "{item_id}=5"])
def test_parse_param_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_param_option(text)


def no_files(path: str) -> bytes:
    raise FileNotFoundError(2, "No such file or directory", path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            'POST /items={"name": "x"}', ("POST", "/items", b'{"name": "x"}', "application/json"), id="inline"
        ),
        pytest.param(
            "put /items/{id}=[1, 2]", ("PUT", "/items/{id}", b"[1, 2]", "application/json"), id="lower"
        ),
        pytest.param(
            "POST /login=user=ann&password=x",
            ("POST", "/login", b"user=ann&password=x", "application/x-www-form-urlencoded"),
            id="form",
        ),
    ],
)
def test_parse_body(text: str, expected: tuple[str, str, bytes, str]) -> None:
    assert parse_body_option(text, no_files) == expected


def test_parse_body_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "body.json").write_text('{"name": "from file"}\n')
    reader: Callable[[str], bytes] = lambda p: (tmp_path / p).read_bytes()  # noqa: E731
    assert parse_body_option("PATCH /items/1=@body.json", reader) == (
        "PATCH",
        "/items/1",
        b'{"name": "from file"}\n',
        "application/json",
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("/items={}", "expected 'METHOD /path=@file.json'", id="no-method"),
        pytest.param("FETCH /items={}", "expected 'METHOD /path", id="bad-method"),
        pytest.param("POST /items", "expected 'METHOD /path", id="no-body"),
        pytest.param("POST /items=", "empty", id="empty"),
        pytest.param(
            'POST /items={"name": }', "neither JSON (Expecting value at line 1 column 10)", id="bad-json"
        ),
        pytest.param("POST /items=@missing.json", "cannot read 'missing.json' (No such file", id="no-file"),
    ],
)
def test_parse_body_refuses(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        parse_body_option(text, no_files)


# ---------------------------------------------------------------------------------------
# Hints and listings (pure)

ITEM_OP = Operation("GET", "/items/{item_id}", f"{BASE}/items/1", guessed=(("item_id", "1"),))
POST_OP = Operation("POST", "/orders", f"{BASE}/orders", b"{}", "application/json")
FASTAPI_422 = (
    '{"detail":[{"type":"missing","loc":["body","name"],"msg":"Field required","input":{}},'
    '{"type":"missing","loc":["body","qty"],"msg":"Field required","input":{}}]}'
)


@pytest.mark.parametrize(
    ("status", "op", "body", "expected"),
    [
        pytest.param(200, ITEM_OP, "", "", id="ok"),
        pytest.param(307, ITEM_OP, "", "", id="redirect"),
        pytest.param(401, ITEM_OP, "", "pass credentials with -H 'Authorization: ...'", id="401"),
        pytest.param(403, POST_OP, "", "pass credentials with -H 'Authorization: ...'", id="403"),
        pytest.param(
            404,
            ITEM_OP,
            "",
            "item_id=1 was made up; pass a real value with --param item_id=VALUE",
            id="404-made-up",
        ),
        pytest.param(404, POST_OP, "", "no such route at this URL (is the base path right?)", id="404-route"),
        pytest.param(405, POST_OP, "", "the server does not accept POST here", id="405"),
        pytest.param(
            422,
            POST_OP,
            FASTAPI_422,
            "body.name: Field required; pass a valid body with --body 'POST /orders=@body.json'",
            id="422-body",
        ),
        pytest.param(
            422,
            ITEM_OP,
            '{"detail":[{"loc":["query","limit"],"msg":"Input should be greater than 5"}]}',
            "query.limit: Input should be greater than 5; pass --param limit=VALUE",
            id="422-query",
        ),
        pytest.param(422, POST_OP, "not json", "the request was refused as invalid", id="422-not-fastapi"),
        pytest.param(
            500, POST_OP, '{"detail":"db\\ndown"}', "the route fails on its own (db down)", id="500"
        ),
        pytest.param(503, POST_OP, "<html>", "the route fails on its own", id="503-html"),
        pytest.param(
            429, POST_OP, "", "rate limited before any load; lift the limit for the probe", id="429"
        ),
        pytest.param(418, POST_OP, '{"detail":"teapot"}', "unexpected status (teapot)", id="418"),
    ],
)
def test_hint_for(status: int, op: Operation, body: str, expected: str) -> None:
    assert hint_for(status, op, body) == expected


LISTING_DOC: dict[str, Any] = {
    "paths": {
        "/items/": {"get": {}},
        "/items/{item_id}": {"get": {"parameters": [ID_PARAM]}},
        "/users/{userId}": {"get": {"parameters": [{"name": "userId", "in": "path", "required": True}]}},
        "/users": {"get": {}},
        "/orphans/{orphan_id}": {"get": {}},
    }
}


def test_find_listing() -> None:
    assert find_listing(LISTING_DOC, "/items/{item_id}", "item_id") is not None
    listing = find_listing(LISTING_DOC, "/users/{userId}", "userId")
    assert listing is not None
    assert listing.path == "/users"
    assert find_listing(LISTING_DOC, "/orphans/{orphan_id}", "orphan_id") is None


@pytest.mark.parametrize(
    ("op", "listing", "expected"),
    [
        pytest.param(ITEM_OP, [{"id": 7, "name": "seven"}], 7, id="id"),
        pytest.param(ITEM_OP, [{"item_id": 8, "id": "x"}], 8, id="own-name-first"),
        pytest.param(ITEM_OP, {"total": 1, "items": [{"id": 9}]}, 9, id="paged"),
        pytest.param(ITEM_OP, {"whatever": [{"pk": 10}]}, 10, id="any-key-pk"),
        pytest.param(ITEM_OP, [{"id": "abc"}, {"id": "12"}], "12", id="integer-param-skips-text"),
        pytest.param(ITEM_OP, [{"id": True}, {"id": None}], None, id="no-usable-id"),
        pytest.param(ITEM_OP, [], None, id="empty"),
        pytest.param(ITEM_OP, "junk", None, id="junk"),
        pytest.param(
            Operation("GET", "/users/{userId}", "u"), [{"user_id": "ann"}], "ann", id="camel-to-snake"
        ),
    ],
)
def test_id_from_listing(op: Operation, listing: object, expected: object) -> None:
    assert id_from_listing(LISTING_DOC, op, listing) == expected
