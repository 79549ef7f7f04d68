"""A generated app as wide as a real one: 60 measurable GET routes of four kinds, plus what a real
app's document also holds (136 POST routes, routes behind auth, ids the probe cannot guess).

For the terminal report's tests: the screen must scale with the routes (issue 30).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Header, HTTPException

app = FastAPI()

MEASURED: Final = 60  # GET routes that answer: 15 of each kind below
UNSAFE: Final = 136  # POST routes: skipped unless named
PRIVATE: Final = 5  # GET routes answering 401 without a token
UNKNOWN_IDS: Final = 6  # GET routes answering 404 for a made-up id
SERVICE_MS: Final = 4.0


def _burn(ms: float) -> None:
    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass


async def _io() -> dict[str, str]:
    await asyncio.sleep(SERVICE_MS / 1000)
    return {"kind": "io-bound"}


async def _cpu() -> dict[str, str]:
    _burn(SERVICE_MS)
    return {"kind": "cpu-bound"}


async def _loop() -> dict[str, str]:
    time.sleep(SERVICE_MS / 1000)
    return {"kind": "loop-blocking"}


def _thread() -> dict[str, str]:
    time.sleep(SERVICE_MS / 1000)
    return {"kind": "threadpool"}


KINDS: Final[tuple[tuple[str, Callable[[], Any]], ...]] = (
    ("io", _io),
    ("cpu", _cpu),
    ("loop", _loop),
    ("thread", _thread),
)


def _token(authorization: Annotated[str | None, Header()] = None) -> None:
    if authorization != "Bearer ok":
        raise HTTPException(status_code=401, detail="not authenticated")


async def _created() -> dict[str, str]:
    return {"created": "yes"}


async def _item(item_id: int) -> dict[str, int]:
    if item_id != 12345:  # the probe makes up 1: a real app's 404
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id}


for i in range(MEASURED):
    name, handler = KINDS[i % len(KINDS)]
    app.add_api_route(f"/api/v1/{name}/resource{i}", handler, methods=["GET"], name=f"{name}_{i}")
for i in range(UNSAFE):
    app.add_api_route(f"/api/v1/things{i}", _created, methods=["POST"], name=f"create_{i}")
for i in range(PRIVATE):
    app.add_api_route(
        f"/api/v1/private{i}", _io, methods=["GET"], name=f"private_{i}", dependencies=[Depends(_token)]
    )
for i in range(UNKNOWN_IDS):
    app.add_api_route(f"/api/v1/items{i}/{{item_id}}", _item, methods=["GET"], name=f"item_{i}")
