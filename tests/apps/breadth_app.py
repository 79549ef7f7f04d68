"""A generated app of many routes of known kinds, for the breadth tests and benchmarks/breadth.py.

`FASTAPI_TUNE_BREADTH` = "ROUTES:SEED" (default "24:1") picks how many routes and the random service
times; `routes(n, seed)` gives the same list with each route's label, so a test or the benchmark
knows what the probe should say without reading this file. Kinds, in turn:

- io: `await asyncio.sleep` in `async def` -> io-bound
- threadpool: `time.sleep` in a `def` route (AnyIO's 40 threads) -> threadpool-bound
- loop: `time.sleep` inside `async def` (blocks the event loop) -> loop-blocking
- cpu: pure-Python work in `async def` -> cpu-bound
- trivial: returns a constant; only the framework's own CPU work -> cpu-bound

As many routes of each kind (within one), in an order shuffled by the seed.

Every third route takes a path id (`/io/3/{item_id}`), so discovery fills one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI

KINDS: Final = ("io", "threadpool", "loop", "cpu", "trivial")
LABELS: Final = {
    "io": "io-bound",
    "threadpool": "threadpool-bound",
    "loop": "loop-blocking",
    "cpu": "cpu-bound",
    "trivial": "cpu-bound",
}
# Service times (ms) in ranges real routes have; a `def` route shorter than ~20 ms on one worker is
# capped by the framework's CPU (~0.3 ms per thread hand-off) before the 40 threads, so it starts there.
RANGES_MS: Final = {
    "io": (5.0, 150.0),
    "threadpool": (20.0, 150.0),
    "loop": (5.0, 40.0),
    "cpu": (2.0, 25.0),
    "trivial": (0.0, 0.0),
}


@dataclass(frozen=True)
class Route:
    path: str  # the OpenAPI path template, as the report keys it
    kind: str
    ms: float

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def routes(n: int, seed: int) -> list[Route]:
    """The app's routes: as many of each kind (within one), shuffled, service times from RANGES_MS."""
    rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    out: list[Route] = []
    for i, kind in enumerate(kinds):
        lo, hi = RANGES_MS[kind]
        ms = round(rng.uniform(lo, hi), 1)
        path = f"/{kind}/{i}" + ("/{item_id}" if i % 3 == 2 else "")
        out.append(Route(path, kind, ms))
    return out


def _burn(ms: float) -> None:
    """Spin the CPU (holding the GIL) for `ms` milliseconds of process CPU time."""
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass


Handler = Callable[..., Any]


def _handler(route: Route) -> Handler:
    seconds = route.ms / 1000
    if route.kind == "io":

        async def io() -> dict[str, str]:
            await asyncio.sleep(seconds)
            return {"kind": "io"}

        return io
    if route.kind == "threadpool":

        def threadpool() -> dict[str, str]:
            time.sleep(seconds)
            return {"kind": "threadpool"}

        return threadpool
    if route.kind == "loop":

        async def loop() -> dict[str, str]:
            time.sleep(seconds)  # blocks the event loop
            return {"kind": "loop"}

        return loop
    if route.kind == "cpu":

        async def cpu() -> dict[str, str]:
            _burn(route.ms)
            return {"kind": "cpu"}

        return cpu

    async def trivial() -> dict[str, str]:
        return {"kind": "trivial"}

    return trivial


def _with_id(handler: Handler) -> Handler:
    """The same handler taking an `item_id` path parameter."""
    if asyncio.iscoroutinefunction(handler):
        run = handler

        async def with_id_async(item_id: int) -> Any:
            return await run()

        return with_id_async

    def with_id(item_id: int) -> Any:
        return handler()

    return with_id


def build(n: int, seed: int) -> FastAPI:
    """The FastAPI app serving routes(n, seed)."""
    application = FastAPI(title=f"breadth app ({n} routes, seed {seed})")
    for i, route in enumerate(routes(n, seed)):
        handler = _handler(route)
        if "{item_id}" in route.path:
            handler = _with_id(handler)
        application.add_api_route(route.path, handler, methods=["GET"], name=f"route_{i}")
    return application


def _from_env() -> tuple[int, int]:
    text = os.environ.get("FASTAPI_TUNE_BREADTH", "24:1")
    n, _, seed = text.partition(":")
    return int(n), int(seed or 1)


app = build(*_from_env())
