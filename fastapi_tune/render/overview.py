"""What a report shows first, on one screen: the order of the routes, the skipped ones grouped,
and which routes earn a full panel. Pure functions on the report's types; the renderers only draw.

The rule, in one place:
- Routes are ordered by standing: problems first (loop-blocking, stalled, pool-bound,
  threadpool-bound, or a ladder that ended on errors or a dead server), then the routes that size
  the plan (cpu-bound, serialized), then the rest (io-bound, inconclusive); within a standing by
  class in that order, then the most certain verdict first, then as the report lists them.
- Panels (levels, verdict, advice) go to the routes that are problems or size the plan, in that
  order, one per class (the table lists the others beside it), leaving out verdicts too unsure to
  size a plan (plan.model.MIN_PLAN_CONFIDENCE) unless their ladder failed, at most PANELS_MAX,
  while they fit in PANEL_LINES (the first always shows). A small app (SMALL_APP_ROUTES measured
  routes or fewer) offers every route, under the same bounds.
  `--verbose` shows every panel in full; the JSON and the HTML always hold everything.
- Skipped routes are grouped by the head of their reason (the text before ': ' or '; '), largest
  group first, each with its count and one example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from fastapi_tune.discover.openapi import Skipped
from fastapi_tune.measure.report import Endpoint, EndpointClass, StopReason
from fastapi_tune.measure.stack_attribution import Hotspot, ThreadKind
from fastapi_tune.plan.model import MIN_PLAN_CONFIDENCE

# A handful of panels at most: each is 10-30 lines, and the table above them already says the verdict.
PANELS_MAX: Final = 4
# Lines the panels may take together by default (about one screen beside the table).
PANEL_LINES: Final = 45
# Up to this many measured routes, every route may have a panel (the demo's four keep theirs).
SMALL_APP_ROUTES: Final = 6
# Distinct skip reasons shown one per line; the rest are counted on one line.
SKIP_GROUPS_SHOWN: Final = 8
# A stack line named in the table must have held its thread this share of the samples.
LIMITING_LINE_MIN_SHARE: Final = 0.2


class Standing(IntEnum):
    """Where a route stands in the report: what to read first."""

    PROBLEM = 0  # something to fix before sizing anything
    SIZES_PLAN = 1  # one process per CPU: these decide the worker count
    OTHER = 2


CLASS_ORDER: Final = (
    EndpointClass.LOOP_BLOCKING,
    EndpointClass.STALLED,
    EndpointClass.POOL_BOUND,
    EndpointClass.THREADPOOL_BOUND,
    EndpointClass.CPU_BOUND,
    EndpointClass.SERIALIZED,
    EndpointClass.IO_BOUND,
    EndpointClass.INCONCLUSIVE,
)
_PROBLEM_CLASSES: Final = frozenset(CLASS_ORDER[:4])
_SIZING_CLASSES: Final = frozenset({EndpointClass.CPU_BOUND, EndpointClass.SERIALIZED})
# Ladders that ended on these are a problem whatever the class says (often inconclusive).
_FAILED_STOPS: Final = frozenset({StopReason.ERRORS, StopReason.SERVER_DIED, StopReason.STALLED})
# Stops that need no mention: the ladder ran its course.
NORMAL_STOPS: Final = frozenset({StopReason.MAX_LEVEL, StopReason.SATURATED, StopReason.IMPORTED})
# Which thread's top line limits a route of each class; other classes take the top line of any thread.
_LIMITING_THREAD: Final = {
    EndpointClass.LOOP_BLOCKING: ThreadKind.EVENT_LOOP,
    EndpointClass.CPU_BOUND: ThreadKind.EVENT_LOOP,
    EndpointClass.SERIALIZED: ThreadKind.EVENT_LOOP,
    EndpointClass.THREADPOOL_BOUND: ThreadKind.THREADPOOL,
    EndpointClass.POOL_BOUND: ThreadKind.THREADPOOL,
}


def standing(ep: Endpoint) -> Standing:
    """Problem, plan-sizing or other, from the verdict's class and how the ladder ended."""
    cls = ep.verdict.cls if ep.verdict else None
    if cls in _PROBLEM_CLASSES or ep.stop_reason in _FAILED_STOPS:
        return Standing.PROBLEM
    if cls in _SIZING_CLASSES:
        return Standing.SIZES_PLAN
    return Standing.OTHER


