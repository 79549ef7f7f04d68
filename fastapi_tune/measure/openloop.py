"""Open-loop HTTP/1.1 load: requests start at a fixed arrival rate, whatever the server does.

A closed loop waits for each answer before the next request, so a slow server slows its own load and
the latencies look better than users would see (coordinated omission). Here every request has an
INTENDED start time (constant spacing, or exponential gaps for Poisson arrivals from a seeded RNG),
and the server never holds a start back: waiting for a connection opened for it counts in its
latency. What does not count is the generator's own lateness: latency runs from when the generator's
timer fired for the request, the intended time or later. On this VM that timer wakes 1-5 ms late
while the server burns a core (p90 3.6 ms against 0.6 ms on an idle machine, measured with a 10 ms
CPU route at 48 req/s), which no user of the server would see; k6 counts from the send too, and with
that lateness counted our p99 read 1.37x k6's (benchmarks/openloop.py section 4). Starts more than
LATE_START_S late are counted and shown; timeouts run from the intended start.

Requests go out on a pool of keep-alive connections, one request at a time each, opened lazily. At
most ``max_in_flight`` requests are outstanding at once (k6's maxVUs): a start that finds the bound
reached is dropped and counted, never queued inside the generator. Below the bound a request takes
an idle connection or waits only for one opened for it; one that leaves more than LATE_START_S
after its intended time is a late start. A request's timeout runs from its intended start and
covers the wait, the connect and the whole response, so every counted request is settled by the
end of the window plus the timeout: each ends as a response, an error, a dropped start or (only if
a stop cut the run short) in flight at the end.

Two rates come out, and they differ as soon as the server falls behind: the ARRIVAL rate the
generator held (``arrival_rps``, requests started per second of window) and the rate the server
SERVED (``served_rps``, responses that ended inside the window per second). A server past its
capacity answers every request eventually, so counting the window's responses whenever they end
would report the arrival rate; the backlog at the window's end and the time it took to drain say
how far behind it was, and the latencies of the window's first and last seconds whether its queue
grew (verify/judge.py decides from them).

The per-request path reuses the closed loop's connection (loadgen.py) plus one loop timer per start.
Measured against a trivial route on 2 cores (benchmarks/openloop.py): ~0.08 ms of client CPU per
request at 1000 req/s on the stdlib loop, where the closed loop spends 0.02-0.03; the difference is
the timer's own wake-up (~0.03 ms alone), shared between starts at higher rates (~0.06 at 3000).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from fastapi_tune.measure.histogram import LatencyHistogram
from fastapi_tune.measure.loadgen import (
    CONNECT_BACKOFF_S,
    TICK_S,
    Counts,
    HttpConnection,
    LiveCount,
    RequestSpec,
    WireRequest,
    encode_targets,
    in_flight_ages,
    open_connection,
    run_on_thread,
    teardown,
)

__all__ = ["LATE_START_S", "SEGMENT_S", "Arrival", "OpenLoopResult", "arrival_offsets", "run_open_loop"]

Arrival = Literal["constant", "poisson"]

# A start this late is "late". The stdlib loop wakes a timer up to 1 ms late (epoll's millisecond
# timeout, rounded up) and a busy 2-core machine adds a few ms more; 10 ms is well past that, so a
# late start means no connection was free (or the client was starved), not timer jitter.
LATE_START_S: Final = 0.010

# The window's first and last seconds (a quarter of a window shorter than 4 s) are timed apart: a
# queue that grows through the window shows as latency growing from one to the other.
SEGMENT_S: Final = 1.0

# The shortest timer the scheduler sets after waking early: one millisecond, the resolution of
# both event loops' timers (epoll's timeout, libuv's clock).
_TIMER_FLOOR_S: Final = 0.001

# intended start, when the generator started it (perf_counter), request, counted
_Pending = tuple[float, float, WireRequest, bool]


def _offsets(rate_rps: float, arrival: Arrival, seed: int) -> Iterator[float]:
    """Intended start offsets from the run's start, in seconds, without end."""
    if arrival == "constant":
        gap = 1.0 / rate_rps
        # i * gap rather than a running sum: no drift over 10^5 starts.
        return (i * gap for i in itertools.count())
    rng = random.Random(seed)
    return itertools.accumulate(rng.expovariate(rate_rps) for _ in itertools.count())


