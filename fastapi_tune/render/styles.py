"""Colours shared by the terminal renderers."""

from __future__ import annotations

from typing import Final

from fastapi_tune.measure.report import EndpointClass

CLASS_STYLE: Final = {
    EndpointClass.IO_BOUND: "green",
    EndpointClass.CPU_BOUND: "yellow",
    EndpointClass.LOOP_BLOCKING: "red",
    EndpointClass.THREADPOOL_BOUND: "magenta",
    EndpointClass.SERIALIZED: "yellow",
    EndpointClass.POOL_BOUND: "cyan",
    EndpointClass.STALLED: "bold red",
    EndpointClass.INCONCLUSIVE: "dim",
}
