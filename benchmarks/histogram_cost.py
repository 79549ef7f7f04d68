"""What does recording one latency cost the load generator's hot path? Three ways, CPU per request.

  * list: ``latencies.append(v)`` per response, then sort (or bucket) once after the run;
  * own log buckets: ``fastapi_tune.histogram.bucket_of`` + a dict increment per response;
  * hdrhistogram (PyPI, optional): ``HdrHistogram.record_value`` per response (integer µs).

The budget: the whole closed loop costs ~30 µs of client CPU per request, so a recorder is cheap when
it stays well under 1 µs. Prints µs per recorded value (median of 5 runs) and the one-off cost after
the run, spread over the same values.

Run from the repo root:  .venv/bin/python benchmarks/histogram_cost.py [--n 200000]
(``pip install hdrhistogram`` to include it; it is not a dependency.)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_tune.measure.histogram import LatencyHistogram, bucket_of

try:  # optional: measured if installed, never a dependency
    from hdrh.histogram import HdrHistogram  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    HdrHistogram = None


def _cpu_us_per_value(fn: Callable[[], None], n: int, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.thread_time()
        fn()
        samples.append((time.thread_time() - t0) / n * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    values = [rng.lognormvariate(3.0, 0.5) for _ in range(args.n)]  # ~20 ms, a long right tail
    n = len(values)

    def record_list() -> None:
        out: list[float] = []
        append = out.append
        for v in values:
            append(v)

    def record_buckets() -> None:
        counts: dict[int, int] = {}
        for v in values:
            i = bucket_of(v)
            counts[i] = counts.get(i, 0) + 1

    def sort_once() -> None:
        sorted(values)

    def bucket_once() -> None:
        LatencyHistogram.of(values)

    rows = [
        ("list.append (hot path)", _cpu_us_per_value(record_list, n)),
        ("  + sorted() once after the run", _cpu_us_per_value(sort_once, n)),
        ("  + LatencyHistogram.of once after", _cpu_us_per_value(bucket_once, n)),
        ("own log buckets (hot path)", _cpu_us_per_value(record_buckets, n)),
    ]
    if HdrHistogram is None:
        rows.append(("hdrhistogram: not installed", float("nan")))
    else:

        def record_hdr() -> None:
            h = HdrHistogram(1, 60_000_000, 2)  # 1 µs .. 60 s, 2 significant digits (±1%)
            for v in values:
                h.record_value(int(v * 1000.0))

        rows.append(("hdrhistogram.record_value (hot path)", _cpu_us_per_value(record_hdr, n)))
    print(f"{'recorder':40} {'µs CPU / value':>15}")
    for name, us in rows:
        print(f"{name:40} {us:15.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
