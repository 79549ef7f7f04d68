"""Deployment profiles: the policy (how many workers per CPU, headroom, timeouts) as YAML files.

Numbers that are a matter of policy live in profiles/*.yaml, where users can read and copy
them; plan.py only combines them with measurements. Each file is checked once, here: unknown
keys, wrong types and out-of-range values stop with one message naming the file and the key.
"""

from __future__ import annotations

import importlib.resources
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import yaml

from fastapi_tune.core.errors import BadInputError

# pyproject.toml ships profiles/*.yaml as this package's data.
PROFILES_PACKAGE: Final = "fastapi_tune.profile_data"
# In a source checkout (and an editable install) the YAML files sit next to the package.
_SOURCE_DIR: Final = Path(__file__).resolve().parents[2] / "profiles"
DEFAULT_PROFILE: Final = "vm"

WORKER_CLASSES: Final = ("uvicorn-worker", "asgi")
# The shipped profiles use no aliases and are ~2 KB; these leave room for a hand-written one.
MAX_ALIASES: Final = 50
MAX_PROFILE_CHARS: Final = 64 * 1024
PRELOAD_POLICIES: Final = ("allow", "never")


@dataclass(frozen=True)
class WorkersPolicy:
    per_cpu: float  # processes per effective CPU for CPU-limited routes
    min: int
    max: int
    fixed: int | None  # when set, the count regardless of measurements (kubernetes: 1)


@dataclass(frozen=True)
class TimeoutPolicy:
    factor: float  # the slowest measured request times this
    min: int
    max: int


@dataclass(frozen=True)
class Profile:
    """One deployment profile, checked and typed."""

    name: str
    source: str  # the file it came from, for messages
    description: str
    bind: str
    workers: WorkersPolicy
    memory_headroom: float  # fraction of effective memory left unused by workers
    assumed_worker_rss_mib: int  # when no report measured a worker's RSS
    timeout: TimeoutPolicy
    graceful_timeout: int
    stop_grace_period: int | None  # when the orchestrator sends SIGKILL after SIGTERM
    keepalive: int
    behind_load_balancer: bool
    lb_idle_timeout: int | None
    max_requests: int
    max_requests_jitter: int
    access_log: str | None  # "-" is stdout; None disables the access log
    backlog: int
    worker_class: str  # one of WORKER_CLASSES
    preload: str  # one of PRELOAD_POLICIES


# ---------------------------------------------------------------------------------------
# Checking


_SHORT: Final = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


