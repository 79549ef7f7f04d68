"""Which server: `verify --servers` against wrk on the project's mixed app, per server, as ratios.

On tests/apps/kinds_app.py (a CPU route, an async I/O route, a blocking call in `async def`, a `def` route
in AnyIO's threads; equal shares), through the CLI as a user would:

  1. probe the app under one uvicorn worker;
  2. `verify APP --probe REPORT --servers gunicorn,uvicorn,granian --json`: each server started with the
     plan's values (the same worker count for all), the same mixed load, interleaved rounds, medians;
  3. the referee: wrk -t2 with `Connection: close` (a new connection per request, so every worker takes
     its share) over the same routes, each server started with exactly the command verify runs (the
     plan's values on a loopback port, recycling off). Per server and round, `verify --servers NAME
     --repeat 1` and wrk run back to back, the order alternating, so each pair shares the machine's
     state; the ratio is the median over the pairs' ratios.

Prints per server verify's and wrk's throughput and their ratio (bar: within 15%), which server the
three-server verify names best (or its tie: then its highest) and whether that server's wrk
throughput is within 5% of the best wrk measures.
Rounds during which other processes took more than 0.1 core are flagged (the machine may be shared).
Exits 1 if a bar is missed. Needs wrk (apt-get install wrk). About 4 minutes on 2 cores.

Run from the repo root:  .venv/bin/python benchmarks/servers.py [--rounds 4] [--duration 4] [--workers N]
(--workers pins every server's count through a copy of the vm profile with min = max = N).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_tune.measure.appenv import read_app_env
from fastapi_tune.measure.host import read_host
from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.report import load_report
from fastapi_tune.plan.model import Choices
from fastapi_tune.plan.plan import make_plan
from fastapi_tune.plan.profiles import load_profile
from fastapi_tune.plan.server_evidence import server_evidence
from fastapi_tune.plan.server_model import Server, ServerPlan, for_measuring, server_argv
from fastapi_tune.plan.servers import plan_server

REPO: Final = Path(__file__).resolve().parent.parent
APP: Final = "tests.apps.kinds_app:app"
PATHS: Final = ("/cpu", "/io", "/loop", "/threadpool")
SERVERS: Final = (Server.GUNICORN, Server.UVICORN, Server.GRANIAN)
CLI: Final = [sys.executable, "-m", "fastapi_tune"]
RATIO_BAND: Final = 0.15
BEST_BAR: Final = 0.95
NOISE_LIMIT_CORES: Final = 0.10

WRK_LUA: Final = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Connection"] = "close"})
end
"""


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, env=env(), capture_output=True, text=True, check=False)


def probe(work: Path) -> Path:
    """The mixed app probed under one uvicorn worker, as `tune` would."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with run_server(cmd, port, ready_path="/io", cwd=REPO, env=env()) as s:
        endpoints = [a for p in PATHS for a in ("-e", f"GET {p}")]
        r = cli("probe", s.url, *endpoints, "--no-profile", "-o", "report.json", cwd=work)
        if r.returncode != 0:
            sys.exit(f"probe failed:\n{r.stderr}")
    return work / "report.json"


def bench_profile(work: Path, workers: int | None) -> str:
    """vm, or vm with the worker count pinned (min = max = N) so every server and run has N."""
    if workers is None:
        return "vm"
    text = (REPO / "profiles" / "vm.yaml").read_text(encoding="utf-8")
    # The first min/max are the workers' (the timeout's come later in the file).
    text = re.sub(r"^  min: \d+", f"  min: {workers}", text, count=1, flags=re.M)
    text = re.sub(r"^  max: \d+", f"  max: {workers}", text, count=1, flags=re.M)
    path = work / f"vm-{workers}-workers.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def server_plans(report: Path, profile_name: str) -> dict[Server, ServerPlan]:
    """The plans verify --servers makes on this host, for the referee to run the same."""
    host, profile, loaded = read_host(), load_profile(profile_name), load_report(report)
    stack = read_app_env(sys.executable, REPO)
    plan = make_plan(host, loaded, profile, Choices(app=APP, gunicorn_version=stack.gunicorn, stack=stack))
    evidence = server_evidence(host, loaded, profile)
    return {s: plan_server(s, plan, evidence) for s in SERVERS}


class Others:
    """CPU burnt by processes other than the server's tree, this script and its children (wrk)."""

    def __init__(self, pid: int) -> None:
        master = psutil.Process(pid)
        self.tree = [master, *master.children(recursive=True)]

    def _ours(self) -> float:
        own = psutil.Process().cpu_times()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = own.user + own.system + kids.ru_utime + kids.ru_stime
        for p in self.tree:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        return total

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        # guest time is already counted in user time on Linux: leave it out of the sum.
        skipped = ("idle", "iowait", "guest", "guest_nice")
        return float(sum(t)) - sum(getattr(t, name, 0.0) for name in skipped)

    def start(self) -> None:
        self.t0, self.busy0, self.ours0 = time.perf_counter(), self._busy(), self._ours()

    def cores(self) -> float:
        others = (self._busy() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, others) / (time.perf_counter() - self.t0)


@contextmanager
def started(sp: ServerPlan) -> Iterator[tuple[str, int]]:
    """The server with exactly the command verify runs: the plan on a loopback port, recycling off."""
    port = free_port()
    measuring, _ = for_measuring(sp, port)
    argv = list(server_argv(measuring, (sys.executable, "-m", sp.server.value)))
    if sp.server is Server.GUNICORN:
        argv.append("--no-control-socket")
    workers = sp.workers if sp.workers > 1 else 0
    with run_server(argv, port, ready_path="/io", workers=workers, cwd=REPO, env=env(), name=sp.server) as s:
        yield s.url, s.pid


