"""Tiny FastAPI app that benchmarks/fidelity.py serves with one uvicorn worker."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

app = FastAPI()


@app.get("/trivial")
async def trivial() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/sleep")
async def sleep() -> dict[str, str]:
    await asyncio.sleep(0.04)
    return {"status": "ok"}
