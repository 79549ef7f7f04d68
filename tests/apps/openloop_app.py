"""Tiny app that tests/test_openloop.py serves with a real uvicorn to exercise the open loop."""

from __future__ import annotations

import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/ok")
async def ok() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/block")
async def block() -> dict[str, str]:
    # Blocks the event loop on purpose: one worker serves ~50 req/s, whatever the load.
    time.sleep(0.02)
    return {"status": "ok"}
