"""Closed-loop HTTP/1.1 load generator: the hot loop behind every burst.

The generator must measure the app, not itself, so the per-request path is kept minimal: the request
is encoded to bytes once, each connection is an ``asyncio.Protocol`` that resends directly from its
``data_received`` callback (no coroutine, future or timer per request), and responses are parsed by
httptools (llhttp, the C parser uvicorn itself uses). Measured on 2 cores against one uvicorn worker
this tracks wrk (throughput and p50 within ~2%) at ~0.03 ms CPU/request on the stdlib loop, ~0.025 on
uvloop, which is used when installed. Everything runs on one dedicated thread with the host resolved
up front, so that thread's CPU clock is the generator's whole CPU cost.

Every wait has a total deadline: a connect, and a request from the moment it is sent until its
response is complete, however the bytes trickle in. A request still in flight when the counted window
closes is never dropped silently: older than the timeout it is a timeout, younger it is reported as in
flight (``BurstResult.in_flight_at_end``), and a window in which requests were in flight and none
completed reads ``stalled``. The connection machinery here is shared with the open loop (openloop.py).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

import httptools


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    # uvloop is optional: the stdlib loop already tracks wrk, uvloop only trims ~20% of client CPU.
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


_new_loop = _loop_factory()

__all__ = ["TEARDOWN_GRACE_S", "BurstResult", "LiveCount", "RequestSpec", "run_burst"]

# A slot whose connect failed, or whose connection closed before any answer, waits this long before
# the next attempt: a refused port costs ~20 attempts/s per slot instead of a busy spin.
CONNECT_BACKOFF_S: Final = 0.05
# The watchdog tick bounds how late a timeout or a stop request is noticed.
TICK_S: Final = 0.05
# What a run may take beyond its own schedule to tear down: aborting transports and cancelling the
# connection tasks is immediate (measured: ~5 ms for 256 connections); the rest is slack for a busy
# machine. run_burst returns within opening + warmup + duration + this; run_open_loop within
# warmup + duration + timeout + this.
TEARDOWN_GRACE_S: Final = 0.5
# Connections open this far apart (see _open_slots): the first ones wide enough for a request to make
# a worker busy, the rest wide enough that each is a separate accept event.
_STAGGERED = 16
_STAGGER_FIRST_S = 0.003
_STAGGER_REST_S = 0.001

T = TypeVar("T")


def opening_s(concurrency: int) -> float:
    """How long a burst takes to open its connections before the warm-up starts.

    The connections are staggered (_STAGGER_*); asyncio's short sleeps overshoot by about half
    (measured: 4096 connections took ~6 s for 4.1 s of nominal gaps), hence the 1.5.
    """
    first = min(concurrency, _STAGGERED) * _STAGGER_FIRST_S
    return 1.5 * (first + max(0, concurrency - _STAGGERED) * _STAGGER_REST_S)


@dataclass(frozen=True)
class RequestSpec:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    timeout_s: float = 10.0
    verify_tls: bool = True


@dataclass(frozen=True)
class BurstResult:
    concurrency: int
    duration_s: float
    latencies_ms: tuple[float, ...]
    status_counts: Mapping[int, int]
    errors_by_kind: Mapping[str, int]
    client_cpu_s: float
    retry_after_s: float | None
    window_start: float = 0.0  # time.perf_counter() at the counted window's edges, so a server
    window_end: float = 0.0  # watcher can cut the same window out of its own samples
    # Requests sent but not answered when the window closed, younger than the timeout (older ones are
    # counted as timeouts), with their ages from the moment they were sent.
    in_flight_at_end: int = 0
    in_flight_ages_ms: tuple[float, ...] = ()
    # With run_burst(drain_s=...): how long the requests in flight at the window's end took to be
    # answered (not counted), and how many were not when the wait ended.
    drain_s: float | None = None
    undrained: int = 0

    @property
    def oldest_in_flight_ms(self) -> float | None:
        """Age of the oldest request still in flight when the window closed, None if none was."""
        return max(self.in_flight_ages_ms) if self.in_flight_ages_ms else None

    @property
    def stalled(self) -> bool:
        """Requests were in flight and not one response completed in the window."""
        return self.in_flight_at_end > 0 and not self.latencies_ms


# -- shared by the closed and the open loop -------------------------------------------------------


class Counts:
    """What one run has counted so far; only written from the loop thread."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.retry_after: float | None = None
        self.counting_since: float | None = None  # perf_counter() when the counted window opened

    def record(self, status: int, latency_ms: float, retry_after_raw: bytes | None) -> None:
        self.latencies.append(latency_ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if retry_after_raw is not None and status in (429, 503):
            value = _parse_retry_after(retry_after_raw)
            if value is not None and (self.retry_after is None or value > self.retry_after):
                self.retry_after = value

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class LiveCount:
    """Requests and errors of the run under way, readable from another thread for progress."""

    def __init__(self) -> None:
        self._counts: Counts | None = None

    def watch(self, counts: Counts) -> None:
        """Follow `counts` from now on (called by the run, on its own thread)."""
        self._counts = counts

    def read(self) -> tuple[int, int]:
        """(requests completed, errors) in the counted window so far."""
        c = self._counts
        if c is None:
            return 0, 0
        # Plain reads of a list length and dict values: safe enough across threads in CPython for
        # a progress display, and free for the hot loop.
        bad = sum(n for st, n in list(c.statuses.items()) if st >= 400)
        return len(c.latencies) + sum(c.errors.values()), bad + sum(c.errors.values())

    def counted_s(self) -> float:
        """Seconds since the counted window opened (0 before it opens)."""
        c = self._counts
        since = c.counting_since if c is not None else None
        return 0.0 if since is None else time.perf_counter() - since


@dataclass(frozen=True)
class WireRequest:
    host: str
    port: int
    addr: str  # resolved once, so reconnects never go through a resolver thread pool
    family: int
    ssl_ctx: ssl.SSLContext | None
    request: bytes
    is_head: bool


def _encode(spec: RequestSpec) -> WireRequest:
    parts = urlsplit(spec.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL: {spec.url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    method = spec.method.upper()
    host_hdr = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.port is not None:
        host_hdr += f":{parts.port}"
    names = {name.lower() for name, _ in spec.headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host_hdr}")
    if "user-agent" not in names:
        lines.append("User-Agent: fastapi-tune")
    if "accept" not in names:
        lines.append("Accept: */*")
    lines.extend(f"{name}: {value}" for name, value in spec.headers)
    body = spec.body or b""
    if "content-length" not in names and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    ssl_ctx: ssl.SSLContext | None = None
    if tls:
        ssl_ctx = ssl.create_default_context()
        if not spec.verify_tls:
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE
    info = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    family, _, _, _, sockaddr = info[0]
    return WireRequest(parts.hostname, port, str(sockaddr[0]), family, ssl_ctx, request, method == "HEAD")


def encode_targets(specs: Sequence[RequestSpec]) -> list[WireRequest]:
    """Each spec as the bytes to send, all checked to share one server."""
    targets = [_encode(spec) for spec in specs]
    if len({(t.addr, t.port, t.ssl_ctx is None) for t in targets}) > 1:
        raise ValueError("a mix must target one server: same scheme, host and port")
    return targets


async def open_connection(conn: HttpConnection, t: WireRequest, timeout_s: float) -> None:
    """Connect `conn` to `t` within `timeout_s` in all (TCP and TLS handshakes together)."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.create_connection(
                lambda: conn,
                t.addr,
                t.port,
                family=t.family,
                ssl=t.ssl_ctx,
                server_hostname=t.host if t.ssl_ctx else None,
            ),
            timeout_s,
        )
    except asyncio.CancelledError:
        # Cancelled by the run's teardown just as the connection came up: it is in no pool or
        # slot list yet, so nobody else would ever close it.
        if conn.transport is not None:
            conn.transport.abort()
        raise


def _parse_retry_after(raw: bytes) -> float | None:
    text = raw.decode("latin-1").strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; subclasses decide what follows.

    ``done(now)`` is called when a response is complete (status, keep_alive, retry_after_raw are
    set), ``lost(in_flight)`` when the connection ends, ``error(kind)`` to count a failure.
    """

    def __init__(self) -> None:
        self.is_head = False
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0  # 0.0 while no request is in flight
        self.complete = False
        self.keep_alive = True
        self.status = 0
        self.headers_done = False
        self.framed = False
        self.retry_after_raw: bytes | None = None
        self.served = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(self, now: float) -> None:
        raise NotImplementedError

    def lost(self, in_flight: bool) -> None:
        raise NotImplementedError

    def error(self, kind: str) -> None:
        raise NotImplementedError

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small requests must not wait for Nagle; uvloop sets this already, the stdlib loop too.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail("other")
            return
        if not self.complete:
            return
        now = time.perf_counter()
        self.complete = False
        self.served += 1
        if self.is_head:
            # llhttp cannot be told a response answers HEAD, so it would wait for a body that never comes.
            self.parser = httptools.HttpResponseParser(self)
        self.done(now)

    def eof_received(self) -> bool | None:
        if self.sent_at and self.headers_done and not self.framed:
            # No Content-Length and not chunked: the server delimits the body by closing.
            self.on_message_complete()
            self.keep_alive = False
            self.data_received(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        in_flight = bool(self.sent_at)
        self.sent_at = 0.0
        self.lost(in_flight)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.headers_done = False
        self.framed = False
        self.retry_after_raw = None

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 11 and name.lower() == b"retry-after":
            self.retry_after_raw = value
        elif (n == 14 and name.lower() == b"content-length") or (
            n == 17 and name.lower() == b"transfer-encoding"
        ):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.is_head:
            self.on_message_complete()

    def on_message_complete(self) -> None:
        # llhttp clears its per-message flags right after this callback, so read them now.
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self.status = self.parser.get_status_code()

    # -- requests ----------------------------------------------------------------------------------
    def write(self, target: WireRequest, now: float) -> bool:
        """Send `target`'s request; False if the peer already hung up (connection_lost follows)."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.is_head = target.is_head
        self.sent_at = now
        self.transport.write(target.request)
        return True

    def fail(self, kind: str) -> None:
        self.sent_at = 0.0
        self.error(kind)
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def run_on_thread(main: Callable[[], Coroutine[Any, Any, T]], name: str) -> T:
    """Run `main()` on a fresh event loop on a thread of its own and return its result.

    Callers may hold a running loop themselves, and the thread's CPU clock is the run's whole cost.
    """
    outcome: list[T | BaseException] = []

    def body() -> None:
        loop = _new_loop()
        try:
            outcome.append(loop.run_until_complete(main()))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


async def teardown(conns: Sequence[HttpConnection], tasks: Sequence[asyncio.Future[None]]) -> None:
    """Abort every connection and cancel every task, waiting at most TEARDOWN_GRACE_S for them."""
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    for task in tasks:
        task.cancel()
    if tasks:
        # Bounded: a task that swallowed its cancellation must not hold the run past its deadline.
        await asyncio.wait(tasks, timeout=TEARDOWN_GRACE_S)
    await asyncio.sleep(0)  # let the aborted transports deliver connection_lost before the loop closes


def in_flight_ages(sent: Sequence[float], now: float, timeout_s: float, counts: Counts) -> list[float]:
    """Ages (ms) of the requests sent at `sent` and still unanswered; those past the timeout are
    counted as timeouts in `counts` instead."""
    ages: list[float] = []
    for at in sent:
        if now - at > timeout_s:
            counts.error("timeout")
        else:
            ages.append(round((now - at) * 1000.0, 3))
    return ages


# -- closed loop -----------------------------------------------------------------------------------


class _Burst:
    """State shared by all connections of one burst; only touched from the loop thread."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.running = True
        self.counting = False
        self.counts = Counts()
        self.live: set[_Conn] = set()


class _Slot:
    """One closed-loop slot: the requests it sends in turn, across reconnects."""

    def __init__(self, targets: Sequence[WireRequest], offset: int) -> None:
        self.targets = targets
        self.index = offset

    def next(self) -> WireRequest:
        t = self.targets[self.index % len(self.targets)]
        self.index += 1
        return t


class _Conn(HttpConnection):
    """One keep-alive connection running the closed loop from its callbacks."""

    def __init__(self, burst: _Burst, slot: _Slot) -> None:
        super().__init__()
        self.burst = burst
        self.slot = slot

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.burst.live.add(self)

    def done(self, now: float) -> None:
        burst = self.burst
        if burst.counting:
            burst.counts.record(self.status, (now - self.sent_at) * 1000.0, self.retry_after_raw)
        self.sent_at = 0.0
        if not burst.running or not self.keep_alive:
            self.close()
            return
        self.send()

    def lost(self, in_flight: bool) -> None:
        self.burst.live.discard(self)
        if in_flight:
            self.error("reset")

    def error(self, kind: str) -> None:
        if self.burst.counting:
            self.burst.counts.error(kind)

    def send(self) -> None:
        # False: the peer already hung up; connection_lost will hand the slot back.
        self.write(self.slot.next(), time.perf_counter())


async def _connection_loop(burst: _Burst, slot: _Slot) -> None:
    """Keeps one closed-loop slot alive: (re)connects and waits for the connection to end."""
    t = slot.targets[0]  # every target shares scheme, host and port (checked in encode_targets)
    while burst.running:
        conn = _Conn(burst, slot)
        try:
            await open_connection(conn, t, burst.timeout_s)
        except (TimeoutError, OSError):
            conn.error("connect")
            await asyncio.sleep(CONNECT_BACKOFF_S)
            continue
        if not burst.running:
            conn.close()
            break
        conn.send()
        await conn.closed
        if conn.served == 0:
            # A server that drops every connection before answering must not turn this into a spin.
            await asyncio.sleep(CONNECT_BACKOFF_S)


@dataclass
class _Window:
    start: float = 0.0
    end: float = 0.0
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    in_flight_ages_ms: tuple[float, ...] = ()


async def _open_slots(
    burst: _Burst, targets: Sequence[WireRequest], concurrency: int, stop: threading.Event | None
) -> list[asyncio.Future[None]]:
    slots: list[asyncio.Future[None]] = []
    for i in range(concurrency):
        # Every connection sends the specs in turn (starting at i mod k): the mix stays exactly
        # as given whatever order the server serves its connections in. One endpoint per
        # connection would let an unfair event loop skew the mix, and with it req/s (measured:
        # one worker at 69 or 100 req/s on the same two CPU routes).
        slots.append(asyncio.ensure_future(_connection_loop(burst, _Slot(targets, i))))
        # Opened all at once, a burst's connections reach one gunicorn worker as a single
        # accept event, and asyncio accepts up to 100 per event: keep-alive then pins them
        # all to that worker and the server looks half its size (measured: a 2-worker
        # threadpool route at 406 req/s instead of 640 at c=64). Gaps make each connection
        # its own event; the first ones wider, so that a request makes a worker busy.
        await asyncio.sleep(_STAGGER_FIRST_S if i < _STAGGERED else _STAGGER_REST_S)
        if stop is not None and stop.is_set():
            break
    return slots


def _expire(burst: _Burst, now: float) -> None:
    for conn in list(burst.live):
        if conn.sent_at and now - conn.sent_at > burst.timeout_s:
            conn.fail("timeout")


async def _measure(
    burst: _Burst, window: _Window, warmup_s: float, duration_s: float, stop: threading.Event | None
) -> None:
    """Warm up, then count for `duration_s` (or until `stop`), enforcing timeouts on every tick."""
    # The warm-up counts from the last connection, so every level warms up fully opened.
    t0 = time.perf_counter()
    start_at, end_at = t0 + warmup_s, t0 + warmup_s + duration_s
    while True:
        now = time.perf_counter()
        if not burst.counting and now >= start_at:
            window.start, window.cpu_start = now, time.thread_time()
            burst.counts.counting_since = now
            burst.counting = True
        if now >= end_at or (stop is not None and stop.is_set()):
            break
        _expire(burst, now)
        wake = min(now + TICK_S, end_at if burst.counting else start_at)
        await asyncio.sleep(max(0.0, wake - time.perf_counter()))


def _close_window(burst: _Burst, window: _Window) -> None:
    """End the counted window: stamp it and account for every request still in flight."""
    if burst.counting:
        window.end, window.cpu_end = time.perf_counter(), time.thread_time()
        sent = [conn.sent_at for conn in burst.live if conn.sent_at]
        window.in_flight_ages_ms = tuple(in_flight_ages(sent, window.end, burst.timeout_s, burst.counts))
    burst.counting = False
    burst.running = False


async def _drain(burst: _Burst, wait_s: float, stop: threading.Event | None) -> tuple[float, int]:
    """Wait up to `wait_s` for the answers still due (each connection closes on its answer), so the
    server is left with nothing in flight; (seconds waited, requests still unanswered)."""
    started = time.perf_counter()
    while (due := [c for c in burst.live if c.sent_at]) and not (stop is not None and stop.is_set()):
        now = time.perf_counter()
        if now - started >= wait_s:
            break
        _expire(burst, now)
        await asyncio.sleep(min(TICK_S / 5, wait_s - (now - started)))
    return time.perf_counter() - started, len(due)


async def _run(
    specs: Sequence[RequestSpec],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    stop: threading.Event | None,
    live: LiveCount | None,
    drain_s: float,
    count_drain: bool = False,
) -> BurstResult:
    targets = encode_targets(specs)
    burst = _Burst(max(spec.timeout_s for spec in specs))
    if live is not None:
        live.watch(burst.counts)
    window = _Window()
    slots: list[asyncio.Future[None]] = []
    drained: tuple[float | None, int] = (None, 0)
    try:
        slots = await _open_slots(burst, targets, concurrency, stop)
        await _measure(burst, window, warmup_s, duration_s, stop)
        if count_drain and drain_s > 0 and burst.counting:
            # The window stays open through the drain: answers count however late (nothing new is
            # sent), and what is still unanswered at its end is in flight at the window's end.
            burst.running = False
            drained = await _drain(burst, drain_s, stop)
        _close_window(burst, window)
        if drain_s > 0 and not count_drain:
            drained = await _drain(burst, drain_s, stop)
    finally:
        _close_window(burst, window)
        await teardown(list(burst.live), slots)
    counts = burst.counts
    return BurstResult(
        concurrency=concurrency,
        duration_s=window.end - window.start,
        latencies_ms=tuple(counts.latencies),
        status_counts=MappingProxyType(dict(counts.statuses)),
        errors_by_kind=MappingProxyType(dict(counts.errors)),
        client_cpu_s=window.cpu_end - window.cpu_start,
        retry_after_s=counts.retry_after,
        window_start=window.start,
        window_end=window.end,
        in_flight_at_end=len(window.in_flight_ages_ms),
        in_flight_ages_ms=window.in_flight_ages_ms,
        drain_s=drained[0],
        undrained=drained[1],
    )


def run_burst(
    spec: RequestSpec | Sequence[RequestSpec],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    stop: threading.Event | None = None,
    live: LiveCount | None = None,
    drain_s: float = 0.0,
    *,
    count_drain: bool = False,
) -> BurstResult:
    """Run one closed-loop burst and block until it is over (or ``stop`` is set).

    Several specs make a mix: every connection sends them in turn, starting at spec i mod k.

    The event loop gets a thread of its own so callers may hold a running loop themselves, and so
    ``client_cpu_s`` (that thread's CPU clock over the counted window) excludes the caller's work.
    Returns within the connections' opening (~1 ms each) + warmup_s + duration_s + TEARDOWN_GRACE_S,
    whatever the server does: requests still unanswered then are counted, not awaited. With
    `drain_s`, it then waits up to that long for them (uncounted) before letting go, so that the
    server is not left working through them while the next measurement starts. With `count_drain`
    the window stays open through that wait instead: the answers count, however late (the overload
    step's goodput), and `duration_s` includes the wait.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    specs = [spec] if isinstance(spec, RequestSpec) else list(spec)
    if not specs:
        raise ValueError("at least one request spec is needed")
    return run_on_thread(
        lambda: _run(specs, concurrency, warmup_s, duration_s, stop, live, drain_s, count_drain),
        "fastapi-tune-loadgen",
    )
