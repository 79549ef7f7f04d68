"""Secrets never leave (issue 23, item 3): every way a URL or a secret enters, against a real server,
and the secret is nowhere afterwards: not on stdout, stderr, in the report, the HTML or a script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.core.errors import ExitCode
from fastapi_tune.core.redact import option_secrets
from fastapi_tune.discover.openapi import explicit_operations
from tests.hostile_servers import hostile_server, json_route
from tests.servers import REPO, Server, free_port, serve

QUICK = ("--levels", "1,2", "--duration", "0.15", "--no-profile")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve("tests.apps.secret_app:app") as s:
        yield s


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run the CLI in-process; everything it said and every file it wrote, as one text."""
    result = CliRunner().invoke(app, list(args), env={"FASTAPI_TUNE_CPUS": "", "FASTAPI_TUNE_MEMORY": ""})
    files = [p.read_text(errors="replace") for p in sorted(tmp_path.rglob("*")) if p.is_file()]
    return result.exit_code, "\n".join([result.stdout, result.stderr, *files])


def secret(name: str) -> str:
    return f"S3CRET-{name}-9f27"


# (case, arguments after the target with {S} for the secret, exit code). The target is the real app.
PROBE_CASES = [
    ("e-declared", ["-e", "GET /x?api_key={S}"], ExitCode.OK),
    ("e-undeclared-404", ["-e", "GET /nowhere?token={S}"], ExitCode.NOTHING_MEASURED),
    ("e-echoed-by-the-server", ["-e", "GET /echo?token={S}"], ExitCode.NOTHING_MEASURED),
    ("e-with-path-param", ["-e", "GET /items/{{item_id}}?token={S}", "--param", "item_id=3"], ExitCode.OK),
    ("e-json", ["-e", "GET /x?api_key={S}", "--json"], ExitCode.OK),
    ("openapi-relative", ["--openapi", "/openapi.json?token={S}", "-e", "GET /x"], ExitCode.OK),
    ("openapi-missing", ["--openapi", "/nope.json?token={S}"], ExitCode.BAD_INPUT),
    ("param", ["-e", "GET /x", "--param", "api_key={S}"], ExitCode.OK),
    ("header", ["-e", "GET /x", "-H", "X-API-Key: {S}"], ExitCode.OK),
    (
        "body",
        ["-e", "POST /login", "--body", 'POST /login={{"username": "u", "password": "{S}"}}'],
        ExitCode.OK,
    ),
]


@pytest.mark.parametrize(("args", "code"), [pytest.param(a, c, id=i) for i, a, c in PROBE_CASES])
def test_a_secret_given_to_probe_is_nowhere_after(
    args: list[str], code: ExitCode, server: Server, tmp_path: Path
) -> None:
    s = secret("probe")
    filled = [a.format(S=s) for a in args]
    got, said = run(
        tmp_path,
        "probe",
        server.url,
        *filled,
        *QUICK,
        "--out",
        str(tmp_path / "r.json"),
        "--html",
        str(tmp_path / "r.html"),
    )
    assert got == code, said[-3000:]
    assert (tmp_path / "r.json").is_file() or code not in (ExitCode.OK, ExitCode.NOTHING_MEASURED)
    assert s not in said
    assert "<redacted>" in said or "--body" in " ".join(args)  # it was there, and hidden


def test_a_secret_in_an_absolute_openapi_url(server: Server, tmp_path: Path) -> None:
    s = secret("openapi")
    got, said = run(
        tmp_path, "probe", server.url, "--openapi", f"{server.url}/openapi.json?api_key={s}", "-e", "GET /x",
        *QUICK, "--out", str(tmp_path / "r.json"),
    )  # fmt: skip
    assert got == ExitCode.OK, said[-3000:]
    assert s not in said


@pytest.mark.parametrize(
    ("target", "code"),
    [
        pytest.param("http://user:{S}@127.0.0.1:{P}", ExitCode.USAGE, id="userinfo"),
        pytest.param("http://127.0.0.1:{P}/?token={S}", ExitCode.USAGE, id="query"),
        pytest.param("http://127.0.0.1:{D}", ExitCode.TARGET_UNREACHABLE, id="dead-server"),
    ],
)
def test_a_secret_in_or_beside_the_target(
    target: str, code: ExitCode, server: Server, tmp_path: Path
) -> None:
    s = secret("target")
    url = target.format(S=s, P=server.port, D=free_port())
    got, said = run(
        tmp_path, "probe", url, "-e", f"GET /x?api_key={s}", *QUICK, "--out", str(tmp_path / "r.json")
    )
    assert got == code, said[-3000:]
    assert s not in said


