"""verify --servers' judgement, pure: which server serves this app best for the objective, by how much,
or a tie within the measured noise; which runs are out for their errors; whether any met the objective.

The objective is throughput (the closed loop), or with --slo the rate that meets it per MiB of the
server's memory: --rate R (R / MiB for each server that met the objective at R), or --capacity (the
highest rate meeting it, per MiB). verify_servers.py measures; render_verify_servers.py formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fastapi_tune.measure.stats import median
from fastapi_tune.plan.slo import Objective
from fastapi_tune.verify.judge import CAPACITY_RESOLUTION, Run, error_text, objective_verdict


@dataclass(frozen=True)
class ServerRun:
    """One server under the same load: its runs combined over the rounds, and what only servers differ in."""

    server: str
    run: Run  # rounds combined (verify_judge.combine); rss_mib: the whole process tree, master included
    boot_s: float  # median over the rounds: start until every worker answered
    rss_rounds: tuple[float, ...]  # total RSS of each round, for the memory's noise
    command: str  # what was run, one line
    left_out: tuple[str, ...] = ()  # options the plan has that verify turned off (worker recycling)

    @property
    def rss_spread(self) -> float | None:
        if len(self.rss_rounds) < 2:
            return None
        mid = median(self.rss_rounds)
        return (max(self.rss_rounds) - min(self.rss_rounds)) / mid if mid > 0 else None


@dataclass(frozen=True)
class ServersVerdict:
    """Which server is best for the objective, beyond the noise or not."""

    basis: str  # what was compared: "throughput", "req/s per MiB at the objective"
    scores: tuple[tuple[str, float], ...]  # (server, score), best first; comparable runs only
    best: str | None  # named only beyond the noise
    tied: tuple[str, ...]  # servers within the noise of the top score (the top included)
    noise: float | None
    line: str
    not_comparable: tuple[str, ...]
    slo_met: bool | None = None  # any server met the objective; None: no objective judged


def _not_comparable(runs: Sequence[ServerRun]) -> list[str]:
    out = [
        f"{r.server} failed {error_text(r.run)}: its figures measure the failures, not the server"
        for r in runs
        if r.run.requests and not r.run.comparable
    ]
    return out + [f"{r.server}: no request completed" for r in runs if not r.run.requests]


def _ranked(scores: list[tuple[str, float]], noise: float | None) -> tuple[str | None, tuple[str, ...]]:
    """(best beyond the noise or None, the servers tied with the top)."""
    if not scores or noise is None:
        return None, ()
    top = scores[0][1]
    tied = tuple(name for name, score in scores if score >= top * (1 - noise))
    return (tied[0] if len(tied) == 1 else None), tied


def _compare_line(scores: list[tuple[str, float]], unit: str, best: str | None, tied: Sequence[str]) -> str:
    """'granian 118.2 req/s: 1.09x gunicorn (108.4), 1.25x uvicorn (94.5)'."""
    (first, top), rest = scores[0], scores[1:]
    vs = ", ".join(f"{top / score:.2f}x {name} ({score:.4g})" for name, score in rest if score > 0)
    lead = f"{first} {top:.4g} {unit}" + (f": {vs}" if vs else "")
    if best is not None:
        return f"{best} serves this app best: {lead}"
    if len(tied) > 1:
        return f"tie within noise between {', '.join(tied)}: {lead}"
    return f"highest: {lead}"


def _noise_text(noise: float | None, what: str) -> str:
    if noise is None:
        return "one round, so no noise was measured and no best is named (--repeat 3 measures it)"
    return f"noise {noise:.0%} ({what})"


def _throughput(runs: Sequence[ServerRun], out: list[str]) -> ServersVerdict:
    clean = [r for r in runs if r.run.comparable]
    scores = sorted(((r.server, r.run.throughput_rps) for r in clean), key=lambda t: -t[1])
    spreads = [s for r in clean if (s := r.run.spread) is not None]
    noise = max(spreads) if spreads else None
    best, tied = _ranked(scores, noise)
    parts = []
    if scores:
        parts.append(_compare_line(scores, "req/s", best, tied))
        memory = ", ".join(f"{r.server} {r.run.rss_mib:.0f}" for r in clean)
        parts.append(f"memory in all (MiB): {memory}")
        parts.append(_noise_text(noise, "the largest spread of a server's throughput between rounds"))
    if out:
        parts.append("not comparable: " + "; ".join(out))
    return ServersVerdict("throughput", tuple(scores), best, tied, noise, "; ".join(parts), tuple(out))


def _per_mib(
    runs: Sequence[ServerRun], objective: Objective, out: list[str], capacity: bool
) -> ServersVerdict:
    """The rate meeting the objective per MiB: at --rate for those that met it, or the capacity found."""
    clean = [r for r in runs if r.run.comparable and r.run.rss_mib > 0]
    scores: list[tuple[str, float]] = []
    missed: list[str] = []
    for r in clean:
        if capacity:
            cap = r.run.capacity
            if cap is not None and cap.rate_rps is not None:
                scores.append((r.server, cap.rate_rps / r.run.rss_mib))
            else:
                missed.append(f"{r.server}: no rate tried met {objective.describe()}")
            continue
        verdict = objective_verdict(r.run, objective)
        if verdict is not None and verdict[0] and r.run.at_rate is not None:
            scores.append((r.server, r.run.at_rate.rate_rps / r.run.rss_mib))
        elif verdict is not None:
            missed.append(verdict[1])
    scores.sort(key=lambda t: -t[1])
    spreads = [s for r in clean if (s := r.rss_spread) is not None]
    # The capacity is searched to CAPACITY_RESOLUTION; memory varies between rounds by its spread.
    noise = max([*spreads, CAPACITY_RESOLUTION] if capacity else spreads) if spreads or capacity else None
    best, tied = _ranked(scores, noise)
    basis = "capacity at the objective per MiB" if capacity else "rate meeting the objective per MiB"
    parts = [_compare_line(scores, "req/s per MiB", best, tied)] if scores else []
    if not scores:
        parts.append(f"no server met {objective.describe()}")
    parts.append(
        _noise_text(noise, "memory between rounds" + (", capacity search steps" if capacity else ""))
    )
    if missed:
        parts.append("missed: " + "; ".join(missed))
    if out:
        parts.append("not comparable: " + "; ".join(out))
    met = bool(scores)
    return ServersVerdict(basis, tuple(scores), best, tied, noise, "; ".join(parts), tuple(out), met)


def judge_servers(
    runs: Sequence[ServerRun], objective: Objective | None = None, capacity: bool = False
) -> ServersVerdict | None:
    """The best server for the objective (throughput without one), by how much, or a tie within noise."""
    if not runs:
        return None
    out = _not_comparable(runs)
    if objective is None:
        return _throughput(runs, out)
    return _per_mib(runs, objective, out, capacity)
