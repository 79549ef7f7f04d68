"""Record the stack fixtures: real py-spy output from real servers under load.

    .venv/bin/python -m tests.data.stacks.capture   (as root; sqlalchemy and uvloop installed)

Each scenario writes NAME.json (window, thread clocks, source lines) and NAME-PID.txt (py-spy's raw
output, verbatim) for every worker. test_stacks.py replays them through attribute().
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from fastapi_tune.measure.appfiles import AppFiles
from fastapi_tune.measure.loadgen import BurstResult, RequestSpec, run_burst
from fastapi_tune.measure.observe import worker_children
from fastapi_tune.measure.stacks import StackSample, sample_workers
from tests.servers import REPO, serve

HERE = Path(__file__).resolve().parent
APP_DIR = REPO / "tests" / "apps"

# name: (app, server, workers, path, concurrency, extra server args)
SCENARIOS = {
    "uvicorn-loop": ("tests.apps.stacks_app:app", "uvicorn", 1, "/loop", 8, ()),
    "uvicorn-cpu": ("tests.apps.stacks_app:app", "uvicorn", 1, "/cpu", 4, ()),
    "uvicorn-threadpool": ("tests.apps.stacks_app:app", "uvicorn", 1, "/threadpool", 64, ()),
    "uvicorn-io": ("tests.apps.stacks_app:app", "uvicorn", 1, "/io", 16, ()),
    "uvloop-loop": ("tests.apps.stacks_app:app", "uvicorn", 1, "/loop", 8, ("--loop", "uvloop")),
    "uvloop-io": ("tests.apps.stacks_app:app", "uvicorn", 1, "/io", 16, ("--loop", "uvloop")),
    "gunicorn-loop": ("tests.apps.stacks_app:app", "gunicorn", 2, "/loop", 8, ()),
    "gunicorn-threadpool": ("tests.apps.stacks_app:app", "gunicorn", 2, "/threadpool", 128, ()),
    "uvicorn-pool-wait": ("tests.apps.stacks_pool_app:app", "uvicorn", 1, "/pooled", 32, ()),
}


def _save(name: str, sample: StackSample) -> None:
    workers = []
    for w in sample.workers:
        raw = f"{name}-{w.pid}.txt"
        (HERE / raw).write_text(w.raw)
        workers.append({"pid": w.pid, "raw": raw, "thread_active_s": dict(w.thread_active_s)})
    meta = {
        "seconds": sample.seconds,
        "rate_hz": sample.rate_hz,
        "app_dir": str(APP_DIR),
        "sources": dict(sample.sources),
        "workers": workers,
    }
    (HERE / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def record(name: str) -> None:
    app, server, workers, path, concurrency, extra = SCENARIOS[name]
    with serve(app, server=server, workers=workers, extra=extra) as s:
        pids = [k.pid for k in worker_children(s.pid)] or [s.pid]
        done: list[BurstResult] = []
        spec = RequestSpec("GET", s.url + path)
        load = threading.Thread(target=lambda: done.append(run_burst(spec, concurrency, 0.3, 2.5)))
        load.start()
        time.sleep(0.6)
        sample = sample_workers(pids, 1.5, 50, AppFiles.at(APP_DIR))
        load.join()
    if not isinstance(sample, StackSample):
        raise SystemExit(f"{name}: {sample}")
    _save(name, sample)
    print(name, "ok", [len(w.stacks) for w in sample.workers])


if __name__ == "__main__":
    for scenario in SCENARIOS:
        record(scenario)
