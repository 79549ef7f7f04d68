"""Where the app's own files are, as the server process found them, not where they ought to be.

A stack frame names a file; whether that file is "the app" decides which line a verdict cites.
Assuming a directory breaks as soon as the server imports from somewhere else: `python -m
uvicorn`, the `uvicorn` and `gunicorn` scripts all put their working directory first on
`sys.path`, so a server started in a clone of a project that is also installed imports the
clone's files (FIELD-NOTES, "Where the app's files really are"); an app installed as a package
lives in site-packages; an editable install points somewhere else again.

So the server is asked: its working directory (/proc), and its `sys.path` and the app module's
file as its own interpreter resolves them, with its own environment, in its own directory
(`find_spec`, which runs no app code). The module comes from the caller (demo, tune) or from
the server's command line (`uvicorn main:app`). Deciding from these (`AppFiles.root_of`,
`stacks.is_user_file`) is pure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["AppFiles", "AppRoot", "app_module", "find_app_files", "is_library_path"]

# stdlib, site-packages and dist-packages: code the app did not write.
_LIBRARY_RE: Final = re.compile(
    r"[/\\](?:site|dist)-packages(?:[/\\]|$)|[/\\]lib(?:64)?[/\\]python\d+\.\d+(?:[/\\]|$)"
)
# `main:app`, `app.main:create_app()`: the APP argument of uvicorn, gunicorn, granian, hypercorn.
_APP_SPEC_RE: Final = re.compile(
    r"^(?P<module>[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*):[A-Za-z_][\w.]*(?:\(.*\))?$"
)
# Flags that add a directory to the server's sys.path before it imports the app.
_PATH_FLAGS: Final = ("--app-dir", "--pythonpath")
# Asking the server's interpreter costs one Python start (~50 ms; seconds on a loaded machine).
_RESOLVE_TIMEOUT_S: Final = 20.0

# Run by the server's own Python, in its directory, with its environment. find_spec on a top-level
# name asks the import system (editable-install finders included) without executing the package;
# submodules are looked up in the package's own search locations, again without importing.
_RESOLVER: Final = r"""
import importlib.machinery, importlib.util, json, os, sys
module, extra = sys.argv[1], sys.argv[2:]
sys.path[0:0] = extra
out = {"path": [os.path.abspath(p or os.curdir) for p in sys.path], "package": [], "origin": None}
top, _, rest = module.partition(".")
try:
    spec = importlib.util.find_spec(top) if top else None
except (ImportError, ValueError):
    spec = None
if spec is not None:
    out["package"] = list(spec.submodule_search_locations or [])
    for part in rest.split(".") if rest else []:
        places = spec.submodule_search_locations if spec is not None else None
        spec = importlib.machinery.PathFinder.find_spec(spec.name + "." + part, places) if places else None
    if spec is not None and spec.origin not in (None, "built-in", "frozen"):
        out["origin"] = os.path.abspath(spec.origin)
print(json.dumps(out))
"""


def is_library_path(path: str) -> bool:
    """stdlib, site-packages or dist-packages: installed code, not written by the app's authors."""
    return _LIBRARY_RE.search(path) is not None


@dataclass(frozen=True)
class AppRoot:
    """A directory (or one file) holding the app's code, and what its files are named relative to."""

    path: str
    base: str  # the sys.path entry its modules were imported from: names read `pkg/module.py`


@dataclass(frozen=True)
class AppFiles:
    """The app's code as the server sees it."""

    roots: tuple[AppRoot, ...]
    module_file: str | None = None  # the app module's file as the server resolves it

    @classmethod
    def at(cls, directory: Path | str) -> AppFiles:
        """Everything under one directory (a test's app folder, a caller that knows)."""
        d = str(directory)
        return cls((AppRoot(d, d),))

    def root_of(self, file: str) -> AppRoot | None:
        """The most specific root holding `file` (paths compared as the server wrote them)."""
        best: AppRoot | None = None
        for root in self.roots:
            if _within(file, root.path) and (best is None or len(root.path) > len(best.path)):
                best = root
        return best

    def relative(self, file: str) -> str:
        """`file` as a reader knows it: relative to the sys.path entry it was imported from."""
        root = self.root_of(file)
        if root is None or not _within(file, root.base) or file == root.base:
            return file
        return Path(file).relative_to(root.base).as_posix()


