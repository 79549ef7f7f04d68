"""A FastAPI app with one route of each kind classify() tells apart, for integration tests.

Each route takes `ms`, its service time in milliseconds.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI

app = FastAPI()


def _burn(ms: float) -> None:
    """Spin the CPU (holding the GIL) for `ms` milliseconds of process CPU time."""
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass


@app.get("/io")
async def io_bound(ms: float = 40.0) -> dict[str, str]:
    """Awaits: latency stays flat as concurrency rises."""
    await asyncio.sleep(ms / 1000)
    return {"kind": "io-bound"}


@app.get("/cpu")
async def cpu_bound(ms: float = 20.0) -> dict[str, str]:
    """Computes: one request per worker at a time, one core each."""
    _burn(ms)
    return {"kind": "cpu-bound"}


@app.get("/loop")
async def loop_blocking(ms: float = 30.0) -> dict[str, str]:
    """A blocking call inside `async def`: serialised like CPU work, but the CPU idles."""
    time.sleep(ms / 1000)
    return {"kind": "loop-blocking"}


@app.get("/threadpool")
def threadpool_bound(ms: float = 40.0) -> dict[str, str]:
    """A `def` route blocking in AnyIO's thread pool: flat until 40 requests per worker."""
    time.sleep(ms / 1000)
    return {"kind": "threadpool-bound"}