def arrival_offsets(
    rate_rps: float, duration_s: float, arrival: Arrival = "constant", seed: int = 0
) -> tuple[float, ...]:
    """The intended start offsets (s) of a run of `duration_s`: the schedule run_open_loop follows."""
    _check_rate(rate_rps, arrival)
    return tuple(itertools.takewhile(lambda t: t < duration_s, _offsets(rate_rps, arrival, seed)))


def _check_rate(rate_rps: float, arrival: str) -> None:
    if not rate_rps > 0:
        raise ValueError("rate_rps must be > 0")
    if arrival not in ("constant", "poisson"):
        raise ValueError(f"arrival must be 'constant' or 'poisson', not {arrival!r}")


@dataclass(frozen=True)
class OpenLoopResult:
    """One open-loop run's counted window: requests whose intended start fell inside it."""

    target_rps: float
    arrival: str
    duration_s: float  # the counted window of intended starts, warm-up excluded
    intended_starts: int  # arrivals scheduled in the window
    sent: int  # of those, written to a connection
    latencies_ms: tuple[float, ...]  # one per response, from when the generator started it
    histogram: LatencyHistogram  # the same latencies, log-bucketed (mergeable across rounds)
    percentiles_ms: Mapping[float, float]  # p50, p90, p99, p99.9 read from the histogram (±1%)
    status_counts: Mapping[int, int]
    errors_by_kind: Mapping[str, int]  # "timeout", "connect", "reset", "other"
    late_starts: int  # sent more than LATE_START_S after the intended start
    dropped_starts: int  # never sent: max_in_flight requests were outstanding
    mean_start_lag_ms: float  # intended start to write, over the requests sent
    max_start_lag_ms: float
    in_flight_at_end: int  # neither answered nor timed out when the run ended (a stop cut it short)
    in_flight_ages_ms: tuple[float, ...]
    connections_opened: int
    client_cpu_s: float  # the generator's thread over the window
    retry_after_s: float | None
    window_start: float = 0.0  # time.perf_counter() at the window's edges, as in BurstResult
    window_end: float = 0.0
    served_in_window: int = 0  # responses (any status, warm-up requests too) that ended inside the window
    backlog_at_end: int = 0  # requests outstanding (on the wire or connecting) when the window closed
    drain_s: float | None = None  # window end -> the last of its requests settled; None: a stop came
    # Latencies of the requests intended in the window's first and last SEGMENT_S.
    first_segment: LatencyHistogram = field(default_factory=lambda: LatencyHistogram.of(()))
    last_segment: LatencyHistogram = field(default_factory=lambda: LatencyHistogram.of(()))

    @property
    def completed(self) -> int:
        """Responses to the window's requests, whenever they ended (after the window too)."""
        return len(self.latencies_ms)

    @property
    def arrival_rps(self) -> float:
        """Requests the generator started per second of window (late ones included, dropped not)."""
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def served_rps(self) -> float:
        """Responses that ended inside the window, per second: what the server kept up with."""
        return self.served_in_window / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def oldest_in_flight_ms(self) -> float | None:
        return max(self.in_flight_ages_ms) if self.in_flight_ages_ms else None

    @property
    def stalled(self) -> bool:
        """Requests were in flight and not one response completed."""
        return self.in_flight_at_end > 0 and not self.latencies_ms


class _PoolConn(HttpConnection):
    """A pooled connection: one request at a time, handed back to the pool when answered."""

    def __init__(self, pool: _Pool) -> None:
        super().__init__()
        self.pool = pool
        self.intended = 0.0
        self.started = 0.0  # when the generator got to it: the intended start, or later
        self.counted = False

    def done(self, now: float) -> None:
        pool = self.pool
        pool.ends.append(now)
        if self.counted:
            pool.counts.record(self.status, (now - self.started) * 1000.0, self.retry_after_raw)
            pool.intended.append(self.intended)
            pool.settled_at = now
        self.sent_at = 0.0
        if not self.keep_alive or not pool.running:
            self.close()  # connection_lost takes it out of the pool
            return
        pool.release(self)

    def lost(self, in_flight: bool) -> None:
        self.pool.lost(self, in_flight)

    def error(self, kind: str) -> None:
        # Not once the run is over: tearing down aborts whatever is left, which is no error.
        if self.counted and self.pool.running:
            self.pool.failed(kind)


