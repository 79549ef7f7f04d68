"""`check`: serve the app, probe it, and judge it against a saved baseline; the baseline is written when
there is none yet (or with --update). `compare`: the same judgement over two saved reports.

The app is started and stopped by the same code as `tune` (workflow.probe_own_app); the judging is
judge/compare.py's. Nothing here prints.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi_tune.core.errors import BadInputError
from fastapi_tune.flows.workflow import ServedProbe, ServeEvents, probe_own_app, save_report
from fastapi_tune.judge.compare import BaselineComparison, check_same_app, compare_reports
from fastapi_tune.measure.host import HostFacts
from fastapi_tune.measure.probe_options import ProbeOptions
from fastapi_tune.measure.report import ProbeReport, load_report

# The name the new run goes by in messages and titles.
THIS_RUN = "this run"


@dataclass(frozen=True)
class CheckOptions:
    app: str  # module:attribute
    baseline: Path
    probe: ProbeOptions  # everything but the URL, which is the started server's
    python: str = sys.executable
    app_dir: Path = Path()
    update: bool = False  # replace the baseline with this run's report
    out: Path | None = None  # also save this run's report here


@dataclass(frozen=True)
class CheckResult:
    served: ServedProbe
    baseline: ProbeReport | None  # the baseline compared with; None when there was none
    comparison: BaselineComparison | None  # None: no baseline, another app's (with --update), or a bad end
    saved_baseline: bool  # this run's report was written to the baseline path
    not_compared: str | None = None  # why an existing baseline was not compared (another app, --update)

    @property
    def report(self) -> ProbeReport:
        return self.served.outcome.report


def load_baseline(path: Path) -> ProbeReport | None:
    """The baseline, or None when the file does not exist yet (one that is not a report: exit 3)."""
    return load_report(path) if path.exists() else None


def _levels(raw: Any) -> tuple[int, ...] | None:
    if isinstance(raw, list) and raw and all(isinstance(n, int) and n >= 1 for n in raw):
        return tuple(raw)
    return None


def _positive_int(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else None


def _positive_float(raw: Any) -> float | None:
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) and raw > 0 else None


def inherit_ladder(probe: ProbeOptions, baseline: ProbeReport | None) -> ProbeOptions:
    """The baseline's ladder (levels, top concurrency, seconds per level) where not given: the same
    concurrencies in both runs are what the comparison pairs."""
    if baseline is None:
        return probe
    s = baseline.settings
    return replace(
        probe,
        levels=probe.levels or _levels(s.get("levels")),
        max_concurrency=probe.max_concurrency or _positive_int(s.get("max_concurrency")),
        duration_s=probe.duration_s or _positive_float(s.get("duration_s")),
    )


def run_check(options: CheckOptions, host: HostFacts, events: ServeEvents) -> CheckResult:
    """Read the baseline (before anything starts), serve and probe the app, judge it against the
    baseline, and write the baseline when there was none or with --update."""
    baseline = load_baseline(options.baseline)
    probe = inherit_ladder(options.probe, baseline)
    served = probe_own_app(options.app, options.python, options.app_dir, probe, host, events)
    # The app's name goes into the report: `compare` refuses two reports of different apps.
    report = served.outcome.report
    report = replace(report, settings={**report.settings, "app": options.app})
    served = replace(served, outcome=replace(served.outcome, report=report))
    if options.out is not None:
        save_report(report, options.out)
    if served.outcome.error is not None or report.interrupted:
        return CheckResult(served, baseline, None, saved_baseline=False)
    comparison, not_compared = None, None
    if baseline is not None:
        try:
            check_same_app(baseline, report, str(options.baseline), THIS_RUN)
            comparison = compare_reports(baseline, report)
        except BadInputError as e:
            if not options.update:
                raise
            not_compared = str(e)
    saved = baseline is None or options.update
    if saved:
        save_report(report, options.baseline)
    return CheckResult(served, baseline, comparison, saved, not_compared)


def compare_files(base: Path, new: Path) -> BaselineComparison:
    """Two saved reports, checked to be of one app, judged route by route."""
    a, b = load_report(base), load_report(new)
    if a is None or b is None:  # explicit paths: load_report raises for a missing file before this
        raise BadInputError(f"{base if a is None else new}: no such probe report")
    check_same_app(a, b, str(base), str(new))
    return compare_reports(a, b)
