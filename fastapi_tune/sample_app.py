"""The sample app `fastapi-tune demo` serves: one route of each kind fastapi-tune tells apart.

Run it yourself with `uvicorn fastapi_tune.sample_app:app` (needs the `demo` extra).
Service times are long enough that one worker on a 2-core machine is limited by the route's
nature, not by the server's per-request overhead (~0.2 ms): that is what makes each kind show.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from fastapi import FastAPI, HTTPException

IO_WAIT_S: Final = 0.1
THREADPOOL_WAIT_S: Final = 0.1
LOOP_BLOCK_S: Final = 0.02
# About 15-25 ms of pure-Python work on this project's machines; counted in iterations, not
# time, so a slower machine shows a slower route rather than a different kind.
CPU_ITERATIONS: Final = 200_000

app = FastAPI(title="fastapi-tune sample app", version="1.0")


@app.get("/orders/{order_id}")
async def get_order(order_id: int) -> dict[str, int | str]:
    """io-bound: awaits a (simulated) database without holding the event loop."""
    await asyncio.sleep(IO_WAIT_S)
    return {"order_id": order_id, "status": "shipped"}


@app.get("/report")
def get_report() -> dict[str, str]:
    """threadpool-bound: a `def` route doing blocking I/O, run on AnyIO's 40-thread limiter."""
    time.sleep(THREADPOOL_WAIT_S)
    return {"report": "ready"}


@app.get("/inventory")
async def get_inventory() -> dict[str, int]:
    """loop-blocking: a blocking call inside `async def` stalls every request on this worker."""
    time.sleep(LOOP_BLOCK_S)  # the bug fastapi-tune finds: a sync driver call in async code
    return {"items": 42}


@app.get("/score")
async def get_score(user: str = "alice") -> dict[str, int | str]:
    """cpu-bound: pure-Python work holds the worker's only core."""
    total = 0
    for i in range(CPU_ITERATIONS):
        total = (total + i * i) % 1_000_003
    return {"user": user, "score": total}


@app.post("/orders")
async def create_order() -> dict[str, str]:
    """Not probed by default: POST is not a safe method."""
    raise HTTPException(status_code=501, detail="the demo does not create orders")