def _rank(ep: Endpoint) -> tuple[int, int, float]:
    cls = ep.verdict.cls if ep.verdict else None
    at = CLASS_ORDER.index(cls) if cls is not None else len(CLASS_ORDER)
    confidence = ep.verdict.confidence if ep.verdict else 0.0
    return standing(ep), at, -confidence


def ordered(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """The routes in the order the report shows them (the module docstring's rule)."""
    return sorted(endpoints, key=_rank)  # stable: ties keep the probe's order


def peak_rps(ep: Endpoint) -> float:
    """The highest throughput any level reached."""
    return max((lv.throughput_rps for lv in ep.levels), default=0.0)


def limiting_spot(ep: Endpoint) -> Hotspot | None:
    """The app line the stacks name as this route's limit, when one held its thread long enough."""
    if ep.profile is None:
        return None
    cls = ep.verdict.cls if ep.verdict else None
    wanted = _LIMITING_THREAD.get(cls) if cls is not None else None
    spots = [h for h in ep.profile.hotspots if wanted is None or h.thread is wanted]
    return next((h for h in spots if h.share >= LIMITING_LINE_MIN_SHARE), None)


def unusual_stop(ep: Endpoint) -> str | None:
    """'errors: 7/100 failed at c=8' when the ladder did not run its course; None when it did."""
    if ep.stop_reason in NORMAL_STOPS:
        return None
    return f"{ep.stop_reason}: {ep.stop_detail}" if ep.stop_detail else str(ep.stop_reason)


def panel_candidates(ranked: Sequence[Endpoint]) -> list[int]:
    """Indexes (into `ranked`) of the routes that may get a panel, most important first."""
    if len(ranked) <= SMALL_APP_ROUTES:
        return list(range(len(ranked)))
    seen: set[EndpointClass | None] = set()
    chosen: list[int] = []
    for i, ep in enumerate(ranked):
        cls = ep.verdict.cls if ep.verdict else None
        unsure = ep.verdict is None or ep.verdict.confidence < MIN_PLAN_CONFIDENCE
        if standing(ep) is Standing.OTHER or cls in seen or (unsure and ep.stop_reason not in _FAILED_STOPS):
            continue
        seen.add(cls)
        chosen.append(i)
    return chosen


def choose_panels(candidates: Sequence[int], heights: Sequence[int]) -> list[int]:
    """The candidates that get a panel: in order, at most PANELS_MAX, within PANEL_LINES (the first
    always). `heights[k]` is the drawn height of candidate k's panel."""
    chosen: list[int] = []
    used = 0
    for index, height in zip(candidates, heights, strict=True):
        if len(chosen) == PANELS_MAX:
            break
        if chosen and used + height > PANEL_LINES:
            break  # a later, smaller panel would jump the queue: the order is the point
        chosen.append(index)
        used += height
    return chosen


@dataclass(frozen=True)
class SkipGroup:
    """Skipped routes that share a reason: how many, and one of them as the example."""

    reason: str  # the head shared by the group, e.g. "not a safe method"
    count: int
    example: Skipped
    detail: str  # the rest of the example's reason (the fix, the status's hint), '' when none


def _split_reason(reason: str) -> tuple[str, str]:
    cuts = [i for i in (reason.find(": "), reason.find("; ")) if i > 0]
    if not cuts:
        return reason, ""
    cut = min(cuts)
    return reason[:cut], reason[cut + 2 :]


def skip_groups(skipped: Sequence[Skipped]) -> list[SkipGroup]:
    """Skipped routes grouped by the head of their reason, largest group first (then first seen)."""
    heads: dict[str, list[Skipped]] = {}
    for s in skipped:
        heads.setdefault(_split_reason(s.reason)[0], []).append(s)
    groups = [SkipGroup(head, len(members), members[0], _split_reason(members[0].reason)[1])
              for head, members in heads.items()]  # fmt: skip
    return sorted(groups, key=lambda g: -g.count)  # stable: ties keep the report's order
