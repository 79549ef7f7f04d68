"""Stack attribution on real py-spy output (tests/data/stacks/, recorded by its capture.py), and how
sampling fails: every failure is an Unavailable value with a way out, never an exception."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import psutil
import pytest

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.measure import stacks
from fastapi_tune.measure.appfiles import AppFiles, AppRoot
from fastapi_tune.measure.stack_attribution import (
    RouteProfile,
    ThreadKind,
    _call_in_source,
    attribute,
    describe,
    profile_from_json,
    profile_to_json,
)
from fastapi_tune.measure.stacks import (
    StackSample,
    Unavailable,
    WorkerStacks,
    is_user_file,
    parse_raw,
    sample_workers,
)

DATA = Path(__file__).resolve().parent / "data" / "stacks"


def load(name: str, *, with_clocks: bool = True) -> tuple[StackSample, AppFiles]:
    """A recorded sample, and the app directory it was recorded with."""
    meta = json.loads((DATA / f"{name}.json").read_text())
    workers = tuple(
        WorkerStacks(
            pid=w["pid"],
            stacks=parse_raw((DATA / w["raw"]).read_text()),
            thread_active_s=MappingProxyType(w["thread_active_s"] if with_clocks else {}),
        )
        for w in meta["workers"]
    )
    sample = StackSample(meta["seconds"], meta["rate_hz"], workers, MappingProxyType(meta["sources"]))
    return sample, AppFiles.at(meta["app_dir"])


def profile(name: str, *, with_clocks: bool = True) -> RouteProfile:
    sample, app_dir = load(name, with_clocks=with_clocks)
    return attribute(sample, app_dir)


# ---------------------------------------------------------------------------------------
# Parsing


def test_raw_output_parses_into_threads_frames_and_counts() -> None:
    text = next(DATA.glob("uvicorn-threadpool-*.txt")).read_text()
    parsed = parse_raw(text)
    assert len(parsed) == len(text.splitlines())
    main = [s for s in parsed if s.thread_name == "MainThread"]
    workers = {s.tid for s in parsed if s.thread_name == "AnyIO worker thread"}
    assert main
    assert len(workers) == 40
    assert all(s.tid.isdigit() and s.count > 0 for s in parsed)
    # Outermost first: every thread starts in runpy or threading, ends in the running frame.
    assert main[0].frames[0].function == "_run_module_as_main"
    assert main[0].frames[0].file == "<frozen runpy>"
    route = next(s for s in parsed if s.frames[-1].function == "threadpool_route")
    assert route.frames[-1].file.endswith("tests/apps/stacks_app.py")
    assert route.frames[-1].line > 0


@pytest.mark.parametrize(
    ("line", "tid", "name", "last", "count"),
    [
        pytest.param(
            "thread (12): MainThread;f (/a/b.py:3) 7", "12", "MainThread", ("f", "/a/b.py", 3), 7, id="full"
        ),
        pytest.param("thread (0x7f3a): ;g (/a/b.py) 2", "0x7f3a", "", ("g", "/a/b.py", 0), 2, id="no-line"),
        pytest.param("thread (5);h (x (y).py:9) 1", "5", "", ("h", "x (y).py", 9), 1, id="no-name-parens"),
        pytest.param("f (/a.py:1);g (/b.py:2) 4", "", "", ("g", "/b.py", 2), 4, id="no-threads-flag"),
    ],
)
def test_raw_line_variants(line: str, tid: str, name: str, last: tuple[str, str, int], count: int) -> None:
    (stack,) = parse_raw(line + "\n")
    assert (stack.tid, stack.thread_name, stack.count) == (tid, name, count)
    f = stack.frames[-1]
    assert (f.function, f.file, f.line) == last


def test_junk_lines_are_skipped() -> None:
    assert parse_raw("\npy-spy> Sampling process\nthread (1): MainThread;f (/a.py:1) x\n") == ()


SITE = "/v/lib/python3.11/site-packages"
# The demo run from a clone: the server's directory first, the installed copy never imported.
CLONE = AppFiles((AppRoot("/src/clone", "/src/clone"),))
# The demo run elsewhere: the sample app's package as the server found it in site-packages.
INSTALLED = AppFiles((AppRoot(f"{SITE}/fastapi_tune", SITE), AppRoot("/home/u", "/home/u")))


@pytest.mark.parametrize(
    ("file", "app_files", "expected"),
    [
        pytest.param("/srv/app/main.py", AppFiles.at("/srv/app"), True, id="under-app-dir"),
        pytest.param("/srv/other/main.py", AppFiles.at("/srv/app"), False, id="outside-app-dir"),
        pytest.param("/srv/application.py", AppFiles.at("/srv/app"), False, id="same-prefix-not-under"),
        pytest.param(
            "/srv/app/.venv/lib/python3.11/site-packages/x.py",
            AppFiles.at("/srv/app"),
            False,
            id="venv-in-app",
        ),
        pytest.param("/srv/app/.venv/bin/uvicorn", AppFiles.at("/srv/app"), False, id="console-script"),
        pytest.param("/src/clone/fastapi_tune/sample_app.py", CLONE, True, id="clone-copy"),
        pytest.param(f"{SITE}/fastapi_tune/sample_app.py", INSTALLED, True, id="installed-app-package"),
        pytest.param(f"{SITE}/fastapi/routing.py", INSTALLED, False, id="installed-library"),
        pytest.param("/home/u/helpers.py", INSTALLED, True, id="server-cwd"),
        pytest.param("/srv/app/main.py", None, True, id="no-app-dir"),
        pytest.param("/usr/lib/python3.11/socket.py", None, False, id="stdlib"),
        pytest.param(f"{SITE}/fastapi/routing.py", None, False, id="site-packages"),
        pytest.param("/usr/lib/python3/dist-packages/yaml/x.py", None, False, id="dist-packages"),
        pytest.param("<frozen runpy>", None, False, id="frozen"),
    ],
)
def test_user_code(file: str, app_files: AppFiles | None, expected: bool) -> None:
    assert is_user_file(file, app_files) is expected


@pytest.mark.parametrize(
    ("file", "app_files", "shown"),
    [
        pytest.param(
            "/src/clone/fastapi_tune/sample_app.py", CLONE, "fastapi_tune/sample_app.py", id="clone"
        ),
        pytest.param(
            f"{SITE}/fastapi_tune/sample_app.py", INSTALLED, "fastapi_tune/sample_app.py", id="installed"
        ),
        pytest.param("/elsewhere/x.py", INSTALLED, "/elsewhere/x.py", id="outside"),
    ],
)
def test_app_files_are_named_from_where_they_were_imported(
    file: str, app_files: AppFiles, shown: str
) -> None:
    assert app_files.relative(file) == shown


@pytest.mark.parametrize(
    ("text", "call"),
    [
        pytest.param("time.sleep(0.03)  # blocks the event loop", "time.sleep", id="comment"),
        pytest.param("digest = hashlib.sha256(digest * 64).digest()", "hashlib.sha256", id="chained"),
        pytest.param('return {"digest": hash_rounds(n)}', "hash_rounds", id="return"),
        pytest.param("if requests.get(url).ok:", "requests.get", id="keyword-first"),
        pytest.param("total += 1", None, id="no-call"),
    ],
)
def test_call_named_from_the_source_line(text: str, call: str | None) -> None:
    assert _call_in_source(text) == call


# ---------------------------------------------------------------------------------------
# Attribution on recorded stacks


@pytest.mark.parametrize("name", ["uvicorn-loop", "uvloop-loop", "gunicorn-loop"])
def test_loop_blocking_names_its_line_and_time_sleep(name: str) -> None:
    p = profile(name)
    assert p.loop.app_blocked is not None
    assert p.loop.app_blocked > 0.8
    top = p.hotspots[0]
    assert (top.thread, top.file, top.line, top.function, top.call) == (
        ThreadKind.EVENT_LOOP, "stacks_app.py", 32, "loop_route", "time.sleep",
    )  # fmt: skip
    assert describe(p).startswith("event loop blocked ")
    assert "stacks_app.py:32 loop_route -> time.sleep" in describe(p)


def test_loop_blocking_without_thread_clocks_says_app_code_not_blocked() -> None:
    p = profile("uvicorn-loop", with_clocks=False)
    assert p.loop.app_blocked is None
    assert p.loop.app_running is None
    assert describe(p).startswith("event loop in app code ")


def test_cpu_names_the_hot_function_and_is_not_blocked() -> None:
    p = profile("uvicorn-cpu")
    assert p.loop.app > 0.5
    assert p.loop.app_blocked is not None
    assert p.loop.app_blocked < 0.1
    top = p.hotspots[0]
    assert (top.function, top.line, top.call) == ("hash_rounds", 21, "hashlib.sha256")
    assert describe(p).startswith("event loop computing ")


@pytest.mark.parametrize("name", ["uvicorn-threadpool", "gunicorn-threadpool"])
def test_threadpool_names_the_sleep_line_in_anyio_threads(name: str) -> None:
    p = profile(name)
    assert p.threadpool.busy_threads > 20
    assert p.threadpool.threads_seen == 40
    assert p.loop.app == 0.0
    top = p.hotspots[0]
    assert (top.thread, top.line, top.function, top.call) == (
        ThreadKind.THREADPOOL, 38, "threadpool_route", "time.sleep",
    )  # fmt: skip
    assert describe(p).split(" ", 1)[1].startswith("pool threads busy per worker (40 started)")


@pytest.mark.parametrize("name", ["uvicorn-io", "uvloop-io"])
def test_async_io_shows_the_loop_mostly_idle(name: str) -> None:
    p = profile(name)
    assert p.loop.idle > 0.7
    assert p.hotspots == ()
    assert p.threadpool.busy_threads == 0
    assert describe(p).startswith("event loop idle ")


def test_sqlalchemy_pool_wait_is_told_from_app_work() -> None:
    p = profile("uvicorn-pool-wait")
    assert p.threadpool.pool_wait_threads > p.threadpool.busy_threads / 2
    top = p.hotspots[0]
    assert top.function == "pooled_route"
    assert top.call == "sqlalchemy.pool.impl.QueuePool._do_get"
    assert "waiting for a database connection" in describe(p)


def test_two_workers_are_summed() -> None:
    one_worker = [load("gunicorn-loop")[0].workers[0]]
    sample, app_dir = load("gunicorn-loop")
    both = attribute(sample, app_dir)
    single = attribute(
        StackSample(sample.seconds, sample.rate_hz, tuple(one_worker), sample.sources), app_dir
    )
    assert both.workers == 2
    assert single.workers == 1
    assert both.loop.samples > single.loop.samples


# ---------------------------------------------------------------------------------------
# JSON


@pytest.mark.parametrize("name", ["uvicorn-loop", "uvicorn-pool-wait", "uvicorn-io"])
def test_profile_json_round_trip(name: str) -> None:
    p = profile(name)
    assert profile_from_json(json.loads(json.dumps(profile_to_json(p)))) == p


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        pytest.param(lambda d: d.pop("loop"), "loop: missing", id="missing-section"),
        pytest.param(lambda d: d["loop"].update(idle="high"), "loop.idle: expected", id="string-share"),
        pytest.param(
            lambda d: d["threadpool"].update(threads_seen=True), "threadpool.threads_seen", id="bool"
        ),
        pytest.param(lambda d: d["hotspots"][0].update(thread="gpu"), "hotspots[0].thread", id="bad-kind"),
        pytest.param(lambda d: d["hotspots"][0].pop("line"), "hotspots[0].line: missing", id="missing-line"),
    ],
)
def test_bad_profile_json_names_the_key(mutate: object, named: str) -> None:
    data = profile_to_json(profile("uvicorn-loop"))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(BadInputError, match=named.replace("[", r"\[").replace("]", r"\]")):
        profile_from_json(data)


# ---------------------------------------------------------------------------------------
# Failing cleanly


def _no_py_spy_children() -> bool:
    return not any("py-spy" in " ".join(c.cmdline()) for c in psutil.Process().children(recursive=True))


def test_missing_py_spy_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    # What differs per machine: whether py-spy is installed (beside the interpreter or on PATH).
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    result = sample_workers([1], 0.1, 50, None)
    assert isinstance(result, Unavailable)
    assert "not installed" in result.reason
    assert "fastapi-tune[profile]" in result.how_to_enable


def test_a_gone_process_is_unavailable() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    result = sample_workers([gone.pid], 0.5, 50, None)
    assert isinstance(result, Unavailable)
    assert f"process {gone.pid} is gone" in result.reason
    assert _no_py_spy_children()


def test_a_process_that_is_not_python_is_unavailable() -> None:
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            result = sample_workers([other.pid], 0.5, 50, None)
        finally:
            other.kill()
    assert isinstance(result, Unavailable)
    assert "py-spy failed" in result.reason
    assert _no_py_spy_children()


@pytest.mark.parametrize(
    ("stderr", "says", "how"),
    [
        # py-spy 0.4.3's own words, run as `nobody` against a root process.
        pytest.param(
            "Permission Denied: Try running again with elevated permissions by going "
            "'sudo env \"PATH=$PATH\" !!'",
            "not allowed", "SYS_PTRACE", id="permission",
        ),
        pytest.param(
            "Error: Failed to get process executable name. Check that the process is running.",
            "is gone", "while the server is running", id="gone",
        ),
        pytest.param(
            "Error: Failed to find python version from target process",
            "py-spy failed", "py-spy dump", id="other",
        ),
    ],
)  # fmt: skip
def test_py_spy_errors_become_reasons(stderr: str, says: str, how: str) -> None:
    result = stacks._failure(1, stderr)
    assert says in result.reason
    assert how in result.how_to_enable


def test_an_app_installed_in_site_packages_is_still_the_apps_own_code() -> None:
    installed = Path("/venv/lib/python3.11/site-packages/shop")
    assert is_user_file("/venv/lib/python3.11/site-packages/shop/main.py", AppFiles.at(installed))
    assert not is_user_file("/venv/lib/python3.11/site-packages/fastapi/routing.py", AppFiles.at(installed))
    assert not is_user_file("/venv/lib/python3.11/site-packages/fastapi/routing.py", AppFiles.at("/src/shop"))
