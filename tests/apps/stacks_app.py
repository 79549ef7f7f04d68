"""A FastAPI app with one route of each kind, for the stack-sampling tests (tests/test_stacks*.py).

Line numbers matter: the tests look for the line of each blocking call in the sampled stacks.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from fastapi import FastAPI

app = FastAPI()


def hash_rounds(n: int) -> str:
    """CPU work that holds the GIL: repeated sha256 over a small buffer."""
    digest = b"fastapi-tune"
    for _ in range(n):
        digest = hashlib.sha256(digest * 64).digest()
    return digest.hex()


@app.get("/cpu")
async def cpu_route(n: int = 2000) -> dict[str, str]:
    return {"digest": hash_rounds(n)}


@app.get("/loop")
async def loop_route() -> dict[str, str]:
    time.sleep(0.03)  # blocks the event loop
    return {"kind": "loop-blocking"}


@app.get("/threadpool")
def threadpool_route() -> dict[str, str]:
    time.sleep(0.05)  # blocks one AnyIO worker thread
    return {"kind": "threadpool-bound"}


@app.get("/io")
async def io_route() -> dict[str, str]:
    await asyncio.sleep(0.04)
    return {"kind": "io-bound"}
