"""Routes that take secrets in the URL, as real APIs still do, and one that quotes its input back."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()


class Login(BaseModel):
    username: str
    password: str


@app.get("/x")
async def x(api_key: str = "") -> dict[str, bool]:
    return {"ok": bool(api_key)}


@app.get("/items/{item_id}")
async def item(item_id: int, token: str = "") -> dict[str, int]:
    return {"item_id": item_id}


@app.get("/echo")
async def echo(token: str = "") -> dict[str, str]:
    """Fails quoting what it was given, as careless error pages do."""
    raise HTTPException(status_code=500, detail=f"token {token} is not valid")


@app.post("/login")
async def login(body: Login) -> dict[str, str]:
    return {"user": body.username}
