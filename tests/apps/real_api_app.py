"""A hand-written API of the kind the probe meets in the wild, on a real PostgreSQL (PG_DSN).

POST /login hashes a password (an app's usual CPU hog); /me needs a bearer token (TOKEN, default
"s3cret"); /items/{item_id} answers 404 for a made-up id and has a list route to take a real one
from; /orders waits on an asyncpg pool (POOL_SIZE, default 5); /stall is the sync-dependency
deadlock of full-stack-fastapi-template (see pg_sync_app.py), mounted under the same app.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Final

import asyncpg
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, Field

from tests.apps import pg_sync_app

POOL_SIZE: Final = int(os.environ.get("POOL_SIZE", "5"))
TOKEN: Final = os.environ.get("TOKEN", "s3cret")
ITEMS: Final = {17: "lamp", 23: "desk"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with asyncpg.create_pool(os.environ["PG_DSN"], min_size=POOL_SIZE, max_size=POOL_SIZE) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)


class Login(BaseModel):
    username: str = Field(min_length=3, max_length=32)
    password: str = Field(min_length=8)


def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    if authorization != f"Bearer {TOKEN}":
        raise HTTPException(status_code=401, detail="not authenticated")
    return "alice"


@app.post("/login")
def login(body: Login) -> dict[str, str]:
    """cpu-bound: PBKDF2 in a `def` route, as a login does (threads do not help under the GIL)."""
    digest = hashlib.pbkdf2_hmac("sha256", body.password.encode(), body.username.encode(), 20_000)
    return {"token": digest.hex()[:16]}


@app.get("/me")
async def me(user: Annotated[str, Depends(bearer)]) -> dict[str, str]:
    """io-bound once authenticated; 401 without the header."""
    return {"user": user}


@app.get("/items/")
async def list_items() -> list[dict[str, int | str]]:
    return [{"id": k, "name": v} for k, v in ITEMS.items()]


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int | str]:
    """io-bound for a real id; 404 for a made-up one."""
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id, "name": ITEMS[item_id]}


@app.get("/orders")
async def orders(request: Request) -> dict[str, int]:
    """pool-bound: holds one of POOL_SIZE connections across a 20 ms server-side wait."""
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_sleep(0.02)")
    return {"orders": 3}


app.add_api_route("/stall", pg_sync_app.stall, methods=["GET"], response_model=pg_sync_app.Slept)
