"""Routes whose request bodies and parameters fastapi-tune must fill validly from the schema alone."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import IntEnum, StrEnum
from ipaddress import IPv4Address
from typing import Annotated, Literal
from uuid import UUID

from fastapi import Body, FastAPI, Form, Query, UploadFile
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    conint,
    constr,
)

app = FastAPI()
OK = {"ok": True}


class Colour(StrEnum):
    red = "red"
    blue = "blue"


class Level(IntEnum):
    low = 1
    high = 2


class Address(BaseModel):
    street: str
    zip: Annotated[str, StringConstraints(pattern=r"^\d{5}$")]
    country: str = "FR"


class Tag(BaseModel):
    name: constr(min_length=3, max_length=10)  # type: ignore[valid-type]
    weight: conint(ge=10, le=20, multiple_of=5)  # type: ignore[valid-type]


class User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: UUID
    email: EmailStr
    name: Annotated[str, Field(min_length=2, max_length=5)]
    age: Annotated[int, Field(gt=17, lt=130)]
    score: Annotated[float, Field(gt=0, le=0.5)]
    created: datetime
    birthday: date
    alarm: time
    wait: timedelta
    colour: Colour
    level: Level
    kind: Literal["admin", "user"]
    address: Address
    tags: Annotated[list[Tag], Field(min_length=2)]
    labels: set[str]
    nickname: str | None
    homepage: HttpUrl
    ip: IPv4Address
    price: Annotated[Decimal, Field(max_digits=5, decimal_places=2, ge=Decimal("0.10"))]
    code: Annotated[str, Field(pattern=r"^[A-Z]{3}-\d{4}$")]
    meta: dict[str, int]
    pair: tuple[int, str]
    secret: SecretStr
    raw: bytes
    negative: Annotated[int, Field(gt=-5, lt=-2)]
    ratio: Annotated[float, Field(ge=0.5, le=0.75, multiple_of=0.25)]
    parent: User | None = None


class Tree(BaseModel):
    value: int
    children: list[Tree]


class Cat(BaseModel):
    pet_type: Literal["cat"]
    meows: int


class Dog(BaseModel):
    pet_type: Literal["dog"]
    barks: float


class Owner(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="pet_type")]
    others: list[Cat | Dog] = []


class Exampled(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "from-example", "qty": 3}]})

    name: Annotated[str, Field(min_length=12)]
    qty: int


class Item(BaseModel):
    name: Annotated[str, Field(examples=["widget"])]
    qty: Annotated[int, Field(ge=1)] = 1


@app.post("/users")
async def users(user: User) -> dict[str, bool]:
    return OK


@app.put("/trees/{tree_id}")
async def trees(tree_id: int, tree: Tree) -> dict[str, bool]:
    return OK


@app.patch("/owners")
async def owners(owner: Owner) -> dict[str, bool]:
    return OK


@app.post("/exampled")
async def exampled(body: Exampled) -> dict[str, bool]:
    return OK


@app.post("/embedded")
async def embedded(
    item: Annotated[Item, Body(embed=True)], extra: Annotated[int, Body(ge=3)]
) -> dict[str, bool]:
    return OK


@app.post("/form")
async def form(
    name: Annotated[str, Form(min_length=3)],
    count: Annotated[int, Form(ge=2)],
    tags: Annotated[list[str], Form()],
    when: Annotated[date, Form()],
) -> dict[str, bool]:
    return OK


@app.post("/upload")
async def upload(file: UploadFile) -> dict[str, bool]:
    return OK


@app.post("/optional-body")
async def optional_body(item: Item | None = None) -> dict[str, bool]:
    return OK


@app.post("/list-body")
async def list_body(items: list[Item]) -> dict[str, bool]:
    return OK


@app.delete("/items/{item_id}")
async def delete_item(item_id: UUID) -> dict[str, bool]:
    return OK


@app.get("/query")
async def query(
    limit: Annotated[int, Query(ge=5, le=9)],
    q: Annotated[str, Query(min_length=3, pattern=r"^[a-z]+$")],
    when: date,
    ids: Annotated[list[int], Query()],
    flag: bool,
    colour: Colour = Colour.blue,
) -> dict[str, bool]:
    return OK
