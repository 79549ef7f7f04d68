"""A sync FastAPI app on a real PostgreSQL through SQLAlchemy (psycopg), shaped like
fastapi/full-stack-fastapi-template: `def` routes, a Session from a sync dependency, the default
QueuePool (5 + overflow 10) and AnyIO's 40 threads.

Configured by environment variables: PG_DSN (libpq form, required), POOL_TIMEOUT (seconds a request
waits for a pooled connection, SQLAlchemy's default 30). Each route's docstring names the class a
probe should find.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated, Final

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

POOL_TIMEOUT: Final = float(os.environ.get("POOL_TIMEOUT", "30"))
# Server-side wait per request: long next to the app's own CPU, so connections are what runs out.
SLEEP_S: Final = 0.02

# The default pool on purpose (pool_size 5, max_overflow 10): what the template ships.
engine = create_engine(
    os.environ["PG_DSN"].replace("postgresql://", "postgresql+psycopg://", 1), pool_timeout=POOL_TIMEOUT
)
app = FastAPI()


class Slept(BaseModel):
    slept_s: float


def get_session() -> Iterator[Session]:
    """The template's dependency: one Session per request, open until the response is built."""
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(session: SessionDep) -> int:
    """The template's CurrentUser: a lookup through the request's session, in a thread of its own."""
    user_id: int = session.execute(text("SELECT 1")).scalar_one()
    return user_id


CurrentUser = Annotated[int, Depends(get_current_user)]


@app.get("/items")
def items() -> Slept:
    """pool-bound: a `def` route holding a connection only across its 20 ms query; 15 connections
    (5 + overflow 10) cap it below AnyIO's 40 threads, near 15 / 0.02 s per worker."""
    with engine.connect() as conn:
        conn.execute(text(f"SELECT pg_sleep({SLEEP_S})"))
    return Slept(slept_s=SLEEP_S)


@app.get("/stall")
def stall(session: SessionDep, user: CurrentUser) -> Slept:
    """pool-bound, then deadlocked (fastapi#3205): the session keeps its connection until the
    dependency exits, after the response model is validated, which for a `def` route takes one of
    the 40 threads, and after CurrentUser took the connection the route needs a thread too. With
    enough requests per worker, 40 threads wait for the 15 connections and the 15 holders wait for
    a thread: 0 completions and 0 errors until POOL_TIMEOUT, then 500s (`QueuePool limit of size 5
    overflow 10 reached`). Measured with 1 worker: 50 concurrent requests still flow (~340 req/s),
    60 stall at once, every time."""
    session.execute(text(f"SELECT pg_sleep({SLEEP_S})"))
    return Slept(slept_s=SLEEP_S)
