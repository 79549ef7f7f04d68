"""The admission-control module written beside gunicorn.conf.py, and the hook that points at it.

Text only: the values and their reasons are the plan's (plan/admission.py). The module is
standalone (it needs nothing from fastapi-tune where it runs): an ASGI wrapper with a FIFO queue in
front of the app, at most LIMIT requests in flight per worker, the rest waiting up to WAIT_S for a
slot, then 503 with Retry-After. gunicorn.conf.py wraps each worker's app in `post_worker_init`
(uvicorn-worker's `worker.wsgi`, gunicorn's native ASGI worker's `worker.asgi`), so the app's code
and the command that starts it stay as they are.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Final

from fastapi_tune.plan.model import AdmissionCap, Plan

_WIDTH: Final = 100


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        text, width=_WIDTH, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False
    )


def _doc(text: str) -> list[str]:
    return textwrap.wrap(text, width=_WIDTH, break_on_hyphens=False)


_BODY: Final = '''

def limit_from_env(default: int = LIMIT) -> int:
    """ADMISSION_LIMIT overrides LIMIT at start-up (0 turns the cap off), as WEB_CONCURRENCY does workers."""
    raw = os.environ.get("ADMISSION_LIMIT", "").strip()
    return int(raw) if raw.isdigit() else default


class Admission:
    """ASGI middleware: at most `limit` requests in the app at once; the rest queue, first come first
    served, for at most `wait_s` seconds, then get 503 with Retry-After. Lifespan and websocket
    scopes pass straight through."""

    def __init__(self, app: Any, limit: int, wait_s: float) -> None:
        self.app = app
        self.limit = limit
        self.wait_s = wait_s
        self.active = 0
        self.waiting: collections.deque[asyncio.Future[bool]] = collections.deque()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self._enter():
            await _busy(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._leave()

    async def _enter(self) -> bool:
        """True once the request holds a slot; False when it waited WAIT_S without one."""
        if self.active < self.limit and not self.waiting:
            self.active += 1
            return True
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[bool] = loop.create_future()
        self.waiting.append(slot)
        timer = loop.call_later(self.wait_s, _expire, slot)
        try:
            return await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled() and slot.result():
                self._leave()  # handed a slot just as the client went away: pass it on
            raise
        finally:
            timer.cancel()
            if slot in self.waiting:
                self.waiting.remove(slot)

    def _leave(self) -> None:
        """Hand the slot to the oldest waiting request, or free it."""
        while self.waiting:
            slot = self.waiting.popleft()
            if not slot.done():
                slot.set_result(True)
                return
        self.active -= 1


def _expire(slot: asyncio.Future[bool]) -> None:
    if not slot.done():
        slot.set_result(False)


async def _busy(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"Service Unavailable: over capacity, retry later\\n"})


def wrap(app: Any, limit: int | None = None, wait_s: float = WAIT_S) -> Any:
    """`app` behind the cap (LIMIT, or ADMISSION_LIMIT from the environment); `app` itself when 0."""
    chosen = limit_from_env() if limit is None else limit
    return app if chosen <= 0 else Admission(app, chosen, wait_s)


def __getattr__(name: str) -> Any:
    """`uvicorn asgi_admission:app`, Granian, `fastapi run`: APP imported and wrapped on first use."""
    if name != "app":
        raise AttributeError(name)
    module, _, attribute = APP.partition(":")
    wrapped = wrap(getattr(importlib.import_module(module), attribute or "app"))
    globals()["app"] = wrapped
    return wrapped
'''


def render_admission_module(plan: Plan, cap: AdmissionCap) -> str:
    """The module's text: the cap's values with their reasons, then the wrapper."""
    out = [
        f'"""Admission control for {plan.app}',
        "",
        "Written by `fastapi-tune recommend`; plain Python, no dependency.",
    ]
    out += _doc(
        f"At most LIMIT requests are in the app at once in each worker; the rest wait (first come, first"
        f" served) up to WAIT_S seconds for a slot, then get 503 with Retry-After. gunicorn.conf.py wraps"
        f" every worker's app with it (post_worker_init): the app's code is unchanged. Without gunicorn,"
        f" serve `{cap.module}:app` (uvicorn, Granian), which imports APP and wraps it."
    )
    out.append("")
    out += _doc(
        "ADMISSION_LIMIT=N in the environment overrides LIMIT at start-up; ADMISSION_LIMIT=0 turns the"
        " cap off."
    )
    if cap.fixes:
        out += ["", "The code fix that makes the cap unnecessary:"]
        for fix in cap.fixes:
            out += textwrap.wrap(
                fix, width=_WIDTH, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False
            )
    out += ['"""', "", "from __future__ import annotations", ""]
    out += [
        "import asyncio",
        "import collections",
        "import importlib",
        "import os",
        "from typing import Any",
        "",
    ]
    out += ["# The app this module wraps when served on its own (`uvicorn asgi_admission:app`)."]
    out += [f"APP = {json.dumps(plan.app)}", ""]
    out += _comment(f"LIMIT: {cap.why_limit}.")
    out += [f"LIMIT = {cap.limit}", ""]
    out += _comment(f"WAIT_S: {cap.why_wait}.")
    out += [f"WAIT_S = {cap.wait_s!r}", "RETRY_AFTER_S = 1"]
    return "\n".join(out) + _BODY


def conf_hook(cap: AdmissionCap) -> list[str]:
    """The lines of gunicorn.conf.py that wrap each worker's app with the module beside the file."""
    lines = _comment(
        f"Admission control ({cap.module}.py beside this file): at most {cap.limit} requests in flight per"
        f" worker, the rest queue up to {cap.wait_s:g} s, then 503. {cap.why_limit}. ADMISSION_LIMIT=N"
        " overrides the cap at start-up, ADMISSION_LIMIT=0 turns it off."
    )
    return [
        *lines,
        "def post_worker_init(worker):",
        "    import sys",
        "",
        "    here = os.path.dirname(os.path.abspath(__file__))",
        "    if here not in sys.path:",
        "        sys.path.insert(0, here)",
        f"    from {cap.module} import wrap",
        "",
        '    if hasattr(worker, "asgi"):  # gunicorn\'s native ASGI worker',
        "        worker.asgi = wrap(worker.asgi)",
        "    else:  # uvicorn-worker",
        "        worker.wsgi = wrap(worker.wsgi)",
    ]


def module_path(conf_path: Path, cap: AdmissionCap) -> Path:
    """Where the module goes: beside the config that imports it."""
    return conf_path.parent / f"{cap.module}.py"


def admission_files(plan: Plan, conf_path: Path) -> list[tuple[Path, str]]:
    """The module beside `conf_path` when the plan caps the app; nothing otherwise."""
    if plan.admission is None:
        return []
    return [(module_path(conf_path, plan.admission), render_admission_module(plan, plan.admission))]
