"""Ctrl-C, SIGTERM and SIGHUP end a run the same way: keep what was measured, stop what was started.

Outside a measurement every stop signal raises KeyboardInterrupt in the main thread, so every
`with` block that started a server stops it on the way out. During a measurement the first signal
only asks it to stop (the partial result is kept and saved); a second one aborts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_interrupt_handlers() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C (the default would kill without cleaning up)."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _raise_interrupt)


@contextmanager
def stop_on_signals(event: threading.Event) -> Iterator[None]:
    """While inside: the first stop signal sets `event`, a second one raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if event.is_set():
            raise KeyboardInterrupt(signal.Signals(signum).name)
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
