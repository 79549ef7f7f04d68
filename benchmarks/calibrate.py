"""Does a verdict's confidence mean what it says? The reliability table over labelled apps.

Probes the project's labelled apps with the defaults, under one uvicorn worker and two gunicorn
workers: the sample app (fastapi_tune/sample_app.py), tests/apps/kinds_app.py, stacks_app.py and
probe_app.py (its routes that answer), each route with a known kind. Their reports and labels go to
--out, beside the generated many-route app's that benchmarks/breadth.py writes there. Then every
saved report is judged again with today's classifier (judging is pure: no probe is needed to try a
new confidence formula) and the verdicts are binned by confidence:

    band        verdicts  right   mean confidence   (triage / ladder)

Bar: the verdicts at 0.8 or more are right at least 8 times in 10 (and those at 0.9 or more 9 in
10). With --reuse the saved reports are judged again without probing.

    .venv/bin/python benchmarks/calibrate.py [--reuse] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from fastapi_tune.judge.classify import classify_report
from fastapi_tune.measure.report import EndpointClass, report_from_json
from tests.servers import serve

REPO: Final = Path(__file__).resolve().parent.parent
CONFIGS: Final = {"uvicorn-1": ("uvicorn", 1), "gunicorn-2": ("gunicorn", 2)}  # as benchmarks/breadth.py
BANDS: Final = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)
# The routes of each labelled app and their kinds; probe_app's other routes fail on purpose.
APPS: Final = {
    "fastapi_tune.sample_app:app": {
        "GET /orders/{order_id}": "io-bound",
        "GET /report": "threadpool-bound",
        "GET /inventory": "loop-blocking",
        "GET /score": "cpu-bound",
    },
    "tests.apps.kinds_app:app": {
        "GET /io": "io-bound",
        "GET /cpu": "cpu-bound",
        "GET /loop": "loop-blocking",
        "GET /threadpool": "threadpool-bound",
    },
    "tests.apps.stacks_app:app": {
        "GET /io": "io-bound",
        "GET /cpu": "cpu-bound",
        "GET /loop": "loop-blocking",
        "GET /threadpool": "threadpool-bound",
    },
    "tests.apps.probe_app:app": {
        "GET /fast": "io-bound",
        "GET /items/{item_id}": "cpu-bound",  # trivial: the framework's own CPU
        "GET /search": "cpu-bound",
    },
}


@dataclass(frozen=True)
class Judged:
    source: str
    route: str
    label: str
    cls: str
    confidence: float
    depth: str

    @property
    def right(self) -> bool:
        return self.cls == self.label


def probe_app(app: str, labels: dict[str, str], config: str, out_dir: Path) -> None:
    """Serve `app`, probe exactly its labelled routes with the defaults, save report and labels."""
    server, workers = CONFIGS[config]
    name = f"{app.split(':', maxsplit=1)[0].rsplit('.', 1)[-1]}-{config}"
    out = out_dir / f"{name}.json"
    endpoints = [a for key in labels for a in ("-e", key)]
    with serve(app, server=server, workers=workers) as s:
        proc = subprocess.run(
            [sys.executable, "-m", "fastapi_tune", "probe", s.url, "-o", str(out), *endpoints],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        sys.exit(f"probe of {app} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (out_dir / f"{name}.labels.json").write_text(json.dumps(labels, indent=1))
    print(f"probed {name}", flush=True)


def judged(out_dir: Path) -> list[Judged]:
    """Every labelled endpoint of every saved report, judged again by today's classifier."""
    found: list[Judged] = []
    for labels_path in sorted(out_dir.glob("*.labels.json")):
        report_path = labels_path.with_name(labels_path.name.replace(".labels.json", ".json"))
        if not report_path.exists():
            continue
        labels = json.loads(labels_path.read_text())
        report = classify_report(report_from_json(json.loads(report_path.read_text()), str(report_path)))
        for e in report.endpoints:
            key = f"{e.method} {e.path}"
            if key in labels and e.verdict is not None:
                depth = str(e.evidence_depth) if e.evidence_depth else "ladder"
                found.append(
                    Judged(report_path.stem, key, labels[key], e.verdict.cls, e.verdict.confidence, depth)
                )
    return found


def table(rows: list[Judged]) -> list[str]:
    lines = ["band        verdicts   right  mean conf   triage (n, right)   ladder (n, right)"]
    for lo, hi in itertools.pairwise(BANDS):
        band = [r for r in rows if lo <= r.confidence < hi]
        if not band:
            continue
        right = sum(r.right for r in band) / len(band)
        mean = sum(r.confidence for r in band) / len(band)
        parts = []
        for depth in ("triage", "ladder"):
            sub = [r for r in band if r.depth == depth]
            share = f"{sum(r.right for r in sub) / len(sub):.0%}" if sub else "-"
            parts.append(f"{len(sub):5} {share:>5}")
        label = f"{lo:.1f}-{min(hi, 1.0):.1f}"
        lines.append(f"{label:11} {len(band):8} {right:7.0%} {mean:10.2f}   {parts[0]:17}   {parts[1]}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--reuse", action="store_true", help="judge the saved reports again, probe nothing")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        for app, labels in APPS.items():
            for config in args.configs:
                probe_app(app, labels, config, args.out)
    rows = judged(args.out)
    if not rows:
        sys.exit(f"no labelled reports in {args.out}: run without --reuse, or benchmarks/breadth.py")
    for line in table(rows):
        print(line)
    wrong = [r for r in rows if not r.right]
    inconclusive = sum(r.cls == EndpointClass.INCONCLUSIVE for r in rows)
    print(f"{len(rows)} verdicts, {len(rows) - len(wrong)} right, {inconclusive} inconclusive")
    for r in sorted(wrong, key=lambda r: -r.confidence)[:15]:
        print(f"  wrong at {r.confidence:.2f} ({r.depth}): {r.source} {r.route}: {r.cls}, label {r.label}")
    high = [r for r in rows if r.confidence >= 0.8]
    higher = [r for r in rows if r.confidence >= 0.9]
    ok = True
    for name, group, bar in (("0.8", high, 0.8), ("0.9", higher, 0.9)):
        if group:
            share = sum(r.right for r in group) / len(group)
            print(f"verdicts at >= {name}: {share:.1%} right ({len(group)})")
            ok = ok and share >= bar
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
