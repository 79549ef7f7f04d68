"""What sampled stacks say about a route: where the event loop and the thread pool spend their time.

Pure: `attribute(sample, app_files)` reads a `stacks.StackSample` (py-spy's folded stacks plus each
thread's scheduler clock) and returns a `RouteProfile`: the event loop's samples split into idle
(waiting in its selector), app code on a CPU, app code blocked (the loop-blocking signature: the
loop thread's stack inside the app while the thread was neither running nor runnable), and
server/framework code; the AnyIO threads busy in app code or waiting for a database pool
connection; and the app lines that hold them, with the call each line was in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.measure.appfiles import AppFiles
from fastapi_tune.measure.stacks import Frame, StackSample, ThreadStack, WorkerStacks, is_user_file

__all__ = [
    "Hotspot",
    "LoopShares",
    "RouteProfile",
    "ThreadKind",
    "ThreadpoolLoad",
    "attribute",
    "describe",
    "profile_from_json",
    "profile_to_json",
]

TOP_HOTSPOTS: Final = 5  # the issue asks for the top 5 app lines
# describe() names the thread pool when at least this many threads (per worker, on average) were
# busy in app code: below one thread the pool is not what limits the route.
_POOL_CLAUSE_MIN_THREADS: Final = 1.0


class ThreadKind(StrEnum):
    EVENT_LOOP = "event-loop"
    THREADPOOL = "threadpool"


# Frames that mark the thread running the asyncio loop (stdlib; uvloop runs its loop in C, so
# its thread shows the runner's frames with the callbacks directly above them).
_LOOP_RUN: Final = frozenset(
    {"BaseEventLoop.run_forever", "BaseEventLoop.run_until_complete", "Runner.run", "asyncio_run"}
)
_LOOP_MARKS: Final = _LOOP_RUN | {"BaseEventLoop._run_once"}
# Frames of the thread pools that run `def` routes: AnyIO's (Starlette's run_in_threadpool) and
# concurrent.futures' (asyncio.to_thread, run_in_executor).
_POOL_THREAD_FILES: Final = ("anyio/_backends/", "concurrent/futures/thread.py")
_POOL_THREAD_FUNCS: Final = frozenset({"WorkerThread.run", "_worker"})
# Waiting for a database connection from a client-side pool (sync drivers, visible on a thread's
# stack): SQLAlchemy's QueuePool, psycopg_pool, asyncpg's pool driven from a thread.
_DB_POOL_WAITS: Final = (
    ("sqlalchemy/pool/", "_do_get"),
    ("psycopg_pool/", "getconn"),
    ("asyncpg/pool.py", "acquire"),
)


@dataclass(frozen=True)
class LoopShares:
    """Shares of the event loop thread's samples (they add up to 1), those where it had been woken in
    its selector and was waiting for a CPU left out (`samples` counts the rest)."""

    samples: int
    idle: float  # waiting in its selector with nothing to do
    app: float  # inside the app's code
    app_blocked: float | None  # of `app`: the thread was off-CPU there (None: its clock unread)
    framework: float  # server, framework or library code outside the app

    @property
    def app_running(self) -> float | None:
        return None if self.app_blocked is None else self.app - self.app_blocked


@dataclass(frozen=True)
class ThreadpoolLoad:
    """AnyIO / executor threads, per worker on average over the window; idle threads are left out."""

    busy_threads: float  # threads inside app code (running or waiting there)
    pool_wait_threads: float  # threads waiting for a database pool connection
    threads_seen: int  # distinct pool threads of the busiest worker (AnyIO's limit is 40 per loop)


@dataclass(frozen=True)
class Hotspot:
    """An app line that held a thread, and what it was calling."""

    thread: ThreadKind
    file: str  # relative to the sys.path entry the app's file was imported from
    line: int
    function: str
    share: float  # of the loop's samples (event-loop), or of the busy pool threads' samples
    call: str | None  # the call the line was in: `time.sleep`, `hashlib.sha256`, `socket.SocketIO.readinto`


@dataclass(frozen=True)
class RouteProfile:
    workers: int
    seconds: float
    loop: LoopShares
    threadpool: ThreadpoolLoad
    hotspots: tuple[Hotspot, ...]  # by samples, at most TOP_HOTSPOTS


# ---------------------------------------------------------------------------------------
# Classifying one stack.


def _is_loop_thread(stack: ThreadStack) -> bool:
    return any(f.function in _LOOP_MARKS or "uvloop" in f.file for f in stack.frames)


def _is_pool_thread(stack: ThreadStack) -> bool:
    return stack.thread_name.startswith("AnyIO worker") or any(
        f.function in _POOL_THREAD_FUNCS and any(p in f.file for p in _POOL_THREAD_FILES)
        for f in stack.frames
    )


def _loop_idle(stack: ThreadStack) -> bool:
    """Waiting for events: in the selector, or (uvloop) in the C loop with no Python callback on top."""
    if not stack.frames:
        return True
    top = stack.frames[-1]
    selector = top.file.endswith("selectors.py") and top.function.rsplit(".", 1)[-1] in ("select", "poll")
    return selector or top.function in _LOOP_RUN


def _db_pool_frame(stack: ThreadStack) -> Frame | None:
    for f in stack.frames:
        if any(part in f.file and name in f.function for part, name in _DB_POOL_WAITS):
            return f
    return None


def _innermost_user(stack: ThreadStack, app_files: AppFiles | None) -> int | None:
    for i in range(len(stack.frames) - 1, -1, -1):
        if is_user_file(stack.frames[i].file, app_files):
            return i
    return None


# ---------------------------------------------------------------------------------------
# Naming the call a line was in.

_CALL_RE: Final = re.compile(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\s*\(")
_NOT_CALLS: Final = frozenset(
    {"if", "elif", "while", "for", "return", "await", "yield", "not", "and", "or", "in"}
)
# An installed package's module path first: a venv's site-packages sits under lib/pythonX.Y too.
_MODULE_RES: Final = (
    re.compile(r"/(?:site|dist)-packages/(.+?)(?:/__init__)?\.py$"),
    re.compile(r"/lib(?:64)?/python\d+\.\d+/(.+?)(?:/__init__)?\.py$"),
)


def _call_in_source(text: str) -> str | None:
    """The first call written on a line: `time.sleep(0.03)  # x` -> time.sleep. A C function (time.sleep,
    hashlib.sha256, socket.recv) leaves no frame of its own, so the line's text is the only witness."""
    code = text.split("#", 1)[0]
    for m in _CALL_RE.finditer(code):
        if m[1] not in _NOT_CALLS:
            return m[1]
    return None


