"""Tiny app that tests/test_loadgen.py serves with a real uvicorn to exercise the load generator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/ok")
async def ok() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/fail")
async def fail() -> Response:
    return Response(content=b"boom", status_code=500)


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk-{i}\n".encode()

    # No Content-Length, so uvicorn frames the body with Transfer-Encoding: chunked.
    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/close")
async def close() -> Response:
    return Response(content=b"bye", headers={"Connection": "close"})


@app.get("/slow")
async def slow() -> dict[str, str]:
    await asyncio.sleep(5)
    return {"status": "late"}


@app.get("/limited")
async def limited() -> Response:
    return Response(content=b"later", status_code=429, headers={"Retry-After": "7"})