def test_export_and_report_from_a_probe_given_a_secret(server: Server, tmp_path: Path) -> None:
    s = secret("export")
    report = tmp_path / "r.json"
    got, _ = run(tmp_path, "probe", server.url, "-e", f"GET /x?api_key={s}", *QUICK, "--out", str(report))
    assert got == ExitCode.OK
    for args in (
        ["export", "locust", "--report", str(report), "-o", str(tmp_path / "locustfile.py")],
        ["export", "k6", "--report", str(report), "-o", str(tmp_path / "load.js")],
        ["report", str(report), "--html", str(tmp_path / "again.html")],
    ):
        got, said = run(tmp_path, *args)
        assert got == ExitCode.OK, said[-2000:]
        assert s not in said


def test_the_query_of_e_counts_among_the_options_secrets() -> None:
    found = option_secrets(endpoints=["GET /x?api_key=abcd1234&page=2", "/y?token=zzzz9999"])
    assert set(found) == {"abcd1234", "zzzz9999"}


@pytest.mark.slow
def test_tune_given_secrets_keeps_them(tmp_path: Path) -> None:
    s, p = secret("tune"), secret("tune-param")
    got, said = run(
        tmp_path, "tune", "secret_app:app", "--app-dir", str(REPO / "tests" / "apps"),
        "-e", f"GET /x?api_key={s}", "-e", "GET /items/{item_id}", "--param", "item_id=2",
        "--param", f"token={p}", "-H", f"Authorization: Bearer {s}", "--max-seconds", "12", "--yes",
        "--out", str(tmp_path / "g.conf.py"), "--report", str(tmp_path / "p.json"),
    )  # fmt: skip
    assert got == ExitCode.OK, said[-3000:]
    assert s not in said
    assert p not in said


@pytest.mark.slow
def test_verify_given_a_secret_in_e_keeps_it(tmp_path: Path) -> None:
    s = secret("verify")
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 1\nworker_class = 'uvicorn_worker.UvicornWorker'\n")
    got, said = run(
        tmp_path, "verify", "secret_app:app", "-c", str(conf), "--app-dir", str(REPO / "tests" / "apps"),
        "-e", f"GET /x?api_key={s}", "--repeat", "1", "--duration", "1", "--json",
    )  # fmt: skip
    assert got == ExitCode.OK, said[-3000:]
    assert s not in said


def test_the_query_of_e_is_sent_as_typed_and_shown_redacted() -> None:
    doc = {
        "openapi": "3.1.0",
        "paths": {
            "/x": {
                "get": {
                    "parameters": [
                        {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},
                        {"name": "page", "in": "query", "required": True, "schema": {"type": "integer"}},
                    ]
                }
            }
        },
    }
    s = secret("explicit")
    ops, skipped = explicit_operations(
        [("GET", f"/x?api_key={s}&q=mine"), ("GET", f"/other?token={s}")], doc, "http://127.0.0.1:1"
    )
    assert skipped == []
    declared, literal = ops
    assert declared.url == f"http://127.0.0.1:1/x?page=1&api_key={s}&q=mine"  # generated page, their q
    assert declared.path == "/x?api_key=<redacted>&q=mine"
    assert literal.url == f"http://127.0.0.1:1/other?token={s}"
    assert s not in literal.path


def test_the_secret_in_e_reaches_the_app_and_nothing_else(tmp_path: Path) -> None:
    s = secret("wire")
    doc = {"openapi": "3.1.0", "paths": {"/a": {"get": {}}}}
    with hostile_server({"/openapi.json": json_route(doc)}, json_route({"ok": 1})) as h:
        got, said = run(
            tmp_path, "probe", h.url, "-e", f"GET /a?api_key={s}", *QUICK, "--out", str(tmp_path / "r.json")
        )
        assert any(s in r for r in h.requests)  # the app got it
    assert got == ExitCode.OK, said[-2000:]
    assert s not in said
