"""A `def` route whose threads queue for SQLAlchemy's QueuePool (2 connections, no overflow).

Only for recording the pool-wait fixture (tests/data/stacks/capture.py); needs sqlalchemy installed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.pool import QueuePool

_DB = Path(tempfile.gettempdir()) / "fastapi-tune-stacks-pool.sqlite"
engine = create_engine(f"sqlite:///{_DB}", poolclass=QueuePool, pool_size=2, max_overflow=0, pool_timeout=30)
app = FastAPI()


@app.get("/pooled")
def pooled_route() -> dict[str, int]:
    with engine.connect() as conn:
        value = int(conn.execute(text("select 1")).scalar_one())
        time.sleep(0.02)  # holds the connection, like a slow query
    return {"value": value}
