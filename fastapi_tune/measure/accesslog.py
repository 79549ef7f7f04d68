"""Reading access logs (--access-log FILE, repeatable; '-' is stdin; gzip read directly).

Streams every line once and keeps none: each file's format is found from its first lines
(measure/logformats.py), each request is matched to the app's routes (discover/routes.py) and
counted (measure/traffic.py). Files with times are read side by side in time order (a k-way merge, one line of
lookahead per file), so logs of several servers, or rotated files given in any order, add up to
one arrival rate.
"""

from __future__ import annotations

import gzip
import heapq
import io
import itertools
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import IO, Final

from fastapi_tune.core.errors import BadInputError, UsageError
from fastapi_tune.core.redact import redact_log_line, redact_text
from fastapi_tune.discover.routes import RouteMatcher
from fastapi_tune.measure.logformats import DESCRIPTIONS, LogFormat, Record, detect
from fastapi_tune.measure.traffic import LogSource, TrafficProfile, TrafficTally, utc_offset

STDIN: Final = "-"
# The format is decided on the first lines: up to this many non-blank ones, or fewer once one
# format has read _DETECT_ENOUGH of them.
_DETECT_LINES: Final = 200
_DETECT_ENOUGH: Final = 20
_EXPECTED: Final = "expected " + ", ".join(DESCRIPTIONS.values()) + " with method, path and status"

Progress = Callable[[int], None]  # lines read so far, across files


@dataclass
class _Input:
    """One file being read: its lines, the format found, what became of its lines."""

    name: str
    lines: Iterator[str]
    fmt: LogFormat
    count: int = 0
    unreadable: int = 0

    def source(self) -> LogSource:
        return LogSource(self.name, self.fmt.name, self.count, self.unreadable, self.fmt.timed)


def _open(name: str, stack: ExitStack) -> IO[str]:
    """The file (or stdin, left open) as text, closed with `stack`; gzip is recognised by its magic
    bytes, whatever the name."""
    try:
        raw: IO[bytes] = sys.stdin.buffer if name == STDIN else open(name, "rb")  # noqa: SIM115
    except OSError as e:
        raise BadInputError(f"--access-log {name}: cannot read it ({e.strerror or e})") from None
    if name != STDIN:
        stack.callback(raw.close)
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    try:
        magic = buffered.peek(2)[:2]
    except OSError as e:
        raise BadInputError(f"--access-log {name}: cannot read it ({e.strerror or e})") from None
    stream: IO[bytes] | gzip.GzipFile = buffered
    if magic == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")  # closing it leaves `buffered` open
        stack.callback(stream.close)
    elif name.endswith(".gz"):
        raise BadInputError(f"--access-log {name}: named .gz but not gzip data")
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    stack.callback(text.detach)  # the file is closed above; stdin is not closed at all
    return text


def _guarded_lines(name: str, text: IO[str], notes: list[str]) -> Iterator[str]:
    """The lines of `text`; a gzip stream that ends early stops here with a note, keeping what was read."""
    try:
        # Not `yield from`: closing this generator early would close `text` through it.
        for line in text:  # noqa: UP028
            yield line
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        notes.append(f"{name}: the gzip data ends early or is damaged ({e}); the lines before it were used")
    except OSError as e:
        raise BadInputError(f"--access-log {name}: reading failed ({e.strerror or e})") from None


def _start(name: str, stack: ExitStack, notes: list[str]) -> _Input:
    """Open `name` and find its format from its first non-blank lines."""
    lines = _guarded_lines(name, _open(name, stack), notes)
    head: list[str] = []
    fmt, read = None, 0
    for line in lines:
        if line.strip():
            head.append(line)
            if len(head) % _DETECT_ENOUGH == 0 or len(head) >= _DETECT_LINES:
                fmt, read = detect(head)
                if read >= _DETECT_ENOUGH or len(head) >= _DETECT_LINES:
                    break
    else:
        fmt, read = detect(head) if head else (None, 0)
    if not head:
        raise BadInputError(f"--access-log {name}: empty: no line to read ({_EXPECTED})")
    if fmt is None:
        raise BadInputError(
            f"--access-log {name}: no line in a known format in the first {len(head)} read"
            f" ({_EXPECTED}); the first reads: {redact_log_line(head[0])!r}"
        )
    return _Input(name, itertools.chain(head, lines), fmt)


def _parsed(src: _Input) -> Iterator[Record | None]:
    """Each non-blank line of `src` parsed (None: unreadable), with no Python frame per line."""
    return map(src.fmt.parse, filter(str.strip, src.lines))


def _readable(src: _Input) -> Iterator[Record]:
    """The readable lines of `src`, counting them all into `src` (for the merge, which needs times)."""
    count = unreadable = 0
    try:
        for record in _parsed(src):
            count += 1
            if record is None:
                unreadable += 1
            else:
                yield record
    finally:
        src.count, src.unreadable = count, unreadable


def _tally(
    inputs: Sequence[_Input], matcher: RouteMatcher, tally: TrafficTally, progress: Progress | None
) -> None:
    """Every request counted: files with times side by side in time order, others one after another."""
    if len(inputs) > 1 and all(i.fmt.timed for i in inputs):
        # One line of lookahead per file; each file is roughly in time order, as servers write them.
        merged = heapq.merge(*(_readable(i) for i in inputs), key=itemgetter(0))
        tally.consume(merged, matcher, progress)
        return
    done = 0
    for src in inputs:
        tick = None if progress is None else (lambda n, base=done: progress(base + n))
        src.count, src.unreadable = tally.consume(_parsed(src), matcher, tick)
        done += src.count


def read_access_logs(
    names: Sequence[str], routes: Iterable[tuple[str, str]], progress: Progress | None = None
) -> TrafficProfile:
    """Read every log, match each request to `routes` ((METHOD, path template) pairs), derive the profile.

    Raises BadInputError for a file that cannot be read, is empty or has no line in a known
    format, and when no request at all matched a route.
    """
    if not names:
        raise UsageError("--access-log: give a file (or - for stdin)")
    if list(names).count(STDIN) > 1:
        raise UsageError("--access-log -: stdin can be read once")
    matcher = RouteMatcher(routes)
    if not matcher.routes:
        raise UsageError("--access-log: the app's routes are not known, so no request can be matched")
    tally = TrafficTally()
    notes: list[str] = []
    with ExitStack() as stack:
        inputs = [_start(name, stack, notes) for name in names]
        offset = next((i.fmt.offset_minutes for i in inputs if i.fmt.offset_minutes is not None), None)
        tally.offset = None if offset is None else utc_offset(offset)
        _tally(inputs, matcher, tally, progress)
    durations = next((i.fmt.durations for i in inputs if i.fmt.durations), None)
    profile = tally.profile(tuple(i.source() for i in inputs), durations)
    _check_used(profile)
    return _with_notes(profile, notes)


def _with_notes(profile: TrafficProfile, notes: list[str]) -> TrafficProfile:
    return replace(profile, notes=tuple(notes)) if notes else profile


def _check_used(profile: TrafficProfile) -> None:
    """No matched request: one line that says what was read and what did not match."""
    if profile.used:
        return
    names = ", ".join(s.name for s in profile.sources)
    readable = profile.lines - profile.unreadable
    if not readable:
        raise BadInputError(f"--access-log {names}: no readable request line ({_EXPECTED})")
    top = ", ".join(f"{redact_text(label)} ({n})" for label, n in profile.unmatched_top[:3])
    raise BadInputError(
        f"--access-log {names}: none of its {readable} request lines matched a route of the app"
        f" (most frequent: {top}); is it this app's log, and is the app served under a path prefix?"
    )