class _Checker:
    """Typed reads from a YAML mapping; every failure names the file and the dotted key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: object) -> BadInputError:
        # reprlib: a value may be huge (or a shared structure a billion items deep); show its start.
        return BadInputError(f"{self.source}: {key}: expected {expected}, got {_SHORT.repr(got)}")

    def mapping(self, raw: object, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, "a mapping of " + ", ".join(allowed), raw)
        for k in raw:
            if k not in allowed:
                where = f"{key}.{k}" if key != "top level" else str(k)
                raise BadInputError(
                    f"{self.source}: {where}: unknown key (expected one of: {', '.join(allowed)})"
                )
        for k in allowed:
            if k not in raw:
                where = f"{key}.{k}" if key != "top level" else k
                raise BadInputError(f"{self.source}: {where}: missing key")
        return raw

    def int_(self, value: object, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, f"an integer from {lo} to {hi}", value)
        return value

    def opt_int(self, value: object, key: str, lo: int, hi: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, f"null or an integer from {lo} to {hi}", value)
        return value

    def float_(self, value: object, key: str, lo: float, hi: float) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not lo <= value <= hi
        ):
            raise self.fail(key, f"a number from {lo:g} to {hi:g}", value)
        return float(value)

    def bool_(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def str_(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value)
        return value

    def choice(self, value: object, key: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, "one of " + ", ".join(choices), value)
        assert isinstance(value, str)
        return value


_TOP_KEYS: Final = (
    "description",
    "bind",
    "workers",
    "memory_headroom",
    "assumed_worker_rss_mib",
    "timeout",
    "graceful_timeout",
    "stop_grace_period",
    "keepalive",
    "behind_load_balancer",
    "lb_idle_timeout",
    "max_requests",
    "max_requests_jitter",
    "access_log",
    "backlog",
    "worker_class",
    "preload",
)
_WORKER_KEYS: Final = ("per_cpu", "min", "max", "fixed")
_TIMEOUT_KEYS: Final = ("factor", "min", "max")
_DAY: Final = 86_400


def _check_bind(c: _Checker, value: object) -> str:
    text = c.str_(value, "bind")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise c.fail("bind", "HOST:PORT such as 0.0.0.0:8000", value)
    return text


def profile_from_mapping(raw: object, name: str, source: str) -> Profile:
    """Check a parsed YAML document and turn it into a Profile."""
    c = _Checker(source)
    d = c.mapping(raw, "top level", _TOP_KEYS)
    w = c.mapping(d["workers"], "workers", _WORKER_KEYS)
    t = c.mapping(d["timeout"], "timeout", _TIMEOUT_KEYS)
    workers = WorkersPolicy(
        per_cpu=c.float_(w["per_cpu"], "workers.per_cpu", 0.1, 8.0),
        min=c.int_(w["min"], "workers.min", 1, 256),
        max=c.int_(w["max"], "workers.max", 1, 256),
        fixed=c.opt_int(w["fixed"], "workers.fixed", 1, 256),
    )
    if workers.min > workers.max:
        raise c.fail("workers.min", f"at most workers.max ({workers.max})", workers.min)
    timeout = TimeoutPolicy(
        factor=c.float_(t["factor"], "timeout.factor", 1.0, 100.0),
        min=c.int_(t["min"], "timeout.min", 1, _DAY),
        max=c.int_(t["max"], "timeout.max", 1, _DAY),
    )
    if timeout.min > timeout.max:
        raise c.fail("timeout.min", f"at most timeout.max ({timeout.max})", timeout.min)
    behind_lb = c.bool_(d["behind_load_balancer"], "behind_load_balancer")
    lb_idle = c.opt_int(d["lb_idle_timeout"], "lb_idle_timeout", 1, 3600)
    if behind_lb and lb_idle is None:
        raise c.fail("lb_idle_timeout", "the load balancer's idle timeout in seconds when behind one", None)
    access_log = d["access_log"]
    if access_log is not None:
        access_log = c.str_(access_log, "access_log")
    max_requests = c.int_(d["max_requests"], "max_requests", 0, 10_000_000)
    jitter = c.int_(d["max_requests_jitter"], "max_requests_jitter", 0, 10_000_000)
    if jitter > max_requests:
        raise c.fail("max_requests_jitter", f"at most max_requests ({max_requests})", jitter)
    return Profile(
        name=name,
        source=source,
        description=c.str_(d["description"], "description"),
        bind=_check_bind(c, d["bind"]),
        workers=workers,
        memory_headroom=c.float_(d["memory_headroom"], "memory_headroom", 0.0, 0.9),
        assumed_worker_rss_mib=c.int_(d["assumed_worker_rss_mib"], "assumed_worker_rss_mib", 1, 1 << 20),
        timeout=timeout,
        graceful_timeout=c.int_(d["graceful_timeout"], "graceful_timeout", 1, _DAY),
        stop_grace_period=c.opt_int(d["stop_grace_period"], "stop_grace_period", 1, _DAY),
        keepalive=c.int_(d["keepalive"], "keepalive", 1, 3600),
        behind_load_balancer=behind_lb,
        lb_idle_timeout=lb_idle,
        max_requests=max_requests,
        max_requests_jitter=jitter,
        access_log=access_log,
        backlog=c.int_(d["backlog"], "backlog", 1, 1 << 20),
        worker_class=c.choice(d["worker_class"], "worker_class", WORKER_CLASSES),
        preload=c.choice(d["preload"], "preload", PRELOAD_POLICIES),
    )


# ---------------------------------------------------------------------------------------
# Finding and reading


def _packaged_dir() -> Traversable:
    """Where the shipped *.yaml files are: the package data, or ../profiles in a checkout."""
    try:
        packaged: Traversable | None = importlib.resources.files(PROFILES_PACKAGE)
    except (ModuleNotFoundError, TypeError):
        # Not installed (a bare checkout on sys.path): read ../profiles instead.
        packaged = None
    if packaged is not None and any(p.name.endswith(".yaml") for p in packaged.iterdir()):
        return packaged
    return _SOURCE_DIR


def _is_path(name_or_path: str) -> bool:
    return "/" in name_or_path or "\\" in name_or_path or name_or_path.endswith((".yaml", ".yml"))


class _BoundedLoader(yaml.SafeLoader):
    """safe_load that refuses more than MAX_ALIASES aliases (a billion-laughs bomb expands
    exponentially when anything walks the result; a profile needs none)."""

    aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name); a profile needs none")
        return super().compose_node(parent, index)


def _parse(text: str, source: str) -> object:
    if len(text) > MAX_PROFILE_CHARS:
        raise BadInputError(f"{source}: more than 64 KiB; a profile is a page of YAML")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader with aliases bounded
    except yaml.YAMLError as e:
        # The message only: PyYAML's own text can quote the document around the fault.
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInputError(f"{source}: not valid YAML{at}: {str(problem)[:200]}") from None
    except RecursionError:
        raise BadInputError(f"{source}: nested too deeply to be a profile") from None


def load_profile(name_or_path: str) -> Profile:
    """A packaged profile by name (e.g. 'kubernetes'), or a YAML file by path."""
    if _is_path(name_or_path):
        path = Path(name_or_path)
        try:
            with path.open(encoding="utf-8") as f:
                text = f.read(MAX_PROFILE_CHARS + 1)
        except OSError as e:
            raise BadInputError(f"{path}: cannot read profile: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise BadInputError(f"{path}: not UTF-8 text; a profile is YAML") from None
        return profile_from_mapping(_parse(text, str(path)), path.stem, str(path))
    resource = _packaged_dir() / f"{name_or_path}.yaml"
    if not resource.is_file():
        known = ", ".join(n for n, _ in list_profiles())
        raise BadInputError(f"profile {name_or_path!r}: no such profile (known: {known}; or give a path)")
    source = f"profiles/{name_or_path}.yaml"
    return profile_from_mapping(_parse(resource.read_text(encoding="utf-8"), source), name_or_path, source)


def list_profiles() -> list[tuple[str, str]]:
    """(name, description) of every packaged profile, sorted by name."""
    out: list[tuple[str, str]] = []
    for item in sorted(_packaged_dir().iterdir(), key=lambda p: p.name):
        if item.name.endswith(".yaml"):
            name = item.name.removesuffix(".yaml")
            out.append((name, load_profile(name).description))
    return out
