"""The plan's types and thresholds: each value decided carries its reason (pure data, no deciding)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from fastapi_tune.measure.appenv import AppEnv
from fastapi_tune.measure.report import EndpointClass
from fastapi_tune.plan.mix import MixSizing
from fastapi_tune.plan.slo import Objective

UVICORN_WORKER: Final = "uvicorn_worker.UvicornWorker"


ASGI_WORKER: Final = "asgi"


DEPRECATED_WORKER: Final = "uvicorn.workers.UvicornWorker"


# gunicorn's native ASGI worker appeared in 24.0 (FIELD-NOTES).
ASGI_MIN_GUNICORN: Final = (24, 0)


# gunicorn 25.1 opens a control socket by default (its docs: "versionadded:: 25.1.0").
CONTROL_SOCKET_MIN_GUNICORN: Final = (25, 1)


# Routes whose throughput only grows with processes that can each use a CPU.
CPU_LIMITED: Final = (EndpointClass.CPU_BOUND, EndpointClass.SERIALIZED, EndpointClass.LOOP_BLOCKING)


# A verdict below this confidence does not size workers: it is named, with its class and confidence,
# among the plan's unknowns (a noisy or starved probe must not move the deployment). Measured: the
# sample app's cpu-bound route reads 0.32-0.52 on a host shared with other work (3 levels before it
# saturates, starved levels at 0.8); verdicts the curve contradicts fall to 0.2 or below.
MIN_PLAN_CONFIDENCE: Final = 0.3


# PostgreSQL keeps superuser_reserved_connections (default 3) out of max_connections for admins.
DB_RESERVED_CONNECTIONS: Final = 3


# A worker using this much of a core at the busiest level is CPU-limited, whatever its class.
CPU_SATURATED_PER_WORKER: Final = 0.8


# A worker stalled by a blocking call uses almost no CPU (measured: 0.03-0.05 cores), so several
# can share a core; beyond 4 per core the workers' own event-loop work and memory outweigh
# the gain, whatever the measured CPU says.
BLOCKED_WORKERS_PER_CPU: Final = 4


# Queueing theory: latency climbs steeply past ~70% utilisation, and a rolling update or a
# lost node removes capacity; size replicas so the target load is 70% of the measured peak.
REPLICA_UTILISATION: Final = 0.7


# One replica means downtime on every node drain.
MIN_REPLICAS: Final = 2


# A single Python process rarely uses more than one core (the GIL).
# gunicorn's arbiter without preload is typically 20-30 MB: an assumption, stated where used.
MASTER_RSS_MIB: Final = 32


MAX_CPU_REQUEST_MILLI: Final = 1000


# Keep-alive must outlive the load balancer's idle timeout so the balancer closes idle
# connections first; otherwise it may send a request down a socket gunicorn is closing (502).
LB_KEEPALIVE_MARGIN_S: Final = 5


MIB: Final = 1 << 20


GIB: Final = 1 << 30


Value = int | float | str | bool | None


@dataclass(frozen=True)
class Choices:
    """What the user chose on the command line (the rest comes from evidence and profile)."""

    app: str = "main:app"
    bind: str | None = None  # None: the profile's bind
    worker_class: str | None = None  # None: the profile's preference
    preload: bool = False  # the user agreed to preload_app
    target_rps: float | None = None  # for replica sizing (profiles with a fixed process count)
    gunicorn_version: str | None = None  # installed gunicorn; None when unknown
    db_max_connections: int | None = None  # the database's max_connections
    db_pool_size: int | None = None  # connections each worker's pool may open (pool + overflow)
    db_reserved: int = DB_RESERVED_CONNECTIONS  # slots the database keeps for others (admin, migrations)
    stack: AppEnv | None = None  # the app's environment: decides which printed commands work
    objective: Objective | None = None  # --slo: size for this at target_rps (workers, or replicas)
    mix: Mapping[str, float] | None = None  # --mix: route name -> weight; None: equal shares


@dataclass(frozen=True)
class Setting:
    """One gunicorn setting: its name in gunicorn.conf.py, its value and the evidence for it."""

    name: str
    value: Value
    why: str


@dataclass(frozen=True)
class Advice:
    """Something to do that is not a gunicorn setting; `code` is Python to paste."""

    text: str
    code: tuple[str, ...] = ()
    only_for: str | None = None  # the one server it concerns ("gunicorn"); None: the app, any server


# The admission-control module written beside gunicorn.conf.py, and the name it is imported by.
ADMISSION_MODULE: Final = "asgi_admission"


@dataclass(frozen=True)
class AdmissionCap:
    """Requests in flight per worker and how long the rest may queue (plan/admission.py decides)."""

    limit: int
    wait_s: float
    collapse_per_worker: float  # N, as the overload step measured it
    held_per_worker: float | None
    why_limit: str
    why_wait: str
    cause: str | None  # what the stacks said during the collapse
    fixes: tuple[str, ...]  # the code fix that makes the cap unnecessary
    module: str = ADMISSION_MODULE


@dataclass(frozen=True)
class ReplicaSizing:
    """Replicas and resource requests for a fixed-process-per-pod deployment."""

    target_rps: float
    per_worker_rps: float
    basis: str  # which route and level the throughput came from
    replicas: int
    cpu_request_milli: int | None  # None when the server's CPU was not measured
    memory_request_mib: int
    why: str


@dataclass(frozen=True)
class Plan:
    """Everything `recommend` decided, ready for any renderer."""

    profile: str
    profile_description: str
    app: str
    inputs: tuple[str, ...]  # what the plan was computed from, one line each
    settings: tuple[Setting, ...]
    workers: int
    worker_formula: str
    rule_of_thumb: int
    rule_of_thumb_note: str
    limiter_tokens: int | None  # AnyIO thread tokens to set, when threadpool-bound routes need more
    advice: tuple[Advice, ...]
    unknowns: tuple[str, ...]
    replicas: ReplicaSizing | None
    # Workers per effective CPU, for a config that re-checks the CPU limit at start-up; None when the
    # profile fixes the count (it does not follow the CPUs).
    workers_per_cpu: float | None = None
    stack: AppEnv | None = None  # the server stack of the app's environment, when it was read
    mix_sizing: MixSizing | None = None  # the whole-mix model's figures, when the probe measured CPU
    admission: AdmissionCap | None = None  # a cap in front of the app, where the probe saw it fall over

    def setting(self, name: str) -> Setting:
        """The setting called `name` (KeyError when the plan has none)."""
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True)
class Decided:
    """What one decider contributes to the plan."""

    settings: tuple[Setting, ...] = ()
    advice: tuple[Advice, ...] = ()
    unknowns: tuple[str, ...] = ()


def merge(parts: Sequence[Decided]) -> Decided:
    """One Decided from several: settings, advice and unknowns in the order given."""
    return Decided(
        settings=tuple(s for p in parts for s in p.settings),
        advice=tuple(a for p in parts for a in p.advice),
        unknowns=tuple(u for p in parts for u in p.unknowns),
    )
