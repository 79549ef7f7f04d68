"""An async FastAPI app on a real PostgreSQL through an asyncpg pool, like the realworld example app.

Configured by environment variables: PG_DSN (libpq form, required), POOL_SIZE (min = max, 10 as in
nsidnev/fastapi-realworld-example-app). Each route's docstring names the class a probe should find.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
from fastapi import FastAPI, Request

POOL_SIZE: Final = int(os.environ.get("POOL_SIZE", "10"))
# Server-side wait per /sleep request: long next to the app's own per-request CPU (~1 ms), so the
# pool, not the CPU, is what caps throughput (at POOL_SIZE / 0.02 s).
SLEEP_S: Final = 0.02
# CPU per /cpu request: several times the database round trip, so the CPU dominates.
CPU_S: Final = 0.01


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with asyncpg.create_pool(os.environ["PG_DSN"], min_size=POOL_SIZE, max_size=POOL_SIZE) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _burn(seconds: float) -> None:
    """Spin the CPU (holding the GIL) for `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@app.get("/sleep")
async def sleep(request: Request) -> dict[str, str]:
    """pool-bound: holds a pool connection across a 20 ms server-side wait; throughput plateaus
    near POOL_SIZE / 0.02 s per worker while the app's CPU stays low."""
    async with _pool(request).acquire() as conn:
        await conn.execute(f"SELECT pg_sleep({SLEEP_S})")
    return {"kind": "pool-bound"}


@app.get("/db")
async def db(request: Request) -> dict[str, int]:
    """io-bound: a cheap `SELECT 1`; the connection is held for one short round trip, so the pool
    is rarely the limit and latency stays flat until the app's CPU is."""
    value: int = await _pool(request).fetchval("SELECT 1")
    return {"value": value}


@app.get("/cpu")
async def cpu(request: Request) -> dict[str, int]:
    """cpu-bound: a cheap query, then ~10 ms of Python CPU on the event loop; plateaus near
    workers / 10 ms with a busy core per worker."""
    value: int = await _pool(request).fetchval("SELECT 1")
    _burn(CPU_S)
    return {"value": value}


@app.get("/health")
async def health() -> dict[str, str]:
    """io-bound (trivially): no database at all."""
    return {"status": "ok"}
