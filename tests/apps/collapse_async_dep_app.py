"""An app that collapses under a burst: sync SQLAlchemy on a SQLite file, QueuePool 5 + 10 overflow,
`def` routes on a yield-dependency session, and an `async def` dependency (the current user) that
queries through that same session on the event loop.

The shape of a real open-source app measured in issue 28 (FIELD-NOTES, "Overload"): at a few
requests in flight it serves hundreds a second; past the pool, the event loop blocks in
`QueuePool._do_get` under the async dependency while the AnyIO threads hold all 15 connections and
wait for the loop to run their session cleanup. Nothing completes, and the server does not answer
again until SQLAlchemy's pool timeout (POOL_TIMEOUT, default 30 s) starts failing the waiters one
by one. DB_FILE names the database (default: a file in the temp directory, filled once).
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
    os.environ.get("DB_FILE") or Path(tempfile.gettempdir()) / "fastapi-tune-collapse-async-dep.sqlite"
)
ROWS: Final = 50

# SQLAlchemy's defaults spelled out: what the app ships.
engine = create_engine(
    f"sqlite:///{DB_FILE}", poolclass=QueuePool, pool_size=5, max_overflow=10, pool_timeout=POOL_TIMEOUT
)
with engine.begin() as setup:
    setup.execute(text("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, owner INTEGER)"))
    # Ids given, so that workers starting together fill it once.
    setup.execute(
        text("INSERT OR IGNORE INTO items (id, name, owner) VALUES (:id, :name, 1)"),
        [{"id": i, "name": f"item {i}"} for i in range(1, ROWS + 1)],
    )
    setup.execute(text("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT)"))
    setup.execute(text("INSERT OR IGNORE INTO users (id, name) VALUES (1, 'admin')"))

app = FastAPI()


class Item(BaseModel):
    id: int
    name: str


def get_session() -> Iterator[Session]:
    """One Session per request, open until the response is built (the app's dependency)."""
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def current_user(session: SessionDep) -> int:
    """The bug: a sync query inside `async def`, on the event loop, through the request's session."""
    user: int | None = session.execute(text("SELECT id FROM users WHERE id = 1")).scalar()
    if user is None:
        raise HTTPException(401)
    return user


CurrentUser = Annotated[int, Depends(current_user)]


@app.get("/items")
def list_items(session: SessionDep, user: CurrentUser) -> list[Item]:
    """The list route: the same session (and connection) the dependency checked out."""
    rows = session.execute(text("SELECT id, name FROM items WHERE owner = :u LIMIT 20"), {"u": user})
    return [Item(id=r.id, name=r.name) for r in rows]


@app.get("/items/{item_id}")
def read_item(item_id: int, session: SessionDep, user: CurrentUser) -> Item:
    row = session.execute(
        text("SELECT id, name FROM items WHERE id = :i AND owner = :u"), {"i": item_id, "u": user}
    ).first()
    if row is None:
        raise HTTPException(404)
    return Item(id=row.id, name=row.name)
