"""Discovery against real apps under uvicorn: generated bodies are accepted; the preflight's hints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import BadInputError
from fastapi_tune.discover.openapi import (
    Operation,
    discover,
    explicit_operations,
    fetch_json,
    parse_body_option,
)
from fastapi_tune.discover.samples import Body
from fastapi_tune.measure.preflight import json_getter, preflight, preflight_all, resolve_ids
from tests.apps.preflight_app import TOKEN
from tests.servers import Server, serve


@pytest.fixture(scope="module")
def bodies() -> Iterator[Server]:
    with serve("tests.apps.bodies_app:app") as s:
        yield s


@pytest.fixture(scope="module")
def guarded() -> Iterator[Server]:
    with serve("tests.apps.preflight_app:app") as s:
        yield s


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def document(client: httpx.Client, server: Server) -> dict[str, Any]:
    doc = fetch_json(client, server.url + "/openapi.json")
    assert isinstance(doc, dict)
    return doc


def send(client: httpx.Client, op: Operation) -> httpx.Response:
    headers = {"Content-Type": op.content_type} if op.content_type else {}
    return client.request(op.method, op.url, content=op.body, headers=headers)


def test_generated_bodies_and_parameters_are_accepted(bodies: Server, client: httpx.Client) -> None:
    """The real test of sample generation: FastAPI's own validation accepts every request made."""
    found = discover(document(client, bodies), bodies.url, "openapi.json", include_unsafe=True)
    made = {(op.method, op.path) for op in found.operations}
    assert made == {
        ("POST", "/users"), ("PUT", "/trees/{tree_id}"), ("PATCH", "/owners"), ("POST", "/exampled"),
        ("POST", "/embedded"), ("POST", "/form"), ("POST", "/optional-body"), ("POST", "/list-body"),
        ("DELETE", "/items/{item_id}"), ("GET", "/query"),
    }  # fmt: skip
    refused = {}
    for op in found.operations:
        resp = send(client, op)
        if resp.status_code != 200:
            refused[f"{op.method} {op.path}"] = (op.body, resp.status_code, resp.text[:300])
    assert refused == {}
    (upload,) = found.skipped
    assert (upload.path, "multipart/form-data" in upload.reason) == ("/upload", True)
    # The document's own examples are used first.
    exampled = next(op for op in found.operations if op.path == "/exampled")
    assert json.loads(exampled.body or b"") == {"name": "from-example", "qty": 3}


def test_preflight_skips_what_would_fail_with_a_hint(guarded: Server, client: httpx.Client) -> None:
    found = discover(document(client, guarded), guarded.url, "openapi.json")
    assert "POST /orders" in {f"{s.method} {s.path}" for s in found.skipped}  # unsafe: not sent
    kept, skipped = preflight_all(client, found.operations)
    assert {op.path for op in kept} == {"/items/", "/moved"}
    reasons = {s.path: s.reason for s in skipped}
    assert reasons == {
        "/items/{item_id}": (
            "preflight answered 404: item_id=1 was made up; pass a real value with --param item_id=VALUE"
        ),
        "/users/{user_id}": (
            "preflight answered 404: user_id=1 was made up; pass a real value with --param user_id=VALUE"
        ),
        "/secure": "preflight answered 401: pass credentials with -H 'Authorization: ...'",
        "/boom": "preflight answered 500: the route fails on its own (database is down)",
    }


def test_real_values_from_listings_params_and_headers(guarded: Server, client: httpx.Client) -> None:
    doc = document(client, guarded)
    params = {"user_id": "42"}
    found = discover(doc, guarded.url, "openapi.json", params=params)
    ops = resolve_ids(doc, found.operations, guarded.url, json_getter(client, 5.0), params)
    by_path = {op.path: op for op in ops}
    # /items/ lists ids 7 and 9: the first one replaces the made-up 1.
    assert by_path["/items/{item_id}"].url == f"{guarded.url}/items/7"
    assert by_path["/items/{item_id}"].guessed == ()  # a listed id is real, not made up
    assert by_path["/users/{user_id}"].url == f"{guarded.url}/users/42"
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}) as authed:
        kept, skipped = preflight_all(authed, ops)
    assert [s.path for s in skipped] == ["/boom"]
    assert {op.path for op in kept} == {
        "/items/",
        "/items/{item_id}",
        "/users/{user_id}",
        "/secure",
        "/moved",
    }


def test_preflight_of_a_body_the_app_refuses(guarded: Server, client: httpx.Client) -> None:
    doc = document(client, guarded)
    ops, _ = explicit_operations([("POST", "/orders"), ("PUT", "/secure")], doc, guarded.url)
    generated, wrong_method = ops
    result = preflight(client, generated)
    assert (result.ok, result.status) == (False, 422)
    assert result.hint == (
        "body.name: Value error, 'test' is not a real name;"
        " pass a valid body with --body 'POST /orders=@body.json'"
    )
    assert preflight(client, wrong_method).hint == "the server does not accept PUT here"
    method, path, content, kind = parse_body_option('POST /orders={"name": "ann"}', lambda p: b"")
    ops, _ = explicit_operations(
        [("POST", "/orders")], doc, guarded.url, bodies={(method, path): Body(content, kind)}
    )
    result = preflight(client, ops[0])
    assert (result.ok, result.status, result.hint) == (True, 200, "")


def test_a_document_nested_too_deeply_is_bad_input(guarded: Server, client: httpx.Client) -> None:
    with pytest.raises(BadInputError, match="nests too deeply"):
        fetch_json(client, guarded.url + "/deep.json")


def test_a_generated_body_is_sent_with_every_request_of_the_ladder(tmp_path: Path) -> None:
    """Preflight and load send the same bytes: a POST probed with its generated body answers 200."""
    out = tmp_path / "r.json"
    with serve("tests.apps.bodies_app:app") as s:
        result = CliRunner().invoke(
            app, ["probe", s.url, "-e", "POST /users", "--levels", "1,2", "--duration", "0.2", "--no-profile",
                  "-o", str(out)],
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (ep,) = json.loads(out.read_text())["endpoints"]
    assert ep["body"] is not None
    assert ep["content_type"] == "application/json"
    assert all(lv["errors"] == 0 and lv["requests"] > 0 for lv in ep["levels"]), ep["levels"]


def test_a_body_the_user_gave_is_sent_but_never_kept(tmp_path: Path) -> None:
    """--body may hold a password: the report marks it given and keeps no bytes, however it was typed."""
    out = tmp_path / "r.json"
    with serve("tests.apps.bodies_app:app") as s:
        doc = httpx.get(s.url + "/openapi.json").json()
        body = json.loads(discover(doc, s.url, "x", include_unsafe=True).operations[0].body or b"{}")
        result = CliRunner().invoke(
            app, ["probe", s.url, "-e", "POST /users", "--body", f"post /users={json.dumps(body)}",
                  "--levels", "1", "--duration", "0.2", "--no-profile", "-o", str(out)],
        )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    (ep,) = json.loads(out.read_text())["endpoints"]
    assert (ep["body"], ep["body_given"]) == (None, True)
    assert ep["levels"][0]["errors"] == 0
