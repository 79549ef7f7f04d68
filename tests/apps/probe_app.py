"""An app with the routes the probe's discovery and fault handling must cope with."""

from __future__ import annotations

import asyncio
import os
from enum import StrEnum

from fastapi import FastAPI, Header, HTTPException, Response
from pydantic import BaseModel

app = FastAPI()


class Colour(StrEnum):
    red = "red"
    blue = "blue"


class Item(BaseModel):
    name: str


@app.get("/fast")
async def fast() -> dict[str, bool]:
    await asyncio.sleep(0.005)
    return {"ok": True}


@app.get("/items/{item_id}")
async def item(item_id: int, colour: Colour, limit: int = 10) -> dict[str, int | str]:
    """Needs a path parameter and a required enum query parameter."""
    return {"item_id": item_id, "colour": colour.value, "limit": limit}


@app.get("/search")
async def search(q: str, page: int = 1) -> dict[str, str]:
    return {"q": q}


@app.post("/items")
async def create(item: Item) -> Item:
    return item


@app.get("/broken")
async def broken() -> dict[str, str]:
    raise HTTPException(status_code=500, detail="always broken")


@app.get("/private")
async def private(authorization: str = Header(default="")) -> dict[str, str]:
    if authorization != "Bearer s3cret-token":
        raise HTTPException(status_code=401, detail="no")
    return {"ok": "yes"}


@app.get("/limited")
async def limited() -> Response:
    return Response(b"slow down", status_code=429, headers={"Retry-After": "3"})


@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(3)
    return {"ok": "late"}


@app.get("/die", include_in_schema=False)
async def die() -> dict[str, str]:
    """Kills the whole server: for the 'server died mid-probe' test only."""
    os._exit(1)
