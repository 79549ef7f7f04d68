"""fastapi/fastapi#3205 in its plain form: `def` routes, a yield-dependency session, a SQLAlchemy
QueuePool of 10 without overflow, on a SQLite file.

Each request's session holds its connection until the dependency exits, and that happens after the
response model is validated, which for a `def` route takes one of AnyIO's 40 threads. With more
requests in flight than the pool and the threads can pass, 40 threads wait in `QueuePool._do_get`
for the 10 connections and the 10 holders wait for a thread: nothing completes and nothing fails
until the pool timeout (POOL_TIMEOUT, default 30 s). DB_FILE names the database (default: a file
in the temp directory, filled once).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Final

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

POOL_TIMEOUT: Final = float(os.environ.get("POOL_TIMEOUT", "30"))
DB_FILE: Final = Path(
    os.environ.get("DB_FILE") or Path(tempfile.gettempdir()) / "fastapi-tune-collapse-plain.sqlite"
)
ROWS: Final = 50

engine = create_engine(
    f"sqlite:///{DB_FILE}", poolclass=QueuePool, pool_size=10, max_overflow=0, pool_timeout=POOL_TIMEOUT
)
with engine.begin() as setup:
    setup.execute(text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)"))
    # Ids given, so that workers starting together fill it once.
    setup.execute(
        text("INSERT OR IGNORE INTO items (id, name) VALUES (:id, :name)"),
        [{"id": i, "name": f"item {i}"} for i in range(1, ROWS + 1)],
    )

app = FastAPI()


class Item(BaseModel):
    id: int
    name: str


def get_db() -> Iterator[Session]:
    """The dependency from the issue: a session per request, closed when the dependency exits."""
    db = Session(engine)
    try:
        yield db
    finally:
        db.close()


DbDep = Annotated[Session, Depends(get_db)]


@app.get("/items")
def list_items(db: DbDep) -> list[Item]:
    return [Item(id=r.id, name=r.name) for r in db.execute(text("SELECT id, name FROM items LIMIT 20"))]


@app.get("/items/{item_id}")
def read_item(item_id: int, db: DbDep) -> Item:
    row = db.execute(text("SELECT id, name FROM items WHERE id = :i"), {"i": item_id}).first()
    if row is None:
        raise HTTPException(404)
    return Item(id=row.id, name=row.name)
