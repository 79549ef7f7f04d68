"""Tiny FastAPI app that benchmarks/openloop.py serves with one uvicorn worker."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

app = FastAPI()


@app.get("/trivial")
async def trivial() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/sleep20")
async def sleep20() -> dict[str, str]:
    await asyncio.sleep(0.02)
    return {"status": "ok"}
