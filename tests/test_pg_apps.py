"""The database-backed test apps under a real uvicorn against a real PostgreSQL (tests/pg.py)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from fastapi_tune.measure.loadgen import RequestSpec, run_burst
from tests.pg import Postgres
from tests.servers import serve

ASYNC_APP = "tests.apps.pg_async_app:app"
SYNC_APP = "tests.apps.pg_sync_app:app"


@dataclass(frozen=True)
class Load:
    ok: int
    errors: int  # non-200 answers and transport errors
    throughput_rps: float
    mean_ms: float


def _load(url: str, concurrency: int, duration_s: float = 1.0) -> Load:
    result = run_burst(RequestSpec("GET", url), concurrency, warmup_s=0.4, duration_s=duration_s)
    ok = result.status_counts.get(200, 0)
    errors = sum(result.status_counts.values()) - ok + sum(result.errors_by_kind.values())
    mean = statistics.fmean(result.latencies_ms) if result.latencies_ms else float("nan")
    return Load(ok, errors, ok / result.duration_s, mean)


def test_postgres_is_real_on_loopback(postgres: Postgres) -> None:
    with psycopg.connect(postgres.dsn, connect_timeout=10) as conn:
        max_connections = conn.execute("SHOW max_connections").fetchone()
        address = conn.execute("SELECT host(inet_server_addr()), inet_server_port()").fetchone()
    assert max_connections == (str(postgres.max_connections),)
    assert address == ("127.0.0.1", postgres.port)
    assert postgres.dsn == f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"


def test_async_app_routes_answer(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_DSN", postgres.dsn)
    with serve(ASYNC_APP) as server:
        answers = {path: httpx.get(server.url + path, timeout=10) for path in ("/sleep", "/db", "/cpu")}
        health = httpx.get(server.url + "/health", timeout=10)
    assert {path: r.status_code for path, r in answers.items()} == {"/sleep": 200, "/db": 200, "/cpu": 200}
    assert answers["/db"].json() == {"value": 1}
    assert health.json() == {"status": "ok"}


def test_sync_app_routes_answer(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_DSN", postgres.dsn)
    with serve(SYNC_APP) as server:
        answers = [httpx.get(server.url + path, timeout=10) for path in ("/items", "/stall")]
    assert [r.status_code for r in answers] == [200, 200]
    assert answers[1].json() == {"slept_s": 0.02}


@pytest.mark.slow
def test_asyncpg_pool_caps_throughput(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    pool_size = 5
    monkeypatch.setenv("PG_DSN", postgres.dsn)
    monkeypatch.setenv("POOL_SIZE", str(pool_size))
    with serve(ASYNC_APP) as server:
        one, at_pool, past_pool = (_load(f"{server.url}/sleep", c) for c in (1, pool_size, 30))
    assert (one.errors, at_pool.errors, past_pool.errors) == (0, 0, 0)
    # Six times the clients buy less than twice the throughput: the pool, not the load, is the limit.
    assert past_pool.throughput_rps < 2 * at_pool.throughput_rps, (at_pool, past_pool)
    # Little's law: requests in service = throughput x one request's own time (c=1) ~ the pool.
    in_service = past_pool.throughput_rps * one.mean_ms / 1000
    assert 0.5 * pool_size <= in_service <= 2 * pool_size, (one, past_pool, in_service)


@pytest.mark.slow
def test_sync_session_dependency_deadlocks_one_worker(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_DSN", postgres.dsn)
    # Longer than the stalled burst (0.4 s warm-up + 2 s), so no pool timeout ends the stall in it.
    monkeypatch.setenv("POOL_TIMEOUT", "5")
    with serve(SYNC_APP, workers=1) as server:
        few = _load(f"{server.url}/stall", 5)
        many = _load(f"{server.url}/stall", 60, duration_s=2.0)
    assert few.errors == 0
    assert few.ok > 20, few
    # 40 threads wait for the pool's 15 connections, their holders for a thread: nothing completes
    # and nothing fails, the fastapi#3205 symptom.
    assert many.ok <= few.ok / 20, (few, many)
    assert many.errors == 0, many