def _within(file: str, root: str) -> bool:
    root = root.rstrip("/\\") or "/"
    return file == root or file.startswith(root if root.endswith(("/", "\\")) else root + os.sep)


def app_module(app: str) -> str | None:
    """`pkg.main` from `pkg.main:app`; None when `app` is not MODULE:ATTRIBUTE."""
    m = _APP_SPEC_RE.match(app)
    return m["module"] if m else None


def _read_proc(pid: int) -> tuple[list[str], str, dict[str, str]] | None:
    """The server's command line, working directory and environment (None: not ours to read)."""
    proc = Path(f"/proc/{pid}")
    try:
        argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        cwd = os.readlink(proc / "cwd")
    except OSError:
        return None
    env: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for item in (proc / "environ").read_bytes().split(b"\0"):
            name, sep, value = item.decode(errors="replace").partition("=")
            if sep and name:
                env[name] = value
    return argv, cwd, env


def _from_cmdline(argv: list[str], cwd: str) -> tuple[str | None, list[str], str | None]:
    """(the app module, directories the server adds to sys.path, a `fastapi run FILE` path)."""
    module: str | None = None
    extra: list[str] = []
    script: str | None = None
    for i, arg in enumerate(argv[1:], start=1):
        flag, eq, value = arg.partition("=")
        if flag in _PATH_FLAGS:
            given = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            extra += [os.path.join(cwd, p) for p in given.split(",") if p]
        elif module is None and (found := app_module(arg)) is not None:
            module = found
        elif script is None and arg.endswith(".py") and i > 1 and "fastapi" in " ".join(argv[:i]):
            script = os.path.join(cwd, arg)
    return module, extra, script


def _interpreter(argv: list[str], cwd: str, env: dict[str, str]) -> str | None:
    """The server's Python as it was started (a venv's bin/python, not the binary it links to)."""
    exe = argv[0] if argv else ""
    if "python" not in Path(exe).name:
        return None
    if os.sep in exe:
        return os.path.join(cwd, exe)
    return shutil.which(exe, path=env.get("PATH"))


def _resolve(python: str, module: str, extra: list[str], cwd: str, env: dict[str, str]) -> dict[str, object]:
    """Ask the server's Python where `module` and its sys.path are; {} when it cannot say."""
    try:
        done = subprocess.run(
            [python, "-c", _RESOLVER, module, *extra],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_RESOLVE_TIMEOUT_S,
            check=False,
        )
        data = json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _module_roots(resolved: dict[str, object]) -> list[AppRoot]:
    """The app's package (each of its locations), or its lone module file, wherever it was found."""
    origin = resolved.get("origin")
    package = _strings(resolved.get("package"))
    if package:
        return [AppRoot(p, os.path.dirname(p)) for p in package]
    if isinstance(origin, str):
        return [AppRoot(origin, os.path.dirname(origin))]
    return []


def find_app_files(pid: int, app: str | None = None) -> AppFiles | None:
    """The app's files as server `pid` resolves them; None when its /proc cannot be read.

    `app` (MODULE:ATTRIBUTE) names the app when the caller knows it; otherwise it is read from
    the server's command line. Roots: the app's package, the server's directory, and every
    other sys.path entry that is not a library (PYTHONPATH, --app-dir, editable installs).
    """
    seen = _read_proc(pid)
    if seen is None:
        return None
    argv, cwd, env = seen
    module, extra, script = _from_cmdline(argv, cwd)
    module = (app_module(app) if app else None) or module
    python = _interpreter(argv, cwd, env)
    resolved = _resolve(python, module or "", extra, cwd, env or dict(os.environ)) if python else {}
    roots = _module_roots(resolved) if module else []
    if script is not None:
        roots.append(AppRoot(script, os.path.dirname(script)))
    for entry in [cwd, *extra, *_strings(resolved.get("path"))]:
        if os.path.isdir(entry) and not is_library_path(entry) and all(r.path != entry for r in roots):
            roots.append(AppRoot(entry, entry))
    origin = resolved.get("origin")
    return AppFiles(tuple(roots), origin if isinstance(origin, str) else None)
