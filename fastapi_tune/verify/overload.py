"""verify's overload step: the planned config and its uncapped alternative, far past the knee, side by side.

Each is started as a user would start it (gunicorn -c CONFIG), loaded with a few clients (its
goodput at BASE_CLIENTS: what it serves when not overloaded), then with the stress level (in flight
per worker x its workers, keep-alive, completions counted however late), then asked one request at
c=1 (wedged when no answer comes within the timeout). The uncapped alternative is the same config
with the admission cap turned off (ADMISSION_LIMIT=0), so the only difference is the cap.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

from fastapi_tune.core.rules import OverloadBehaviour, overload_behaviour
from fastapi_tune.measure.launch import free_port, run_server
from fastapi_tune.measure.loadgen import LiveCount, RequestSpec
from fastapi_tune.measure.overload import answer_after, burst_trial
from fastapi_tune.measure.overload_report import OverloadTrial
from fastapi_tune.plan.model import ADMISSION_MODULE

# "Its goodput at 4 clients": what the config serves when it is not overloaded.
BASE_CLIENTS: Final = 4
# Short rounds, interleaved: each stress round is compared with the base round just before it, and
# the median of ROUNDS such ratios is the verdict's (measured on a machine at load 10 on 2 cores:
# single ratios 0.2-4.8, medians of 7 within 0.94-1.06 for the same config).
ROUNDS: Final = 7
_BASE_S: Final = 0.6
_STRESS_S: Final = 0.8
_DRAIN_S: Final = 3.0
UNCAPPED: Final = "uncapped"
# The environment variable the admission module reads; 0 turns the cap off.
ADMISSION_ENV: Final = "ADMISSION_LIMIT"


@dataclass(frozen=True)
class OverloadCheck:
    """One config at BASE_CLIENTS, then at the stress level, then asked once more."""

    label: str
    cap: int | None  # requests in flight per worker the config admits; None: no cap
    workers: int
    base: OverloadTrial  # the median round
    stress: OverloadTrial  # the median round, with the wedge check after the last
    behaviour: OverloadBehaviour
    kept_rounds: tuple[float, ...] = ()  # each round's stress goodput / the base round's just before

    @property
    def kept(self) -> float | None:
        """Goodput at the stress level / at BASE_CLIENTS: the median of the rounds' ratios (a pair
        taken seconds apart shares the machine's load of the moment; medians of each would not)."""
        if not self.kept_rounds:
            return None
        ranked = sorted(self.kept_rounds)
        return ranked[(len(ranked) - 1) // 2]

    @property
    def share_503(self) -> float:
        answered = self.stress.completed + self.stress.errors
        return self.stress.errors_by_status.get(503, 0) / answered if answered else 0.0


class CheckEvents(Protocol):
    def step(self, text: str) -> None: ...


def config_cap(config: Path) -> int | None:
    """The cap a config written by `recommend` carries (its admission module's LIMIT); None without one."""
    try:
        text = config.read_text(encoding="utf-8")
        if f"from {ADMISSION_MODULE} import wrap" not in text:
            return None
        module = (config.parent / f"{ADMISSION_MODULE}.py").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = re.search(r"^LIMIT = (\d+)$", module, re.MULTILINE)
    return int(found[1]) if found else None


def _kill(pid: int) -> None:
    """A wedged server may never run its graceful shutdown: no point waiting for it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@dataclass(frozen=True)
class Launch:
    """How verify starts the config: its command for a port, the routes to drive, where, with what."""

    argv: Callable[[int], list[str]]
    specs: Callable[[int], list[RequestSpec]]
    workers: int
    cwd: Path
    env: Mapping[str, str]
    timeout_s: float


def _median(trials: Sequence[OverloadTrial]) -> OverloadTrial:
    """The trial with the median goodput (the lower one of an even count)."""
    ranked = sorted(trials, key=lambda t: t.goodput_rps)
    return ranked[(len(ranked) - 1) // 2]


def _check(
    launch: Launch,
    label: str,
    cap: int | None,
    env: Mapping[str, str],
    per_worker: int,
    stop: threading.Event,
    rounds: int,
) -> OverloadCheck | None:
    port = free_port()
    specs = launch.specs(port)
    ready = urlsplit(specs[0].url)  # the first route driven: it answers once the app is up
    # PORT too, for a config started without --bind (as a user starts it); a --bind given wins.
    with run_server(
        launch.argv(port), port, ready_path=ready.path + (f"?{ready.query}" if ready.query else ""),
        workers=launch.workers, cwd=launch.cwd,
        env={**env, "PORT": str(port)}, name=f"gunicorn ({label})",
    ) as running:  # fmt: skip
        live = LiveCount()
        bases: list[OverloadTrial] = []
        stresses: list[OverloadTrial] = []
        # Interleaved rounds, medians compared: a busy machine drifts by more than the 20% judged.
        for _ in range(rounds):
            base = burst_trial(specs, BASE_CLIENTS, launch.workers, _BASE_S, _DRAIN_S, stop, live)
            stress = burst_trial(
                specs, per_worker * launch.workers, launch.workers, _STRESS_S, _DRAIN_S, stop, live
            )
            if base is None or stress is None:
                return None
            bases.append(base)
            stresses.append(stress)
            if stress.completed == 0 or stress.in_flight_left:
                break  # stuck (requests unanswered after the drain): more rounds would only wait on it
        base, stress = _median(bases), _median(stresses)
        stress = replace(stress, wedge_checked=True, answer_after_s=answer_after(specs[0], launch.timeout_s))
        if stress.wedged:
            _kill(running.pid)
    kept = tuple(
        s.goodput_rps / b.goodput_rps for b, s in zip(bases, stresses, strict=True) if b.goodput_rps > 0
    )
    check = OverloadCheck(label, cap, launch.workers, base, stress, OverloadBehaviour.HOLDS, kept)
    ratio = check.kept if check.kept is not None else 0.0
    behaviour = overload_behaviour(ratio, 1.0, stress.completed, stress.wedged)
    return replace(check, behaviour=behaviour)


def run_checks(
    launch: Launch,
    planned: str,
    per_worker: int,
    stop: threading.Event,
    events: CheckEvents,
    cap: int | None,
    rounds: int = ROUNDS,
) -> tuple[OverloadCheck, ...]:
    """The planned config, then (when it carries a cap) the same config with the cap off; each in
    `rounds` interleaved rounds of BASE_CLIENTS then the stress level."""
    configs: list[tuple[str, int | None, Mapping[str, str]]] = [(planned, cap, launch.env)]
    if cap is not None:
        configs.append((UNCAPPED, None, {**launch.env, ADMISSION_ENV: "0"}))
    checks: list[OverloadCheck] = []
    for label, limit, env in configs:
        if stop.is_set():
            break
        events.step(
            f"overload: {label}, {BASE_CLIENTS} clients then {per_worker} in flight per worker"
            + (f" (cap {limit})" if limit else "")
        )
        check = _check(launch, label, limit, env, per_worker, stop, rounds)
        if check is not None:
            checks.append(check)
    return tuple(checks)


def checks_verdict(checks: Sequence[OverloadCheck]) -> str | None:
    """One line: how the planned config and the uncapped one fared past the knee."""
    if not checks:
        return None
    parts = []
    for c in checks:
        kept = (
            f"{c.kept:.0%} of its goodput at {BASE_CLIENTS} clients" if c.kept is not None else "no goodput"
        )
        parts.append(f"{c.label} {c.behaviour} ({kept}, {c.share_503:.0%} 503s)")
    return "past the knee: " + "; ".join(parts)
