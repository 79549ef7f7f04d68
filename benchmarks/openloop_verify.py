"""Section 4 of benchmarks/openloop.py: the open loop THROUGH `fastapi-tune verify --rate`, against k6.

One gunicorn config (one uvicorn worker) serves benchmarks/openloop_app.py's /cpu10 (~10 ms of CPU)
for both tools, each on a server of its own as verify starts it. Each round: k6's closed loop
(--vus 16) gives the capacity and so the rates; k6's constant-arrival-rate executor at half of it;
verify at half (which first runs its own c=64 burst on the same server, then the open loop on the
server it settled) and at 1.5x (with an objective the completed requests meet, so that only
falling behind can miss it); then k6 at half and its capacity again. k6's figures are the means of
the two sides, which bracket verify's runs in time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi_tune.core.errors import ExitCode
from fastapi_tune.measure.launch import free_port, run_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONF = 'workers = 1\nworker_class = "uvicorn_worker.UvicornWorker"\n'
ROUTE = "/cpu10"
APP = "openloop_app:app"
RATIO_BAND = (0.85, 1.15)
SERVED_BAND = (0.90, 1.10)  # served at 1.5x / k6's closed-loop capacity
KEPT_UP_BAND = (0.98, 1.02)  # served / arrival at half capacity
# The completed requests meet it (a backlog of a few seconds at most): only falling behind misses it.
LOOSE_SLO = "p99<60s"

K6_CLOSED = """
import http from 'k6/http';
export const options = { discardResponseBodies: true };
export default function () { http.get(__ENV.URL); }
"""
K6_OPEN = """
import http from 'k6/http';
const rate = Number(__ENV.RATE);
const arrival = (duration, start) => ({
  executor: 'constant-arrival-rate', rate: rate, timeUnit: '1s', duration: duration,
  startTime: start, preAllocatedVUs: 64, maxVUs: 64,
});
export const options = {
  discardResponseBodies: true,
  thresholds: { 'http_req_duration{scenario:main}': ['max>=0'] },
  scenarios: { warm: arrival(__ENV.WARM, '0s'), main: arrival(__ENV.DUR, __ENV.WARM) },
};
export default function () { http.get(__ENV.URL); }
"""


@dataclass(frozen=True)
class K6Side:
    capacity_rps: float
    p50: float
    p99: float


@dataclass(frozen=True)
class VerifySide:
    p50: float
    p99: float
    arrival_rps: float
    served_rps: float
    line: str | None
    notes: tuple[str, ...]
    exit_code: int


def _k6(k6: str, script: str, tmp: Path, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    path, summary = tmp / "script.js", tmp / "summary.json"
    path.write_text(script)
    cmd = [k6, "run", "-q", "--no-usage-report", "--summary-trend-stats", "med,p(99)"]
    cmd += ["--summary-export", str(summary), *args]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    subprocess.run([*cmd, str(path)], check=True, capture_output=True)
    metrics: dict[str, Any] = json.loads(summary.read_text())["metrics"]
    return metrics


def _gunicorn(conf: Path, port: int) -> list[str]:
    """The server as verify starts it: the config, recycling off, no control socket."""
    return [
        sys.executable, "-m", "gunicorn", "-c", str(conf), "--bind", f"127.0.0.1:{port}",
        "--max-requests", "0", "--no-control-socket", APP,
    ]  # fmt: skip


@contextmanager
def k6_server(conf: Path) -> Iterator[str]:
    """A gunicorn with the config, as verify starts it, for k6; yields the route's URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    with run_server(_gunicorn(conf, port), port, ready_path="/trivial", workers=1, cwd=HERE, env=env) as s:
        yield s.url + ROUTE


def k6_capacity(k6: str, conf: Path, duration_s: float) -> float:
    """k6's closed-loop throughput on the config (16 VUs, no think time)."""
    with k6_server(conf) as url, tempfile.TemporaryDirectory() as tmp:
        args = ["--vus", "16", "--duration", f"{duration_s:g}s"]
        return float(_k6(k6, K6_CLOSED, Path(tmp), args, {"URL": url})["http_reqs"]["rate"])


def k6_at_rate(k6: str, conf: Path, rate: int, warmup_s: float, duration_s: float) -> tuple[float, float]:
    """k6's constant-arrival-rate executor on the config: (p50, p99) ms of the main scenario."""
    with k6_server(conf) as url, tempfile.TemporaryDirectory() as tmp:
        env = {"URL": url, "RATE": str(rate), "WARM": f"{warmup_s:g}s", "DUR": f"{duration_s:g}s"}
        lat = _k6(k6, K6_OPEN, Path(tmp), [], env)["http_req_duration{scenario:main}"]
    return float(lat["med"]), float(lat["p(99)"])


