"""Tiny FastAPI app that benchmarks/openloop.py serves: with one uvicorn worker for the open loop
alone, and under gunicorn (one uvicorn worker, the same config for k6 and `verify --rate`)."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/trivial")
async def trivial() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/sleep20")
async def sleep20() -> dict[str, str]:
    await asyncio.sleep(0.02)
    return {"status": "ok"}


@app.get("/cpu10")
async def cpu10() -> dict[str, str]:
    """~10 ms of the process's CPU (holding the GIL): one worker serves ~100 req/s on an idle core."""
    end = time.process_time() + 0.010
    while time.process_time() < end:
        pass
    return {"status": "ok"}
