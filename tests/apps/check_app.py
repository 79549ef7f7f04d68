"""The app `check` and `compare` are tested on: three routes, and variants that a pull request might bring.

FASTAPI_TUNE_CHECK_VARIANT picks them (comma-separated, empty: the unchanged app):
- `sleep`: a `time.sleep(0.02)` inside the `async def` route /orders/{order_id} (a blocking call
  slipped into async code);
- `cpu`: /score burns 4x the CPU (this VM's CPU speed alone moves CPU per request by up to x1.77
  between runs, and a 2.5x regression read as little as x1.41 with a busy neighbour: README, `check`);
- `routes`: /report is gone and /health is new.

Line numbers matter: the tests look for the sleep's line in the annotations.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Final

from fastapi import FastAPI

VARIANTS: Final = frozenset(v.strip() for v in os.environ.get("FASTAPI_TUNE_CHECK_VARIANT", "").split(","))
IO_WAIT_S: Final = 0.02
BLOCK_S: Final = 0.02
# About 4 ms of pure-Python work here; counted in iterations so a slower machine is slower, not different.
CPU_ITERATIONS: Final = 40_000
CPU_FACTOR: Final = 4.0 if "cpu" in VARIANTS else 1.0
THREAD_WAIT_S: Final = 0.02

app = FastAPI(title="check app")


@app.get("/orders/{order_id}")
async def get_order(order_id: int) -> dict[str, int]:
    """io-bound: awaits a (simulated) database; the `sleep` variant blocks the loop here."""
    await asyncio.sleep(IO_WAIT_S)
    if "sleep" in VARIANTS:
        time.sleep(BLOCK_S)  # SLEEP_LINE: the blocking call the check must name
    return {"order_id": order_id}


@app.get("/score")
async def get_score() -> dict[str, int]:
    """cpu-bound: pure-Python work on the event loop."""
    total = 0
    for i in range(int(CPU_ITERATIONS * CPU_FACTOR)):
        total = (total + i * i) % 1_000_003
    return {"score": total}


if "routes" not in VARIANTS:

    @app.get("/report")
    def get_report() -> dict[str, str]:
        """A `def` route doing blocking I/O on AnyIO's thread pool."""
        time.sleep(THREAD_WAIT_S)
        return {"report": "ready"}

else:

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The route the `routes` variant adds."""
        return {"status": "ok"}