def verify_side(conf: Path, rate: int, duration_s: float, slo: str | None) -> VerifySide:
    """`fastapi-tune verify --rate` as a user runs it; the recommended (one-worker) run's open loop."""
    cmd = [sys.executable, "-m", "fastapi_tune", "verify", APP, "-c", str(conf), "-e", f"GET {ROUTE}"]
    cmd += ["--app-dir", str(HERE), "--rate", str(rate), "--duration", f"{duration_s:g}", "--repeat", "1"]
    cmd += ["--json", *(["--slo", slo] if slo else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if not done.stdout:
        raise RuntimeError(f"verify failed (exit {done.returncode}): {done.stderr[-1500:]}")
    run = next(r for r in json.loads(done.stdout)["runs"] if r["label"] == "recommended")
    at = run["at_rate"]
    return VerifySide(
        at["latency_ms"]["p50"],
        at["latency_ms"]["p99"],
        at["arrival_rps"],
        at["served_rps"],
        at["beyond_capacity"],
        tuple(run["notes"]),
        done.returncode,
    )


@dataclass(frozen=True)
class Round:
    rates: tuple[int, int]  # half and 1.5x the capacity k6 measured just before
    k6: K6Side  # capacity: the mean of k6's closed loop before and after the round
    half: VerifySide
    over: VerifySide
    load: float  # 1-minute load average at the round's end


def one_round(k6: str, conf: Path, args: Any) -> Round:
    """k6's capacity and k6 at half of it, then verify at half and 1.5x, then k6 at half and its
    capacity again: k6's figures are the mean of both sides, bracketing verify's runs in time (on a
    shared machine the server's CPU share drifts within a minute, and a CPU route's latency with it)."""
    before = k6_capacity(k6, conf, args.duration)
    half, over = max(1, round(before / 2)), max(2, round(1.5 * before))
    first = k6_at_rate(k6, conf, half, args.warmup, args.duration)
    at_half = verify_side(conf, half, args.duration, None)
    at_over = verify_side(conf, over, args.duration, LOOSE_SLO)
    second = k6_at_rate(k6, conf, half, args.warmup, args.duration)
    after = k6_capacity(k6, conf, args.duration)
    them = K6Side((before + after) / 2, (first[0] + second[0]) / 2, (first[1] + second[1]) / 2)
    return Round((half, over), them, at_half, at_over, os.getloadavg()[0])


def _print_round(rnd: int, r: Round) -> None:
    h, o, rates = r.half, r.over, r.rates
    print(
        f"  r{rnd + 1} load {r.load:4.1f} | k6 capacity {r.k6.capacity_rps:6.1f}/s, at {rates[0]}/s p50"
        f" {r.k6.p50:6.2f} p99 {r.k6.p99:6.2f} | verify at {rates[0]}/s p50 {h.p50:6.2f} p99 {h.p99:6.2f}"
        f" arrived {h.arrival_rps:6.1f} served {h.served_rps:6.1f} line {'yes' if h.line else 'no'}"
        f" | at {rates[1]}/s served {o.served_rps:6.1f} exit {o.exit_code}",
        flush=True,
    )
    for note in (*h.notes, *o.notes):
        print(f"     note: {note}")
    if o.line:
        print(f"     {o.line}")


def _within(value: float, band: tuple[float, float]) -> bool:
    return band[0] <= value <= band[1]


def verify_section(k6: str, args: Any) -> int:
    """Run section 4 and print its table; 0 if its bar is met."""
    print(
        f"\n4. through `verify --rate` on {ROUTE} (gunicorn, one uvicorn worker): rates from k6's"
        f" capacity just before each round; load average {os.getloadavg()[0]:.1f}"
    )
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "one-worker.conf.py"
        conf.write_text(CONF)
        for rnd in range(args.rounds):
            rounds.append(one_round(k6, conf, args))
            _print_round(rnd, rounds[-1])
    p50 = statistics.median(r.half.p50 / r.k6.p50 for r in rounds)
    p99 = statistics.median(r.half.p99 / r.k6.p99 for r in rounds)
    kept = statistics.median(r.half.served_rps / r.half.arrival_rps for r in rounds)
    served = statistics.median(r.over.served_rps / r.k6.capacity_rps for r in rounds)
    lines_half = sum(r.half.line is not None for r in rounds)
    lines_over = sum(r.over.line is not None for r in rounds)
    exits = sum(r.over.exit_code == ExitCode.SLO_MISSED for r in rounds)
    print(f"medians over {len(rounds)} rounds (load average {os.getloadavg()[0]:.1f} at the end):")
    print(f"  at half capacity: verify/k6 p50 {p50:.3f}, p99 {p99:.3f}; served/arrival {kept:.3f};")
    print(f"    'beyond capacity' line in {lines_half} of {len(rounds)} rounds")
    print(
        f"  at 1.5x: served / k6 capacity {served:.3f};"
        f" line in {lines_over}, exit 7 in {exits} of {len(rounds)} rounds"
    )
    ok = (
        _within(p50, RATIO_BAND)
        and _within(p99, RATIO_BAND)
        and _within(kept, KEPT_UP_BAND)
        and _within(served, SERVED_BAND)
        and lines_half == 0
        and lines_over == exits == len(rounds)
    )
    print(f"bar of section 4: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1
