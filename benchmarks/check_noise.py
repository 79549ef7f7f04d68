"""Does `fastapi-tune check` stay quiet on an unchanged app on a busy machine, and catch real changes?

Through the CLI, as CI runs it, on tests/apps/check_app.py: one `check` with no baseline saves it
(the machine as it is), then `--runs` checks of the unchanged app with a busy loop per core beside
each (the issue's bar: no false alarm, every run exits 0), then `--variant-runs` checks of each
variant with the same busy loops: `sleep` (time.sleep(0.02) in an `async def` route) and `cpu` (2.5x
the CPU on /score) must exit 9 naming the changed route. Per run it prints the exit code, each
route's status, and for each judged metric change / band (how close the run came to an alarm: a
false alarm needs > 1). Exits 1 when a bar is missed.

Run from the repo root:  .venv/bin/python benchmarks/check_noise.py [--runs 10] [--variant-runs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "tests" / "apps"
# The route each variant changes (tests/apps/check_app.py).
VARIANTS = {"sleep": "GET /orders/{order_id}", "cpu": "GET /score"}


def check(baseline: Path, variant: str, max_seconds: float, hogs: int) -> tuple[int, dict[str, Any], float]:
    """One `fastapi-tune check --json` with `hogs` busy loops beside it: exit code, JSON, seconds."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fastapi_tune",
                "check",
                "check_app:app",
                "--app-dir",
                str(APPS),
                "--baseline",
                str(baseline),
                "--max-seconds",
                str(max_seconds),
                "--json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "FASTAPI_TUNE_CHECK_VARIANT": variant, "GITHUB_ACTIONS": ""},
            cwd=REPO,
            timeout=max_seconds + 120,
            check=False,
        )
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    elapsed = time.monotonic() - started
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {}
    if proc.returncode not in (0, 9, 10):
        print(proc.stderr[-2000:], file=sys.stderr)
    return proc.returncode, data, elapsed


def closeness(route: dict[str, Any]) -> str:
    """Each judged metric's change / band in log terms (> 1 would be an alarm), e.g. `cpu 0.41 p50 0.12`."""
    parts = []
    for name, m in route["metrics"].items():
        if m["outcome"] == "not judged" or m["change"] is None or not m["band"]:
            continue
        ratio = math.log1p(m["change"]) / math.log1p(m["band"])
        parts.append(f"{name.split('_')[0]} {ratio:+.2f}")
    return " ".join(parts)


def show(label: str, code: int, data: dict[str, Any], elapsed: float) -> None:
    comparison = data.get("comparison") or {}
    print(
        f"{label}: exit {code} in {elapsed:.0f} s" + ("; busy runner noted" if comparison.get("busy") else "")
    )
    for r in comparison.get("routes", []):
        klass = r["class"] or {}
        moved = (
            f" ({klass['base']} -> {klass['new']}: {klass['outcome']})"
            if klass.get("base") != klass.get("new")
            else ""
        )
        print(f"    {r['method']} {r['path']}: {r['status']}{moved}  {closeness(r)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="unchanged runs with a busy loop per core")
    parser.add_argument("--variant-runs", type=int, default=3, help="runs of each variant")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()
    hogs = os.cpu_count() or 2
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline.json"
        code, data, elapsed = check(baseline, "", args.max_seconds, 0)
        print(f"baseline: exit {code} in {elapsed:.0f} s, saved: {data.get('baseline_saved')}")
        if code != 0 or not baseline.exists():
            return 1
        quiet = 0
        for i in range(args.runs):
            code, data, elapsed = check(baseline, "", args.max_seconds, hogs)
            show(f"unchanged {i + 1}/{args.runs}, {hogs} busy loops", code, data, elapsed)
            quiet += code == 0
        print(f"unchanged on a busy machine: {quiet}/{args.runs} passed (bar: all)")
        if quiet != args.runs:
            failures.append("a false alarm (or nothing judged) on the unchanged app")
        for variant, key in VARIANTS.items():
            caught = 0
            for i in range(args.variant_runs):
                code, data, elapsed = check(baseline, variant, args.max_seconds, hogs)
                show(f"{variant} {i + 1}/{args.variant_runs}, {hogs} busy loops", code, data, elapsed)
                routes = {
                    f"{r['method']} {r['path']}": r["status"]
                    for r in (data.get("comparison") or {}).get("routes", [])
                }
                caught += code == 9 and routes.get(key) == "regressed"
            print(f"{variant}: {caught}/{args.variant_runs} caught at {key} (bar: all)")
            if caught != args.variant_runs:
                failures.append(f"{variant} missed")
    print("OK" if not failures else "MISSED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