def _frame_name(f: Frame) -> str:
    """A library frame as module.function: socket.SocketIO.readinto, sqlalchemy.pool.impl.QueuePool.get."""
    path = f.file.replace("\\", "/")
    for pattern in _MODULE_RES:
        m = pattern.search(path)
        if m is not None:
            return f"{m[1].replace('/', '.')}.{f.function}"
    return f.function


def _call_of(stack: ThreadStack, index: int, sources: Mapping[str, str]) -> str | None:
    pool = _db_pool_frame(stack)
    if pool is not None:
        return _frame_name(pool)
    if index + 1 < len(stack.frames):
        return _frame_name(stack.frames[index + 1])  # the library function the app line called
    f = stack.frames[index]
    return _call_in_source(sources.get(f"{f.file}:{f.line}", ""))


def _relative(file: str, app_files: AppFiles | None) -> str:
    return file if app_files is None else app_files.relative(file)


# ---------------------------------------------------------------------------------------
# Counting.


@dataclass
class _Tally:
    loop: int = 0
    idle: int = 0
    app: int = 0
    blocked: float = 0.0
    blocked_known: bool = True
    ticks: int = 0
    pool_busy: int = 0
    pool_wait: int = 0
    threads_seen: int = 0


_Key = tuple[ThreadKind, str, int, str]


