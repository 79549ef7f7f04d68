"""A total deadline for a blocking network call, whatever the peer does.

httpx's timeouts are per read: a server that dribbles one byte every half second never trips them.
The call runs on a daemon thread and is abandoned at the deadline; its socket is bounded by the
per-read timeout, so the abandoned thread ends on its own soon after.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from fastapi_tune.core.errors import TargetUnreachableError

T = TypeVar("T")


def within(deadline_s: float, what: str, call: Callable[[], T]) -> T:
    """`call()`'s result, or TargetUnreachableError when it is not done within `deadline_s`."""
    box: dict[str, T] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as e:  # handed to the caller's thread as is
            failure.append(e)

    worker = threading.Thread(target=run, name=f"deadline: {what}", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise TargetUnreachableError(f"{what}: no complete answer within {deadline_s:g} s")
    if failure:
        raise failure[0]
    return box["value"]
