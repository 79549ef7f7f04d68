"""An async route capped by a semaphore (a downstream pool of `limit` connections, say): its curve
bends at c=limit while the server's CPU idles. At limit=80 the knee sits where two workers' thread
limiters would (2 x 40): only the server's worker count tells the two apart."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

app = FastAPI()
_LIMITS: dict[int, asyncio.Semaphore] = {}


@app.get("/capped")
async def capped(ms: float = 500.0, limit: int = 80) -> dict[str, int]:
    gate = _LIMITS.setdefault(limit, asyncio.Semaphore(limit))
    async with gate:
        await asyncio.sleep(ms / 1000)
    return {"limit": limit}
