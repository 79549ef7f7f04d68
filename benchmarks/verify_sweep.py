"""Is the recommended worker count the best one? probe -> recommend -> verify --sweep, per app.

For each app (the bundled sample app, and benchmarks/cpu_app.py whose routes only burn CPU):
  1. serve it with ONE uvicorn worker on a free loopback port and run `fastapi-tune probe`;
  2. `fastapi-tune recommend --yes` from that report;
  3. `fastapi-tune verify APP -c CONF --probe REPORT --sweep --json`: the recommended config, the
     rule of thumb (2 x logical CPUs + 1), one worker, and 1 .. 2 x effective CPUs workers, each
     under the same load.
Prints every run and two figures per app:
  * recommended throughput / best throughput  (bar for the CPU app: >= 0.95)
  * recommended RSS / rule-of-thumb RSS       (bar for the CPU app: <= 1.0)
The sample app's figures are shown for context only: its mix is dominated by routes that wait.
Exits 1 if the CPU app misses a bar.

Run from the repo root:
  .venv/bin/python benchmarks/verify_sweep.py [--duration 3] [--repeat 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_tune.measure.launch import free_port, run_server

REPO: Final = Path(__file__).resolve().parent.parent

THROUGHPUT_BAR: Final = 0.95
MEMORY_BAR: Final = 1.0


@dataclass(frozen=True)
class Case:
    app: str
    cpu_bound: bool  # the bars apply


CASES: Final = (
    Case("fastapi_tune.sample_app:app", cpu_bound=False),
    Case("benchmarks.cpu_app:app", cpu_bound=True),
)


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def tune(*args: str) -> str:
    """Run `fastapi-tune ARGS` from the repo root; its stdout, or exit with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "fastapi_tune", *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"fastapi-tune {' '.join(args)} failed with {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


def probe(app: str, out: Path, max_seconds: float) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning", "--workers", "1",
    ]  # fmt: skip
    with run_server(argv, port, cwd=REPO, env=env(), name=f"uvicorn {app}") as running:
        tune("probe", running.url, "--out", str(out), "--max-seconds", f"{max_seconds:g}")


def measure(case: Case, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    report = work / "probe.json"
    conf = work / "gunicorn.conf.py"
    probe(case.app, report, args.max_seconds)
    tune("recommend", "--yes", "--app", case.app, "--probe", str(report), "--output", str(conf))
    verify = ["verify", case.app, "-c", str(conf), "--probe", str(report), "--sweep", "--json"]
    verify += [
        "--app-dir",
        str(REPO),
        "--duration",
        f"{args.duration:g}",
        "--concurrency",
        str(args.concurrency),
        "--repeat",
        str(args.repeat),
    ]
    data: dict[str, Any] = json.loads(tune(*verify))
    classes = {e["path"]: e["class"] for e in json.loads(report.read_text())["endpoints"]}
    data["classes"] = classes
    return data


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def show(case: Case, data: dict[str, Any]) -> bool:
    """Print the runs and the figures; True if the app meets its bars (or has none)."""
    print(f"\n== {case.app}")
    print("classes: " + ", ".join(f"{path} {cls}" for path, cls in data["classes"].items()))
    print(
        f"load: {', '.join(data['endpoints'])} at c={data['concurrency']}, {data['duration_s']:g} s per run"
    )
    print(f"{'run':<15}{'workers':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'RSS MB':>9}{'errors':>8}")
    for r in data["runs"]:
        lat = r["latency_ms"]
        print(
            f"{r['label']:<15}{r['workers']:>8}{r['throughput_rps']:>10.1f}{fmt(lat['p50'], '.1f'):>10}"
            f"{fmt(lat['p99'], '.1f'):>10}{r['rss_mb']:>9.1f}{r['errors']:>8}"
        )
    ratio, memory = data["recommended_vs_best"], data["recommended_memory_vs_rule_of_thumb"]
    print(f"best run: {data['best']}")
    if not case.cpu_bound:
        print(f"recommended / best throughput: {fmt(ratio, '.3f')} (context only)")
        print(f"recommended / rule-of-thumb RSS: {fmt(memory, '.3f')} (context only)")
        return True
    ok_x = ratio is not None and ratio >= THROUGHPUT_BAR
    ok_m = memory is not None and memory <= MEMORY_BAR
    print(
        f"recommended / best throughput: {fmt(ratio, '.3f')} (bar >= {THROUGHPUT_BAR})"
        f" {'PASS' if ok_x else 'FAIL'}"
    )
    print(
        f"recommended / rule-of-thumb RSS: {fmt(memory, '.3f')} (bar <= {MEMORY_BAR})"
        f" {'PASS' if ok_m else 'FAIL'}"
    )
    return ok_x and ok_m


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="counted seconds per verify run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; verify reports medians")
    parser.add_argument("--concurrency", type=int, default=64, help="connections for every verify run")
    parser.add_argument("--max-seconds", type=float, default=45.0, help="time budget of each probe")
    args = parser.parse_args()
    host = json.loads(tune("host", "--json"))["cpu"]
    print(f"host: {host['logical']} logical CPUs, {host['effective']} effective ({host['source']})")
    ok = True
    for case in CASES:
        with tempfile.TemporaryDirectory(prefix="verify-sweep-") as tmp:
            ok = show(case, measure(case, Path(tmp), args)) and ok
    print("\nresult: " + ("PASS" if ok else "FAIL: the CPU app missed a bar"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
