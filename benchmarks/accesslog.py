"""How fast --access-log reads a million lines, and whether its memory stays flat.

For each format it writes a generated log (tests/logs.py: a known mix and peak, 5% unmatched and 1%
garbage lines, secrets in query strings) of about --lines lines, then reads it in a fresh process
with `read_access_logs` and, side by side in the same run, with the floor: a process that only
iterates the same file's lines (decoding included, no parsing). It prints lines/s, the ratio to
the floor, and each reader's peak RSS for the full log and for a log a tenth of the size (flat
memory: the two are about equal). The bar (the issue's): a million lines in 15 s or less.

    .venv/bin/python benchmarks/accesslog.py [--lines 1000000] [--formats nginx,json,nginx.gz] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.logs import ROUTES, SHARES, Shape, write_log  # noqa: E402

BAR_S_PER_MILLION: Final = 15.0
# Request lines are ~94% of a generated log (5% unmatched, 1% garbage come on top).
_REQUEST_SHARE: Final = 0.94

_READER: Final = """
import json, resource, sys, time
from fastapi_tune.measure.accesslog import read_access_logs
routes = [tuple(r) for r in json.loads(sys.argv[2])]
t, c = time.perf_counter(), time.process_time()
p = read_access_logs([sys.argv[1]], routes)
seconds, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"seconds": seconds, "cpu": cpu, "lines": p.lines, "used": p.used,
    "unreadable": p.unreadable, "unmatched": p.unmatched, "shares": p.shares(),
    "peak": p.peak.rps if p.peak else None, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""
_FLOOR: Final = """
import gzip, json, resource, sys, time
t, c = time.perf_counter(), time.process_time()
name = sys.argv[1]
f = gzip.open(name, "rt", encoding="utf-8", errors="replace") if name.endswith(".gz") else open(
    name, encoding="utf-8", errors="replace")
n = 0
for line in f:
    n += 1
print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - c, "lines": n,
    "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _child(code: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(ROUTES)],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _write(directory: Path, name: str, lines: int) -> Path:
    fmt, _, suffix = name.partition(".")
    path = directory / (f"{fmt}-{lines}.log" + (f".{suffix}" if suffix else ""))
    if not path.exists():
        write_log(path, fmt, Shape().for_lines(int(lines * _REQUEST_SHARE)), compress=suffix == "gz")
    return path


def _check(result: dict[str, Any], name: str) -> list[str]:
    """What the reader got wrong, if anything (the tests hold the bars; this keeps the figures honest)."""
    problems = []
    for route, share in SHARES.items():
        if abs(result["shares"].get(route, 0.0) - share) > 0.01:
            problems.append(f"{name}: {route} share {result['shares'].get(route)} != {share}")
    if not name.startswith("uvicorn") and (result["peak"] is None or abs(result["peak"] / 50.0 - 1) > 0.05):
        problems.append(f"{name}: peak {result['peak']} != 50")
    return problems


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--formats", default="nginx,gunicorn,uvicorn,json,nginx.gz")
    parser.add_argument("--dir", type=Path, default=None, help="Keep the generated logs here (reused).")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="fastapi-tune-accesslog-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"logs in {directory}; {args.lines:,} lines each (and a tenth, for memory)")
    print(f"load average before: {_load()} (wall time grows with the machine's other work)")
    header = f"{'format':<10} {'lines':>9} {'wall s':>7} {'cpu s':>6} {'lines/s':>9} {'floor s':>8}"
    print(header + f" {'x floor':>7} {'RSS MiB':>8} {'RSS 1/10':>8} {'floor RSS':>9}")
    problems: list[str] = []
    worst = 0.0
    for name in args.formats.split(","):
        big, small = _write(directory, name, args.lines), _write(directory, name, args.lines // 10)
        floor = _child(_FLOOR, big)
        result = _child(_READER, big)
        tenth = _child(_READER, small)
        problems += _check(result, name)
        per_million = result["seconds"] / result["lines"] * 1e6
        worst = max(worst, per_million)
        seconds, rate = result["seconds"], result["lines"] / result["seconds"]
        mib = [r["rss_kib"] / 1024 for r in (result, tenth, floor)]
        print(
            f"{name:<10} {result['lines']:>9,} {seconds:>7.2f} {result['cpu']:>6.2f} {rate:>9,.0f}"
            f" {floor['seconds']:>8.2f} {seconds / floor['seconds']:>7.1f}"
            f" {mib[0]:>8.1f} {mib[1]:>8.1f} {mib[2]:>9.1f}"
        )
    print(f"load average after: {_load()}")
    print(f"slowest: {worst:.2f} s per million lines (bar: {BAR_S_PER_MILLION:g} s)")
    for p in problems:
        print("WRONG:", p)
    return 0 if worst <= BAR_S_PER_MILLION and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
