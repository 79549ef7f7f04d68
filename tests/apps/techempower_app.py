"""A TechEmpower-style FastAPI app (the shape of the FrameworkBenchmarks FastAPI entry) on PostgreSQL.

The six test types over one asyncpg pool: /json, /db (one random row), /queries?queries=N, /fortunes
(HTML), /updates?queries=N, /plaintext. Async throughout, every query through the pool: it degrades
under overload (requests wait for a pool connection) but never deadlocks, so the overload step must
report no collapse and `recommend` must write no cap. Configured by PG_DSN (libpq form, required)
and POOL_SIZE (min = max; 10 by default).
"""

from __future__ import annotations

import html
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

POOL_SIZE: Final = int(os.environ.get("POOL_SIZE", "10"))
WORLD_ROWS: Final = 10_000
READ_ROW: Final = 'SELECT "id", "randomnumber" FROM "world" WHERE id = $1'
WRITE_ROW: Final = 'UPDATE "world" SET "randomnumber" = $1 WHERE id = $2'
FORTUNES: Final = ["fortune: No such file or directory", "A computer scientist is someone who fixes things"]
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS world (id integer PRIMARY KEY, randomnumber integer NOT NULL);
CREATE TABLE IF NOT EXISTS fortune (id integer PRIMARY KEY, message text NOT NULL);
"""


async def _seed(conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
    """The tables and their rows, once (workers start together: a lock keeps them from racing)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(424242)")
        await conn.execute(SCHEMA)
        if await conn.fetchval("SELECT count(*) FROM world") == 0:
            rows = [(i, random.randint(1, WORLD_ROWS)) for i in range(1, WORLD_ROWS + 1)]
            await conn.copy_records_to_table("world", records=rows)
            await conn.copy_records_to_table("fortune", records=list(enumerate(FORTUNES, 1)))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with asyncpg.create_pool(os.environ["PG_DSN"], min_size=POOL_SIZE, max_size=POOL_SIZE) as pool:
        async with pool.acquire() as conn:
            await _seed(conn)
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _row(row: asyncpg.Record | None) -> asyncpg.Record:
    """Every id in 1..WORLD_ROWS exists (seeded at start-up)."""
    assert row is not None
    return row


def _count(queries: str | None) -> int:
    """TechEmpower's rule: a missing or bad count is 1, and it is clamped to 1..500."""
    try:
        n = int(queries or 1)
    except ValueError:
        return 1
    return min(max(n, 1), 500)


@app.get("/json")
async def json_serialization() -> dict[str, str]:
    return {"message": "Hello, world!"}


@app.get("/db")
async def single_query(request: Request) -> dict[str, int]:
    async with _pool(request).acquire() as conn:
        row = _row(await conn.fetchrow(READ_ROW, random.randint(1, WORLD_ROWS)))
    return {"id": row[0], "randomNumber": row[1]}


@app.get("/queries")
async def multiple_queries(request: Request, queries: str | None = None) -> list[dict[str, int]]:
    ids = [random.randint(1, WORLD_ROWS) for _ in range(_count(queries))]
    async with _pool(request).acquire() as conn:
        statement = await conn.prepare(READ_ROW)
        rows = [_row(await statement.fetchrow(i)) for i in ids]
    return [{"id": r[0], "randomNumber": r[1]} for r in rows]


@app.get("/fortunes")
async def fortunes(request: Request) -> HTMLResponse:
    async with _pool(request).acquire() as conn:
        rows = [(r[0], r[1]) for r in await conn.fetch('SELECT "id", "message" FROM "fortune"')]
    rows.append((0, "Additional fortune added at request time."))
    rows.sort(key=lambda r: r[1])
    cells = "".join(f"<tr><td>{i}</td><td>{html.escape(m)}</td></tr>" for i, m in rows)
    head = "<!DOCTYPE html><html><head><title>Fortunes</title></head>"
    return HTMLResponse(f"{head}<body><table>{cells}</table></body></html>")


@app.get("/updates")
async def updates(request: Request, queries: str | None = None) -> list[dict[str, int]]:
    ids = sorted(random.sample(range(1, WORLD_ROWS + 1), _count(queries)))
    async with _pool(request).acquire() as conn:
        statement = await conn.prepare(READ_ROW)
        worlds = [{"id": i, "randomNumber": _row(await statement.fetchrow(i))[1]} for i in ids]
        for w in worlds:
            w["randomNumber"] = random.randint(1, WORLD_ROWS)
        await conn.executemany(WRITE_ROW, [(w["randomNumber"], w["id"]) for w in worlds])
    return worlds


@app.get("/plaintext")
async def plaintext() -> PlainTextResponse:
    return PlainTextResponse(b"Hello, world!")
