"""A FastAPI app whose routes only burn CPU: benchmarks/verify_sweep.py checks the plan against it.

Work is counted in iterations of a pure-Python loop (it holds the GIL, so only more processes
scale it), sized for about 13 ms (/hash) and 5 ms (/price/{sku}) on this project's machines.
Serve it from the repo root: uvicorn benchmarks.cpu_app:app
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI

HASH_ITERATIONS: Final = 160_000
PRICE_ITERATIONS: Final = 65_000

app = FastAPI(title="fastapi-tune CPU benchmark app", version="1.0")


def _burn(iterations: int, seed: int) -> int:
    total = seed
    for i in range(iterations):
        total = (total * 31 + i * i) % 1_000_003
    return total


@app.get("/hash")
async def get_hash(text: str = "fastapi-tune") -> dict[str, int | str]:
    """cpu-bound: about 13 ms of pure-Python work per request."""
    return {"text": text, "digest": _burn(HASH_ITERATIONS, len(text))}


@app.get("/price/{sku}")
async def get_price(sku: int) -> dict[str, int]:
    """cpu-bound: about 5 ms of pure-Python work per request."""
    return {"sku": sku, "cents": _burn(PRICE_ITERATIONS, sku) % 10_000}
