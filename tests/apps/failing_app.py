"""Routes that never give a good answer: the probe must still write a report and say why for each."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException

app = FastAPI()


@app.get("/boom")
async def boom() -> dict[str, str]:
    raise HTTPException(status_code=500, detail="database is down")


@app.get("/hang")
async def hang() -> dict[str, str]:
    """Never answers (until the server stops): a deadlock as the client sees it."""
    await asyncio.sleep(3600)
    return {}


@app.get("/secure")
async def secure() -> dict[str, str]:
    raise HTTPException(status_code=401, detail="not authenticated")