class _Pool:
    """The connections, the requests waiting for one, and the counters of one run (loop thread only)."""

    def __init__(self, targets: Sequence[WireRequest], max_in_flight: int, timeout_s: float) -> None:
        self.targets = targets
        self.next_target = 0
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.running = True
        self.counts = Counts()
        self.conns: set[_PoolConn] = set()
        self.idle: deque[_PoolConn] = deque()  # FIFO: every connection takes its turn
        self.backlog: deque[_Pending] = deque()  # waiting for a connection opened for each
        self.ends: list[float] = []  # when each response ended (perf_counter), warm-up's too
        self.intended: list[float] = []  # the intended start of each counted response, in order
        self.settled_at = 0.0  # when the last counted request was answered or failed
        self.opening = 0
        self.opened = 0
        self.tasks: set[asyncio.Future[None]] = set()
        self.scheduled = self.sent = self.late = self.dropped = 0
        self.lag_sum = self.lag_max = 0.0

    def start(self, intended: float, now: float, counted: bool) -> None:
        """A request's intended start has come (the generator woke at `now`): send it, queue it or drop it."""
        targets = self.targets
        target = targets[self.next_target % len(targets)]
        self.next_target += 1
        self.scheduled += counted
        if self.idle:
            self.send(self.idle.popleft(), (intended, now, target, counted))
        elif self.in_flight() >= self.max_in_flight:
            self.dropped += counted
        else:
            self.backlog.append((intended, now, target, counted))
            self.grow()

    def in_flight(self) -> int:
        """Requests outstanding: on a busy connection, or waiting for one being opened for them."""
        return len(self.conns) - len(self.idle) + len(self.backlog)

    def failed(self, kind: str) -> None:
        """A counted request ended without a response."""
        self.counts.error(kind)
        self.settled_at = time.perf_counter()

    def send(self, conn: _PoolConn, pending: _Pending) -> None:
        intended, started, target, counted = pending
        now = time.perf_counter()
        conn.intended, conn.started, conn.counted = intended, started, counted
        if not conn.write(target, now):
            # Closed under us (its connection_lost is on the way): the request waits for another.
            self.backlog.appendleft(pending)
            return
        if counted:
            lag = now - intended
            self.sent += 1
            self.lag_sum += lag
            self.lag_max = max(self.lag_max, lag)
            if lag > LATE_START_S:
                self.late += 1

    def release(self, conn: _PoolConn) -> None:
        if self.backlog:
            self.send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    def lost(self, conn: _PoolConn, in_flight: bool) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)  # O(n), but only when an idle connection closes
        if in_flight:
            conn.error("reset")
        self.grow()

    def grow(self) -> None:
        """Open a connection if requests wait and fewer are opening than wait.

        Below max_in_flight every waiting request gets a connection of its own: a request starts
        only while busy + waiting < max_in_flight, and no connection is idle while one waits.
        """
        if not self.running or self.opening >= len(self.backlog):
            return
        if len(self.conns) + self.opening >= self.max_in_flight:
            return
        self.opening += 1
        self.opened += 1
        task = asyncio.ensure_future(self._connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        conn = _PoolConn(self)
        try:
            await open_connection(conn, self.targets[0], self.timeout_s)
        except (TimeoutError, OSError):
            self.opening -= 1
            if self.backlog:
                # The oldest waiting request could not get its connection: that is its outcome.
                counted = self.backlog.popleft()[3]
                if counted:
                    self.failed("connect")
            asyncio.get_running_loop().call_later(CONNECT_BACKOFF_S, self.grow)
            return
        self.opening -= 1
        if not self.running:
            conn.close()
            return
        self.conns.add(conn)
        self.release(conn)

    def expire(self, now: float) -> None:
        """Time out every request older than the timeout, counted from its intended start."""
        limit = now - self.timeout_s
        while self.backlog and self.backlog[0][0] < limit:
            counted = self.backlog.popleft()[3]
            if counted:
                self.failed("timeout")
        for conn in list(self.conns):
            if conn.sent_at and conn.intended < limit:
                conn.fail("timeout")

    def outstanding(self) -> list[float]:
        """Intended starts of the counted requests not settled yet (waiting or on the wire)."""
        waiting = [p[0] for p in self.backlog if p[3]]
        return waiting + [c.intended for c in self.conns if c.sent_at and c.counted]


class _Scheduler:
    """Calls pool.start at each intended start, one loop timer at a time."""

    def __init__(self, pool: _Pool, offsets: Iterator[float], t0: float, window: tuple[float, float]) -> None:
        self.pool = pool
        self.offsets = offsets
        self.t0 = t0
        self.window_start, self.window_end = window
        self.loop = asyncio.get_running_loop()
        self.next_at = t0 + next(offsets)
        self.handle: asyncio.TimerHandle | None = None

    def fire(self) -> None:
        now = time.perf_counter()
        pool, window_start = self.pool, self.window_start
        started = False
        # Every start already due goes out now (several per wake-up at high rates); a late one keeps
        # its intended time for its timeout and is counted late, its latency runs from now.
        while self.next_at <= now and self.next_at < self.window_end:
            pool.start(self.next_at, now, self.next_at >= window_start)
            self.next_at = self.t0 + next(self.offsets)
            started = True
        if self.next_at >= self.window_end:
            self.handle = None
            return
        wait = self.next_at - now
        if not started and wait < _TIMER_FLOOR_S:
            # Woken before the start was due: uvloop rounds a timer to whole milliseconds, so
            # under 0.5 ms it would fire at once, again and again (measured: 0.5 ms of CPU per
            # request at 1000 req/s). One tick of its clock instead: at most 1 ms late, as the
            # stdlib loop's epoll timeout (rounded up to the millisecond) is anyway.
            wait = _TIMER_FLOOR_S
        self.handle = self.loop.call_later(wait, self.fire)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


@dataclass
class _Clock:
    window_start: float
    window_end: float
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    measured_end: float = 0.0  # window_end, or when a stop came first
    backlog_at_end: int = 0
    drained: bool = False  # every request of the window settled before a stop


async def _tick_until(pool: _Pool, until: float, stop: threading.Event | None, done: bool = False) -> bool:
    """Enforce timeouts every TICK_S until `until`; False if `stop` was set. With `done`, also end
    as soon as no counted request is outstanding."""
    while True:
        now = time.perf_counter()
        if stop is not None and stop.is_set():
            return False
        if now >= until or (done and not pool.outstanding()):
            return True
        pool.expire(now)
        await asyncio.sleep(max(0.0, min(now + TICK_S, until) - time.perf_counter()))


async def _drive(pool: _Pool, sched: _Scheduler, clock: _Clock, stop: threading.Event | None) -> None:
    sched.fire()
    if await _tick_until(pool, clock.window_start, stop):
        clock.cpu_start = time.thread_time()
        finished = await _tick_until(pool, clock.window_end, stop)
        # The window is the span of intended starts it counts, however late this wake-up is.
        clock.measured_end, clock.cpu_end = min(time.perf_counter(), clock.window_end), time.thread_time()
        clock.backlog_at_end = pool.in_flight()
        sched.cancel()
        if finished:
            # Settle the window's requests: each has at most timeout_s from its intended start.
            until = clock.window_end + pool.timeout_s + TICK_S
            clock.drained = await _tick_until(pool, until, stop, done=True)
    else:
        clock.window_start = clock.measured_end = time.perf_counter()


async def _run(
    specs: Sequence[RequestSpec],
    rate_rps: float,
    duration_s: float,
    arrival: Arrival,
    options: _Options,
    stop: threading.Event | None,
    live: LiveCount | None,
) -> OpenLoopResult:
    pool = _Pool(encode_targets(specs), options.max_in_flight, options.timeout_s)
    if live is not None:
        live.watch(pool.counts)
    t0 = time.perf_counter()
    clock = _Clock(t0 + options.warmup_s, t0 + options.warmup_s + duration_s)
    sched = _Scheduler(
        pool, _offsets(rate_rps, arrival, options.seed), t0, (clock.window_start, clock.window_end)
    )
    try:
        await _drive(pool, sched, clock, stop)
    finally:
        sched.cancel()
        pool.running = False
        ages = in_flight_ages(pool.outstanding(), time.perf_counter(), pool.timeout_s, pool.counts)
        await teardown(list(pool.conns), list(pool.tasks))
    return _result(pool, rate_rps, arrival, clock, tuple(ages))


def _result(
    pool: _Pool, rate_rps: float, arrival: str, clock: _Clock, ages: tuple[float, ...]
) -> OpenLoopResult:
    counts = pool.counts
    histogram = LatencyHistogram.of(counts.latencies)
    return OpenLoopResult(
        target_rps=rate_rps,
        arrival=arrival,
        duration_s=max(0.0, clock.measured_end - clock.window_start),
        intended_starts=pool.scheduled,
        sent=pool.sent,
        latencies_ms=tuple(counts.latencies),
        histogram=histogram,
        percentiles_ms=histogram.percentiles(),
        status_counts=MappingProxyType(dict(counts.statuses)),
        errors_by_kind=MappingProxyType(dict(counts.errors)),
        late_starts=pool.late,
        dropped_starts=pool.dropped,
        mean_start_lag_ms=round(pool.lag_sum / pool.sent * 1000.0, 3) if pool.sent else 0.0,
        max_start_lag_ms=round(pool.lag_max * 1000.0, 3),
        in_flight_at_end=len(ages),
        in_flight_ages_ms=ages,
        connections_opened=pool.opened,
        client_cpu_s=max(0.0, clock.cpu_end - clock.cpu_start),
        retry_after_s=counts.retry_after,
        window_start=clock.window_start,
        window_end=clock.measured_end,
        served_in_window=sum(1 for t in pool.ends if clock.window_start <= t <= clock.measured_end),
        backlog_at_end=clock.backlog_at_end,
        drain_s=max(0.0, pool.settled_at - clock.window_end) if clock.drained else None,
        **_segments(pool, clock),
    )


def _segments(pool: _Pool, clock: _Clock) -> dict[str, LatencyHistogram]:
    """The latencies of the requests intended in the window's first and last SEGMENT_S."""
    start, end = clock.window_start, clock.measured_end
    seg = min(SEGMENT_S, (end - start) / 4)
    first = [lat for lat, t in zip(pool.counts.latencies, pool.intended, strict=True) if t < start + seg]
    last = [lat for lat, t in zip(pool.counts.latencies, pool.intended, strict=True) if t >= end - seg]
    return {"first_segment": LatencyHistogram.of(first), "last_segment": LatencyHistogram.of(last)}


@dataclass(frozen=True)
class _Options:
    max_in_flight: int
    timeout_s: float
    warmup_s: float
    seed: int


def run_open_loop(
    specs: RequestSpec | Sequence[RequestSpec],
    rate_rps: float,
    duration_s: float,
    *,
    arrival: Arrival = "constant",
    max_in_flight: int = 256,
    timeout_s: float | None = None,
    warmup_s: float = 0.5,
    seed: int = 0,
    stop: threading.Event | None = None,
    live: LiveCount | None = None,
) -> OpenLoopResult:
    """Start requests at `rate_rps` for warmup_s + duration_s and report the window's requests.

    Several specs make a mix, sent in turn. At most `max_in_flight` requests are outstanding (and
    as many connections open): a start beyond it is dropped and counted, never queued.
    `timeout_s` (default: the specs' largest) runs from each request's intended start. Blocks
    for at most warmup_s + duration_s + timeout_s + TEARDOWN_GRACE_S, on a thread of its own like
    run_burst.
    """
    _check_rate(rate_rps, arrival)
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be >= 1")
    spec_list = [specs] if isinstance(specs, RequestSpec) else list(specs)
    if not spec_list:
        raise ValueError("at least one request spec is needed")
    options = _Options(
        max_in_flight=max_in_flight,
        timeout_s=max(s.timeout_s for s in spec_list) if timeout_s is None else timeout_s,
        warmup_s=warmup_s,
        seed=seed,
    )
    return run_on_thread(
        lambda: _run(spec_list, rate_rps, duration_s, arrival, options, stop, live), "fastapi-tune-openloop"
    )
