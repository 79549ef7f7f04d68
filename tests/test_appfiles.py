"""The app's files as the server really imported them (issue 23, item 1): a clone beside an installed
copy, --app-dir, an app installed into a venv, an editable install; then the demo and `tune` name the
app's line from wherever they are run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastapi_tune.cli.app import app
from fastapi_tune.measure.appfiles import AppFiles, app_module, find_app_files
from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.stacks import is_user_file
from tests.servers import REPO

# A package with a loop-blocking route: its line is what a profile must name.
SHOP_MAIN = """\
import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/block")
async def block() -> dict[str, str]:
    time.sleep(0.02)  # blocks the event loop
    return {"ok": "yes"}
"""
SITE_PACKAGES = sysconfig.get_paths()["purelib"]  # this venv's: fastapi and uvicorn are there


def make_shop(where: Path, pad: int = 0) -> Path:
    """shop/main.py under `where`; `pad` comment lines first, so each copy's line differs."""
    pkg = where / "shop"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text("# a copy\n" * pad + SHOP_MAIN)
    return pkg / "main.py"


def make_venv(where: Path) -> tuple[Path, Path]:
    """A bare venv whose site-packages also reads this one's (a .pth line), as an app's env would."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=60)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    (site / "zz_deps.pth").write_text(SITE_PACKAGES + "\n")
    return python, site


@contextmanager
def uvicorn(
    python: Path | str, app_spec: str, cwd: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[int]:
    """`python -m uvicorn APP` in `cwd`, as a developer starts it; yields the server's pid."""
    port = free_port()
    argv = [str(python), "-m", "uvicorn", app_spec, "--port", str(port), "--log-level", "warning", *extra]
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with run_server(argv, port, cwd=cwd, env={**clean, **(env or {})}, name="uvicorn") as running:
        yield running.pid


def test_app_module_reads_module_attribute() -> None:
    assert app_module("shop.main:app") == "shop.main"
    assert app_module("main:create_app()") == "main"
    assert app_module("--port") is None
    assert app_module("http://127.0.0.1:8000") is None


def test_a_copy_in_the_servers_directory_wins_over_pythonpath(tmp_path: Path) -> None:
    here, there = make_shop(tmp_path / "clone"), make_shop(tmp_path / "elsewhere", pad=3)
    with uvicorn(
        sys.executable, "shop.main:app", tmp_path / "clone", env={"PYTHONPATH": str(there.parents[1])}
    ) as pid:
        found = find_app_files(pid)
    assert found is not None
    assert found.module_file == str(here)
    assert is_user_file(str(here), found)
    assert found.relative(str(here)) == "shop/main.py"


def test_app_dir_wins_over_the_servers_directory(tmp_path: Path) -> None:
    make_shop(tmp_path / "cwd")
    chosen = make_shop(tmp_path / "src", pad=2)
    with uvicorn(sys.executable, "shop.main:app", tmp_path / "cwd", "--app-dir", "../src") as pid:
        found = find_app_files(pid)
    assert found is not None
    assert found.module_file == str(chosen)


@pytest.mark.parametrize("how", ["installed", "editable"])
def test_an_app_installed_in_the_servers_venv_is_the_apps_code(how: str, tmp_path: Path) -> None:
    python, site = make_venv(tmp_path / "venv")
    if how == "installed":
        main = make_shop(site)
    else:
        main = make_shop(tmp_path / "project" / "src")
        (site / "__editable__.shop.pth").write_text(str(main.parents[1]) + "\n")
    (tmp_path / "run").mkdir()
    with uvicorn(python, "shop.main:app", tmp_path / "run") as pid:
        found = find_app_files(pid)
    assert found is not None
    assert found.module_file == str(main)
    assert is_user_file(str(main), found)
    assert found.relative(str(main)) == "shop/main.py"
    # Libraries beside it stay libraries.
    assert not is_user_file(str(Path(SITE_PACKAGES) / "fastapi" / "routing.py"), found)


def test_the_app_named_by_the_caller_is_resolved_as_the_server_would(tmp_path: Path) -> None:
    here = make_shop(tmp_path / "clone")
    with uvicorn(sys.executable, "shop.main:app", tmp_path / "clone") as pid:
        found = find_app_files(pid, "shop.main:app")
    assert found is not None
    assert found.module_file == str(here)


def test_an_unreadable_server_gives_nothing_not_a_guess() -> None:
    assert find_app_files(2**22 + 12345) is None
    assert AppFiles.at("/srv/app").relative("/srv/app/x/y.py") == "x/y.py"


# ---------------------------------------------------------------------------------------
# End to end: the demo from a clone, tune on an installed app


def _copy_of_the_package(where: Path, pad: int) -> int:
    """fastapi_tune copied under `where` (a clone), its sample app shifted by `pad` lines; the
    copy's get_inventory sleep line."""
    copy = where / "fastapi_tune"
    shutil.copytree(REPO / "fastapi_tune", copy, ignore=shutil.ignore_patterns("__pycache__"))
    sample = copy / "sample_app.py"
    text = "# this copy is the clone's\n" * pad + sample.read_text()
    sample.write_text(text)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "def get_inventory" in line)
    return next(i for i, line in enumerate(lines[start:], start=start + 1) if "time.sleep" in line)


@pytest.mark.slow
def test_demo_from_a_clone_names_the_clones_sample_app_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `pip install '.[demo]' && fastapi-tune demo` from the clone: the server imports
    the clone's sample app (its directory comes first), and the verdict cites that file's line."""
    line = _copy_of_the_package(tmp_path, pad=7)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["demo", "--dir", str(tmp_path / "out"), "--json", "--max-seconds", "30"]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)["report"]
    inventory = next(e for e in report["endpoints"] if e["path"] == "/inventory")
    assert inventory["profile"] is not None, inventory.get("profile_unavailable")
    top = inventory["profile"]["hotspots"][0]
    assert (top["file"], top["line"], top["function"], top["call"]) == (
        "fastapi_tune/sample_app.py",
        line,
        "get_inventory",
        "time.sleep",
    ), inventory["profile"]
    assert "sample_app.py" in inventory["verdict"]["summary"]


@pytest.mark.slow
def test_tune_names_the_line_of_an_app_installed_in_its_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python, site = make_venv(tmp_path / "venv")
    main = make_shop(site, pad=4)
    line = main.read_text().splitlines().index("    time.sleep(0.02)  # blocks the event loop") + 1
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    argv = [
        "tune", "shop.main:app", "--python", str(python), "-e", "GET /block", "--max-seconds", "15",
        "--yes", "--json", "--out", str(tmp_path / "gunicorn.conf.py"), "--report", str(tmp_path / "p.json"),
    ]  # fmt: skip
    result = CliRunner().invoke(
        app,
        argv,
        env={"FASTAPI_TUNE_CPUS": "", "FASTAPI_TUNE_MEMORY": ""},
    )
    assert result.exit_code == 0, result.stderr
    block = json.loads((tmp_path / "p.json").read_text())["endpoints"][0]
    assert block["profile"] is not None, block.get("profile_unavailable")
    top = block["profile"]["hotspots"][0]
    assert (top["file"], top["line"], top["function"]) == ("shop/main.py", line, "block"), block["profile"]