def wrk_rps(url: str, lua: Path, duration: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[1])


@dataclass
class Pairs:
    """Per server, rounds of (verify's req/s, wrk's req/s, other processes' cores), run back to back."""

    rounds: dict[Server, list[tuple[float, float, float]]]


def wrk_once(sp: ServerPlan, lua: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(req/s, other processes' cores) of one wrk run on a freshly booted server, after a 1 s warm-up."""
    with started(sp) as (url, pid):
        wrk_rps(url, lua, 1.0, args.concurrency)  # warm-up, as verify's
        noise = Others(pid)
        noise.start()
        rps = wrk_rps(url, lua, args.duration, args.concurrency)
        return rps, noise.cores()


def verify_once(server: Server, report: Path, work: Path, args: argparse.Namespace) -> float:
    """One server through the CLI, one round: its closed-loop throughput."""
    data = verify(report, work, args, servers=(server,), rounds=1)
    return float(data["runs"][0]["throughput_rps"])


def pair_rounds(
    plans: dict[Server, ServerPlan], report: Path, lua: Path, work: Path, args: argparse.Namespace
) -> Pairs:
    """verify and wrk back to back on each server, the order alternating by round: the pair shares the
    machine's state, so their ratio holds where the machine's drift moves both."""
    pairs = Pairs({s: [] for s in plans})
    for n in range(args.rounds):
        for server, sp in plans.items():
            if n % 2 == 0:
                ours = verify_once(server, report, work, args)
                theirs, others = wrk_once(sp, lua, args)
            else:
                theirs, others = wrk_once(sp, lua, args)
                ours = verify_once(server, report, work, args)
            pairs.rounds[server].append((ours, theirs, others))
            print(
                f"  round {n + 1} {server}: verify {ours:.1f}, wrk {theirs:.1f} req/s,"
                f" ratio {ours / theirs:.2f} (others {others:.2f} cores)",
                flush=True,
            )
    return pairs


def verify(
    report: Path,
    work: Path,
    args: argparse.Namespace,
    servers: tuple[Server, ...] = SERVERS,
    rounds: int | None = None,
) -> dict[str, Any]:
    r = cli(
        "verify", APP, "--probe", str(report), "--servers", ",".join(servers), "--json",
        "--profile", args.profile,
        "--repeat", str(rounds or args.rounds), "--duration", f"{args.duration:g}",
        "--concurrency", str(args.concurrency), cwd=work,
    )  # fmt: skip
    if r.returncode not in (0, 8):
        sys.exit(f"verify failed with {r.returncode}:\n{r.stderr}")
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def report_figures(data: dict[str, Any], pairs: Pairs) -> bool:
    """Print the ratios and the bars; True when both bars hold."""
    ok = True
    wrk: dict[str, float] = {}
    print(f"\n{'server':10} {'verify':>8} {'wrk':>8} {'ratio':>6}  pairs (verify/wrk, others' cores)")
    for server, rounds in pairs.rounds.items():
        ours = statistics.median(r[0] for r in rounds)
        wrk[server.value] = statistics.median(r[1] for r in rounds)
        ratio = statistics.median(r[0] / r[1] for r in rounds)
        within = abs(ratio - 1) <= RATIO_BAND
        ok &= within
        shown = ", ".join(f"{a / b:.2f} ({c:.1f})" for a, b, c in rounds)
        flag = "" if within else "  <- outside 15%"
        print(f"{server.value:10} {ours:>8.1f} {wrk[server.value]:>8.1f} {ratio:>6.2f}  {shown}{flag}")
    best_wrk = max(wrk, key=lambda k: wrk[k])
    pick = data["best"] or (data["scores"][0]["server"] if data["scores"] else None)
    if pick is None:
        print("verify --servers named no server (no comparable run)")
        return False
    named = f"best {pick}" if data["best"] else f"a tie {data['tied_within_noise']}, highest {pick}"
    share = wrk[pick] / wrk[best_wrk]
    ok &= share >= BEST_BAR
    runs = ", ".join(
        f"{r['server']} {r['throughput_rps']:.1f} {r['throughput_rps_rounds']}" for r in data["runs"]
    )
    print(f"verify --servers ({data['repeat']} rounds): {runs}")
    print(f"verify names {named} (noise {data['noise']}); wrk's best: {best_wrk}")
    print(f"wrk throughput of verify's pick / wrk's best = {share:.3f} (bar >= {BEST_BAR})")
    print(f"verify's verdict: {data['verdict']}")
    busy = max(r[2] for rounds in pairs.rounds.values() for r in rounds)
    if busy > NOISE_LIMIT_CORES:
        print(f"shared machine: other processes took up to {busy:.2f} cores during the wrk runs")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=None, help="pin every server's workers (default: the plan's)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = probe(work)
        args.profile = bench_profile(work, args.workers)
        plans = server_plans(report, args.profile)
        lua = work / "mix.lua"
        lua.write_text(WRK_LUA % ", ".join(f'"{p}"' for p in PATHS))
        print(
            f"plan: {plans[Server.GUNICORN].workers} workers for every server; {args.rounds} rounds of"
            f" {args.duration:g} s at {args.concurrency} connections",
            flush=True,
        )
        pairs = pair_rounds(plans, report, lua, work, args)
        print("  verify --servers (all three, interleaved rounds) ...", flush=True)
        data = verify(report, work, args)
        ok = report_figures(data, pairs)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