def _blocked_samples(
    loop: Sequence[ThreadStack], idle: int, app: int, w: WorkerStacks, seconds: float
) -> float | None:
    """Samples the loop spent off-CPU inside app code: the loop's off-CPU time (from its scheduler
    clock) that its selector wait does not explain. py-spy's raw format drops its own running flag."""
    tids = {s.tid for s in loop}
    if not tids:
        return 0.0  # no loop thread in this worker's samples: nothing of it was blocked
    if seconds <= 0 or not tids <= w.thread_active_s.keys():
        return None
    samples = sum(s.count for s in loop)
    active = min(1.0, sum(w.thread_active_s[t] for t in tids) / (seconds * len(tids)))
    return min(float(app), max(0.0, (1.0 - active) * samples - idle))


def _runnable_in_selector(loop: Sequence[ThreadStack], idle: int, w: WorkerStacks, seconds: float) -> int:
    """Of the loop's selector samples, those where it was woken and waiting for a CPU, not idle.

    A loop woken by new events is runnable while its stack still shows the selector; on a starved
    host it waits there for a CPU, and those samples are not idleness. Its scheduler clock's wait,
    as a share of the window, says how many (at most all the selector samples).
    """
    tids = {s.tid for s in loop}
    if not tids or seconds <= 0 or not tids <= w.thread_wait_s.keys():
        return 0
    waiting = min(1.0, sum(w.thread_wait_s[t] for t in tids) / (seconds * len(tids)))
    return min(idle, round(waiting * sum(s.count for s in loop)))


def _tally_worker(
    w: WorkerStacks,
    seconds: float,
    app_files: AppFiles | None,
    sources: Mapping[str, str],
    spots: dict[_Key, Counter[str | None]],
) -> _Tally:
    t = _Tally()
    loop = [s for s in w.stacks if _is_loop_thread(s)]
    pool = [s for s in w.stacks if not _is_loop_thread(s) and _is_pool_thread(s)]
    for s in loop:
        t.loop += s.count
        user = _innermost_user(s, app_files)
        if _loop_idle(s):
            t.idle += s.count
        elif user is not None:
            t.app += s.count
            _spot(spots, ThreadKind.EVENT_LOOP, s, user, app_files, sources)
    # Woken and waiting for a CPU: neither idle nor working, so those samples are left out of the
    # shares (on a starved host each wake-up waits tens of ms; counted as idle they hide a busy
    # loop, counted as work they invent one).
    runnable = _runnable_in_selector(loop, t.idle, w, seconds)
    t.idle -= runnable
    t.loop -= runnable
    blocked = _blocked_samples(loop, t.idle, t.app, w, seconds)
    t.blocked, t.blocked_known = blocked or 0.0, blocked is not None
    for s in pool:
        user = _innermost_user(s, app_files)
        if _db_pool_frame(s) is not None:
            t.pool_wait += s.count
        elif user is None:
            continue  # an idle pool thread waiting for work
        t.pool_busy += s.count
        _spot(
            spots,
            ThreadKind.THREADPOOL,
            s,
            user if user is not None else len(s.frames) - 1,
            app_files,
            sources,
        )
    # Every tick samples every thread, so the most-sampled thread counts the ticks (the loop thread
    # can miss one when a --nonblocking read tears).
    per_thread = Counter[str]()
    for s in w.stacks:
        per_thread[s.tid] += s.count
    t.ticks = max(per_thread.values(), default=0)
    t.threads_seen = len({s.tid for s in pool})
    return t


def _spot(
    spots: dict[_Key, Counter[str | None]],
    kind: ThreadKind,
    stack: ThreadStack,
    index: int,
    app_files: AppFiles | None,
    sources: Mapping[str, str],
) -> None:
    f = stack.frames[index]
    key = (kind, _relative(f.file, app_files), f.line, f.function)
    spots.setdefault(key, Counter())[_call_of(stack, index, sources)] += stack.count


