"""Routes that answer badly to a made-up first request: auth, unknown ids, validation, failures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel

app = FastAPI()
ITEMS = {7: "seven", 9: "nine"}
TOKEN = "s3cret-token"


def bearer(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
) -> str:
    if creds is None or creds.credentials != TOKEN:
        raise HTTPException(status_code=401, detail="not authenticated")
    return creds.credentials


def _not_test(value: str) -> str:
    if value == "test":
        raise ValueError("'test' is not a real name")
    return value


class Order(BaseModel):
    name: Annotated[str, AfterValidator(_not_test)]


@app.get("/items/")
async def list_items() -> list[dict[str, int | str]]:
    return [{"id": k, "name": v} for k, v in ITEMS.items()]


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int | str]:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail="no such item")
    return {"id": item_id, "name": ITEMS[item_id]}


@app.get("/users/{user_id}")
async def get_user(user_id: int) -> dict[str, int]:
    if user_id != 42:
        raise HTTPException(status_code=404, detail="no such user")
    return {"id": user_id}


@app.get("/secure")
async def secure(token: Annotated[str, Depends(bearer)]) -> dict[str, bool]:
    return {"ok": True}


@app.post("/orders")
async def orders(order: Order) -> Order:
    return order


@app.get("/boom")
async def boom() -> dict[str, str]:
    raise HTTPException(status_code=500, detail="database is down")


@app.get("/moved")
async def moved() -> RedirectResponse:
    return RedirectResponse("/items/")


@app.get("/deep.json", include_in_schema=False)
async def deep() -> Response:
    """Nested past what a JSON reader recurses through: the document reader must not crash."""
    return Response("[" * 100_000 + "]" * 100_000, media_type="application/json")
