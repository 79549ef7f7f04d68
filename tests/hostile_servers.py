"""Hostile HTTP servers for tests: raw asyncio on a free loopback port, misbehaving on purpose.

Each route is a coroutine that gets the request line and the stream writer and may do anything a
bad server does: dribble bytes, never answer, redirect elsewhere, send gigabytes. The server runs
its own event loop on a daemon thread and closes every connection when the `with` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi_tune.measure.launch import free_port

# (method, path with query, writer) -> keep the connection open for another request?
Route = Callable[[str, str, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Hostile:
    """A running hostile server: its base URL and what it saw."""

    url: str
    port: int
    requests: list[str] = field(default_factory=list)  # "METHOD /path" in arrival order


async def respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = "application/json"
) -> bool:
    """A well-formed keep-alive answer."""
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return True


def json_route(doc: object, status: int = 200) -> Route:
    """Always the same JSON document."""
    body = json.dumps(doc).encode()

    async def route(method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        return await respond(writer, status, body)

    return route


def raw_route(body: bytes, status: int = 200, content_type: str = "application/json") -> Route:
    """Always the same bytes."""

    async def route(method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        return await respond(writer, status, body, content_type)

    return route


def dribble_route(interval_s: float = 0.5) -> Route:
    """Headers promising a large body, then one byte every `interval_s`, forever."""

    async def route(method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(interval_s)

    return route


def silent_route() -> Route:
    """Reads the request, never answers."""

    async def route(method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        await asyncio.Event().wait()
        return False

    return route


def redirect_route(location: str) -> Route:
    """302 to somewhere else (another host)."""

    async def route(method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        return True

    return route


def endless_route(chunk: int = 1 << 16) -> Route:
    """A 200 whose body never ends, sent as fast as the client reads (a huge document)."""

    async def route(method: str, target: str, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n"
        )
        writer.write(b'{"paths": {"/a": {"get": {"description": "')
        block = b"x" * chunk
        while True:
            writer.write(block)
            await writer.drain()

    return route


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target = [*lines[0].split(" "), "", ""][:2]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length:
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readexactly(length)
    return method, target


@contextmanager
def hostile_server(routes: Mapping[str, Route], default: Route | None = None) -> Iterator[Hostile]:
    """Serve `routes` (by path, query ignored; `default` for the rest, else 404) on loopback."""
    port = free_port()
    state = Hostile(url=f"http://127.0.0.1:{port}", port=port)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            while (req := await _read_request(reader)) is not None:
                method, target = req
                state.requests.append(f"{method} {target}")
                route = routes.get(target.split("?", 1)[0], default)
                keep = await (route or json_route({"detail": "Not Found"}, 404))(method, target, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            tasks.discard(task)
            writer.close()

    async def main() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        started.set()
        return server

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder.append(loop.run_until_complete(main()))
        loop.run_forever()

    holder: list[asyncio.Server] = []
    thread = threading.Thread(target=run, name=f"hostile:{port}", daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield state
    finally:

        async def shutdown() -> None:
            holder[0].close()
            for t in list(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