def _hotspots(spots: Mapping[_Key, Counter[str | None]], loop: int, pool: int) -> tuple[Hotspot, ...]:
    ranked = sorted(spots.items(), key=lambda kv: -kv[1].total())
    out: list[Hotspot] = []
    for (kind, file, line, function), calls in ranked[:TOP_HOTSPOTS]:
        total = loop if kind is ThreadKind.EVENT_LOOP else pool
        share = calls.total() / total if total else 0.0
        out.append(Hotspot(kind, file, line, function, round(share, 4), calls.most_common(1)[0][0]))
    return tuple(out)


def attribute(sample: StackSample, app_files: AppFiles | None) -> RouteProfile:
    """Where the loop and the thread pool spent the window, and the app lines that held them."""
    spots: dict[_Key, Counter[str | None]] = {}
    tallies = [_tally_worker(w, sample.seconds, app_files, sample.sources, spots) for w in sample.workers]
    loop = sum(t.loop for t in tallies)
    idle, app = sum(t.idle for t in tallies), sum(t.app for t in tallies)
    ticks = sum(t.ticks for t in tallies)
    pool_busy = sum(t.pool_busy for t in tallies)

    def share(n: float) -> float:
        return round(n / loop, 4) if loop else 0.0

    shares = LoopShares(
        samples=loop,
        idle=share(idle),
        app=share(app),
        app_blocked=share(sum(t.blocked for t in tallies)) if all(t.blocked_known for t in tallies) else None,
        framework=share(loop - idle - app),
    )
    load = ThreadpoolLoad(
        busy_threads=round(pool_busy / ticks, 2) if ticks else 0.0,
        pool_wait_threads=round(sum(t.pool_wait for t in tallies) / ticks, 2) if ticks else 0.0,
        threads_seen=max((t.threads_seen for t in tallies), default=0),
    )
    return RouteProfile(
        len(sample.workers), round(sample.seconds, 3), shares, load, _hotspots(spots, loop, pool_busy)
    )


# ---------------------------------------------------------------------------------------
# One line for the terminal.


def _where(spot: Hotspot | None) -> str:
    if spot is None:
        return ""
    call = f" -> {spot.call}" if spot.call else ""
    return f" in {spot.file}:{spot.line} {spot.function}{call}"


def _loop_clause(p: RouteProfile) -> str:
    loop = p.loop
    spot = next((h for h in p.hotspots if h.thread is ThreadKind.EVENT_LOOP), None)
    running = loop.app_running
    candidates = [
        (loop.idle, f"event loop idle {loop.idle:.0%} of samples (awaiting I/O)"),
        (loop.framework, f"event loop in server/framework code {loop.framework:.0%} of samples"),
    ]
    if loop.app_blocked is None or running is None:
        candidates.append((loop.app, f"event loop in app code {loop.app:.0%} of samples{_where(spot)}"))
    else:
        candidates.append(
            (loop.app_blocked, f"event loop blocked {loop.app_blocked:.0%} of samples{_where(spot)}")
        )
        candidates.append((running, f"event loop computing {running:.0%} of samples{_where(spot)}"))
    return max(candidates, key=lambda c: c[0])[1]


def _pool_clause(p: RouteProfile) -> str | None:
    load = p.threadpool
    if load.busy_threads < _POOL_CLAUSE_MIN_THREADS:
        return None
    spot = next((h for h in p.hotspots if h.thread is ThreadKind.THREADPOOL), None)
    text = f"{load.busy_threads:.1f} pool threads busy per worker ({load.threads_seen} started){_where(spot)}"
    if load.pool_wait_threads >= _POOL_CLAUSE_MIN_THREADS:
        text += f", {load.pool_wait_threads:.1f} waiting for a database connection"
    return text


def loop_hotspot(profile: RouteProfile, blocked: bool) -> str:
    """The event loop's top app line with its share: what a loop-blocking or CPU verdict cites."""
    spot = next((h for h in profile.hotspots if h.thread is ThreadKind.EVENT_LOOP), None)
    share = profile.loop.app_blocked if blocked else profile.loop.app_running
    what = "blocked" if blocked else "computing"
    if spot is None or share is None:
        return describe(profile)
    return f"event loop {what} {share:.0%} of samples{_where(spot)}"


