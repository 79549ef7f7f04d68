"""What does sampling the workers' stacks with py-spy cost the app? Throughput with and without.

Serves tests/apps/stacks_app.py with ONE uvicorn worker and loads one route with the probe's load
generator, in interleaved rounds: no sampling, then py-spy at each (mode, rate) while the burst runs,
in a rotated order each round. Per condition: the median throughput over rounds, the median of its
ratio to the unsampled run of the same round (paired, so slow drifts of a shared machine cancel), and
py-spy's own CPU per sampled second (it competes with the app for the cores). The noise is the
unsampled rounds' median absolute deviation / median; a condition is "within noise" when its paired
change is smaller than that. Exits 1 when the default (stacks.NONBLOCKING at RATE_HZ) is not.

Run from the repo root:  .venv/bin/python benchmarks/stacks_overhead.py [--rounds 7] [--duration 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_tune.measure.appfiles import AppFiles
from fastapi_tune.measure.loadgen import RequestSpec, run_burst
from fastapi_tune.measure.stacks import NONBLOCKING, StackSample, sample_workers
from tests.servers import REPO, serve

APP_DIR = REPO / "tests" / "apps"
RATE_HZ = 50  # the rate the live tests and probe use
# (label, nonblocking, rate); None = no sampling.
CONDITIONS: list[tuple[str, bool | None, int]] = [
    ("off", None, 0),
    ("nonblocking 50 Hz", True, 50),
    ("nonblocking 100 Hz", True, 100),
    ("blocking 50 Hz", False, 50),
    ("blocking 100 Hz", False, 100),
]


def one_round(
    url: str, pid: int, nonblocking: bool | None, rate: int, duration: float, conc: int
) -> tuple[float, float]:
    """Requests/s of one burst, with py-spy sampling the worker over the counted window if asked,
    and py-spy's CPU seconds (finished children only: the server is reaped at the very end)."""
    out: list[StackSample | object] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler: threading.Thread | None = None
    if nonblocking is not None:
        sampler = threading.Thread(
            target=lambda: out.append(
                sample_workers([pid], duration, rate, AppFiles.at(APP_DIR), nonblocking=nonblocking)
            )
        )
    # warm-up 0.3 s; py-spy attaches in ~0.1 s, so the window it samples is inside the counted one.
    if sampler is not None:
        sampler.start()
    result = run_burst(RequestSpec("GET", url), conc, 0.3, duration)
    if sampler is not None:
        sampler.join()
        if not isinstance(out[0], StackSample):
            raise SystemExit(f"sampling failed: {out[0]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    spy_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return len(result.latencies_ms) / result.duration_s, spy_cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--path", default="/cpu?n=300", help="route to load (default: ~1.5 ms of hashing)")
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    rps: dict[str, list[float]] = {label: [] for label, _, _ in CONDITIONS}
    spy: dict[str, list[float]] = {label: [] for label, _, _ in CONDITIONS}
    with serve("tests.apps.stacks_app:app", server="uvicorn", workers=1) as s:
        url = s.url + args.path
        run_burst(RequestSpec("GET", url), args.concurrency, 0.3, 1.0)  # warm the app and the caches
        for r in range(args.rounds):
            order = CONDITIONS[r % len(CONDITIONS) :] + CONDITIONS[: r % len(CONDITIONS)]
            for label, nonblocking, rate in order:
                got, cpu = one_round(url, s.pid, nonblocking, rate, args.duration, args.concurrency)
                rps[label].append(got)
                spy[label].append(cpu / args.duration)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rps.items()), flush=True)
    base = statistics.median(rps["off"])
    noise = statistics.median(abs(x - base) for x in rps["off"]) / base
    print(f"\n{args.path} at c={args.concurrency}, {args.rounds} rounds of {args.duration:g} s, 1 worker")
    print(f"unsampled: median {base:.0f} req/s, run-to-run noise (MAD/median) {noise:.1%}")
    verdicts: dict[str, bool] = {}
    for label, _, _ in CONDITIONS[1:]:
        paired = statistics.median(x / off - 1 for x, off in zip(rps[label], rps["off"], strict=True))
        verdicts[label] = paired > -noise
        print(
            f"{label:>20}: median {statistics.median(rps[label]):.0f} req/s, paired change {paired:+.1%} "
            f"({'within' if verdicts[label] else 'beyond'} noise), py-spy CPU "
            f"{statistics.median(spy[label]) * 1000:.0f} ms per sampled second"
        )
    default = f"{'nonblocking' if NONBLOCKING else 'blocking'} {RATE_HZ} Hz"
    return 0 if verdicts[default] else 1


if __name__ == "__main__":
    sys.exit(main())
