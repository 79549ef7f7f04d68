"""Eight cheap routes, declared in an order that the access logs' traffic does not follow."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


def _route(path: str) -> None:
    async def handler() -> dict[str, str]:
        return {"route": path}

    app.get(path, name=path)(handler)


for _path in ("/a", "/b", "/c", "/d", "/e", "/f", "/g"):
    _route(_path)


@app.get("/orders/{oid}")
async def order(oid: int) -> dict[str, int]:
    return {"oid": oid}