def describe(profile: RouteProfile) -> str:
    """One line: `event loop blocked 91% of samples in app.py:42 get_inventory -> time.sleep`."""
    if profile.loop.samples == 0 and profile.threadpool.busy_threads == 0:
        return "no event loop or pool thread was seen in the samples"
    pool = _pool_clause(profile)
    if pool is not None and profile.loop.app < profile.loop.idle:
        return f"{pool}; {_loop_clause(profile)}"  # the pool is the story, the loop only waits
    return _loop_clause(profile) if pool is None else f"{_loop_clause(profile)}; {pool}"


# ---------------------------------------------------------------------------------------
# JSON: written by profile_to_json, checked once by profile_from_json.


def profile_to_json(p: RouteProfile) -> dict[str, Any]:
    """The profile as JSON-ready data (the names are part of the probe report's format)."""
    return {
        "workers": p.workers,
        "seconds": p.seconds,
        "loop": {
            "samples": p.loop.samples,
            "idle": p.loop.idle,
            "app": p.loop.app,
            "app_blocked": p.loop.app_blocked,
            "framework": p.loop.framework,
        },
        "threadpool": {
            "busy_threads": p.threadpool.busy_threads,
            "pool_wait_threads": p.threadpool.pool_wait_threads,
            "threads_seen": p.threadpool.threads_seen,
        },
        "hotspots": [
            {
                "thread": h.thread.value,
                "file": h.file,
                "line": h.line,
                "function": h.function,
                "share": h.share,
                "call": h.call,
            }
            for h in p.hotspots
        ],
    }


def _get(
    obj: Mapping[str, Any], key: str, where: str, kinds: tuple[type, ...], optional: bool = False
) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in obj:
        raise BadInputError(f"stack profile: {path}: missing")
    value = obj[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise BadInputError(f"stack profile: {path}: expected {names}, got {type(value).__name__}")
    return value


def _obj(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise BadInputError(f"stack profile: {path}: expected an object")
    return value


def _hotspot_from_json(raw: object, where: str) -> Hotspot:
    h = _obj(raw, where)
    thread = _get(h, "thread", where, (str,))
    if thread not in {k.value for k in ThreadKind}:
        raise BadInputError(f"stack profile: {where}.thread: expected one of {[k.value for k in ThreadKind]}")
    return Hotspot(
        thread=ThreadKind(thread),
        file=_get(h, "file", where, (str,)),
        line=_get(h, "line", where, (int,)),
        function=_get(h, "function", where, (str,)),
        share=float(_get(h, "share", where, (int, float))),
        call=_get(h, "call", where, (str,), optional=True),
    )


def profile_from_json(raw: object) -> RouteProfile:
    """A RouteProfile from profile_to_json's data; BadInputError names the first bad key."""
    top = _obj(raw, "profile")
    loop = _obj(_get(top, "loop", "", (dict,)), "loop")
    pool = _obj(_get(top, "threadpool", "", (dict,)), "threadpool")
    num = (int, float)
    blocked = _get(loop, "app_blocked", "loop", num, optional=True)
    return RouteProfile(
        workers=_get(top, "workers", "", (int,)),
        seconds=float(_get(top, "seconds", "", num)),
        loop=LoopShares(
            samples=_get(loop, "samples", "loop", (int,)),
            idle=float(_get(loop, "idle", "loop", num)),
            app=float(_get(loop, "app", "loop", num)),
            app_blocked=None if blocked is None else float(blocked),
            framework=float(_get(loop, "framework", "loop", num)),
        ),
        threadpool=ThreadpoolLoad(
            busy_threads=float(_get(pool, "busy_threads", "threadpool", num)),
            pool_wait_threads=float(_get(pool, "pool_wait_threads", "threadpool", num)),
            threads_seen=_get(pool, "threads_seen", "threadpool", (int,)),
        ),
        hotspots=tuple(
            _hotspot_from_json(h, f"hotspots[{i}]") for i, h in enumerate(_get(top, "hotspots", "", (list,)))
        ),
    )
