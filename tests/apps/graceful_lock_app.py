"""An app that degrades gracefully under a burst: async routes, every query behind one asyncio.Lock
on one SQLite connection driven from a thread of its own (aiosqlite's shape, without the package).

Past its knee requests only queue on the lock: latency grows with the queue, goodput stays (FIELD-
NOTES, "Overload": such an app held at c=64 within 3% of c=4). The overload step must not call that
a collapse, and the plan must not cap it. DB_FILE names the database (default: a file in the temp
directory, filled once).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

DB_FILE: Final = Path(
    os.environ.get("DB_FILE") or Path(tempfile.gettempdir()) / "fastapi-tune-graceful.sqlite"
)
ROWS: Final = 50


class Database:
    """One connection, one thread that runs its calls in order, one lock: aiosqlite's discipline."""

    def __init__(self, path: Path) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        self.conn = self.thread.submit(sqlite3.connect, str(path), check_same_thread=False).result()
        self.lock = asyncio.Lock()

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self.lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.thread, lambda: self.conn.execute(sql, args).fetchall())

    def setup(self) -> None:
        with self.conn:
            self.conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
            self.conn.executemany(
                "INSERT OR IGNORE INTO items (id, name) VALUES (?, ?)",
                [(i, f"item {i}") for i in range(1, ROWS + 1)],
            )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database(DB_FILE)
    await asyncio.get_running_loop().run_in_executor(db.thread, db.setup)
    app.state.db = db
    yield
    db.thread.shutdown(wait=False)


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    id: int
    name: str


@app.get("/items")
async def list_items() -> list[Item]:
    rows = await app.state.db.fetch("SELECT id, name FROM items LIMIT 20")
    return [Item(id=i, name=n) for i, n in rows]


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> Item:
    rows = await app.state.db.fetch("SELECT id, name FROM items WHERE id = ?", item_id)
    if not rows:
        raise HTTPException(404)
    return Item(id=rows[0][0], name=rows[0][1])
