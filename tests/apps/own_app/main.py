"""A small app of one's own, as a new user has it: `main.py` in its directory, served as main:app.

One route awaits (io-bound), one computes (cpu-bound), so `tune` has both kinds to plan from.
"""

from __future__ import annotations

import asyncio
import hashlib

from fastapi import FastAPI

app = FastAPI()


@app.get("/items")
async def items() -> list[dict[str, int]]:
    """Waits on a (simulated) database: the event loop serves others meanwhile."""
    await asyncio.sleep(0.02)
    return [{"id": i} for i in range(3)]


@app.get("/digest")
async def digest() -> dict[str, str]:
    """Hashes in the event loop: a few ms of CPU per request."""
    h = hashlib.sha256()
    for _ in range(100_000):
        h.update(b"fastapi-tune")
    return {"digest": h.hexdigest()}
