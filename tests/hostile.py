"""Hostile raw HTTP servers on loopback, for the load generators' deadline tests.

Each runs on an asyncio loop of its own thread and misbehaves in one way a real app can:
never answers, dribbles its response a byte at a time, hangs up on accept, sends a chunked body
slower than any timeout, or never accepts at all (a full listen backlog, so connects hang).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

__all__ = ["Behaviour", "hostile_server", "unaccepting_port"]

Behaviour = Literal["silent", "dribble", "hangup", "slow_chunked"]

DRIBBLE_GAP_S = 0.5  # one byte every half second: any per-read timeout above that never fires
CHUNK_GAP_S = 0.3
CHUNKS = 30  # a 9 s body: longer than any test waits
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return False
    return True


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(3600)


async def _dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    for i in range(len(_RESPONSE)):
        writer.write(_RESPONSE[i : i + 1])
        await writer.drain()
        await asyncio.sleep(DRIBBLE_GAP_S)


async def _hangup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return  # the connection is closed as soon as it is accepted


async def _slow_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(CHUNKS):
        writer.write(b"1\r\nx\r\n")
        await writer.drain()
        await asyncio.sleep(CHUNK_GAP_S)
    writer.write(b"0\r\n\r\n")


_HANDLERS: dict[str, Handler] = {
    "silent": _silent,
    "dribble": _dribble,
    "hangup": _hangup,
    "slow_chunked": _slow_chunked,
}


class _ServerThread:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[None]] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hostile-server", daemon=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await server.wait_closed()

    @contextmanager
    def running(self) -> Iterator[int]:
        self.thread.start()
        start = asyncio.start_server(self._serve, "127.0.0.1", 0)
        server = asyncio.run_coroutine_threadsafe(start, self.loop).result(5)
        try:
            yield int(server.sockets[0].getsockname()[1])
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(server), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@contextmanager
def hostile_server(behaviour: Behaviour) -> Iterator[str]:
    """A raw server that misbehaves as `behaviour` says; yields its base URL."""
    with _ServerThread(_HANDLERS[behaviour]).running() as port:
        yield f"http://127.0.0.1:{port}/"


@contextmanager
def unaccepting_port() -> Iterator[str]:
    """A port that listens but never accepts, its backlog already full: new connects hang."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers: list[socket.socket] = []
        try:
            # Linux queues backlog + 1 connections; once they fill it, further SYNs are dropped.
            for _ in range(2):
                filler = socket.socket()
                filler.settimeout(0.5)
                try:
                    filler.connect(("127.0.0.1", port))
                except OSError:
                    filler.close()
                    break
                fillers.append(filler)
            yield f"http://127.0.0.1:{port}/"
        finally:
            for filler in fillers:
                filler.close()
