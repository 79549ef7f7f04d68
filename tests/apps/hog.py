"""Busy loops for tests that need a busy host: run as multiprocessing targets or as a script."""

from __future__ import annotations

import sys
import threading
import time
from multiprocessing.synchronize import Event


def spin(ready: Event | None = None) -> None:
    """One core's worth of work until killed; `ready` is set once the loop runs."""
    if ready is not None:
        ready.set()
    while True:
        pass


def churn_threads() -> None:
    """Threads that each burn ~20 ms of CPU and end, one after another, until killed."""

    def burn() -> None:
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass

    while True:
        t = threading.Thread(target=burn)
        t.start()
        t.join()


if __name__ == "__main__":
    {"spin": spin, "churn": churn_threads}[sys.argv[1]]()
