"""Show a Plan: rich text for people, a JSON object for `--json`. Formatting only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastapi_tune.plan.model import Plan
from fastapi_tune.render.commands import (
    command_notes,
    fastapi_argv,
    flag_per_line,
    gunicorn_argv,
    one_line,
    uvicorn_argv,
)

# The settings a brief plan shows; the rest keep their defaults' reasons in gunicorn.conf.py.
_BRIEF_SETTINGS = ("bind", "worker_class", "workers", "timeout", "keepalive", "max_requests")


def print_brief(console: Console, plan: Plan) -> None:
    """The plan on one screen: workers and why in a line, the key settings, the first advice, the command."""
    console.print(f"[bold]Plan for {escape(plan.app)}[/] (profile [cyan]{escape(plan.profile)}[/])")
    console.print(
        f"[bold]Workers {plan.workers}[/] (rule of thumb: {plan.rule_of_thumb}): "
        f"{escape(plan.worker_formula)}"
    )
    shown = [s for s in plan.settings if s.name in _BRIEF_SETTINGS]
    cap = [f"admission cap={plan.admission.limit}"] if plan.admission is not None else []
    console.print("  " + ", ".join([*(f"{s.name}={s.value}" for s in shown), *cap]), highlight=False)
    for a in plan.advice[:3]:
        console.print(f"  - {escape(a.text[:200])}{'...' if len(a.text) > 200 else ''}")
    if len(plan.advice) > 3:
        console.print(f"  [dim]... {len(plan.advice) - 3} more piece(s) of advice: drop --brief[/]")
    if plan.unknowns:
        console.print(f"  [yellow]{len(plan.unknowns)} thing(s) not known[/]: drop --brief to read them")
    console.print(escape(one_line(gunicorn_argv(plan))), highlight=False, soft_wrap=True)


def print_plan(console: Console, plan: Plan) -> None:
    """Print the plan: settings with reasons, the worker formula, advice, unknowns, commands."""
    console.print(f"[bold]Plan for {escape(plan.app)}[/] (profile [cyan]{escape(plan.profile)}[/])")
    for line in plan.inputs:
        console.print(f"  {escape(line)}", style="dim")

    table = Table(show_header=True, header_style="bold", expand=False)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", no_wrap=True, style="cyan")
    table.add_column("why", overflow="fold")
    for s in plan.settings:
        table.add_row(
            s.name, escape(repr(s.value) if not isinstance(s.value, str) else s.value), escape(s.why)
        )
    console.print(table)

    console.print(f"[bold]Workers:[/] {escape(plan.worker_formula)}")
    console.print(f"[bold]Rule of thumb:[/] {escape(plan.rule_of_thumb_note)}")
    if plan.mix_sizing is not None:
        console.print(f"[bold]Mix model:[/] {escape(plan.mix_sizing.why)}")
    if plan.admission is not None:
        cap = plan.admission
        console.print(
            f"[bold]Admission cap:[/] [cyan]{cap.limit}[/] requests in flight per worker, the rest queue"
            f" up to {cap.wait_s:g} s then 503 ({cap.module}.py beside the config): {escape(cap.why_limit)}"
        )

    if plan.replicas is not None:
        r = plan.replicas
        cpu = f"{r.cpu_request_milli}m" if r.cpu_request_milli is not None else "unknown"
        console.print(
            f"[bold]Replicas:[/] {r.replicas} for {r.target_rps:g} req/s "
            f"(cpu request {cpu}, memory request {r.memory_request_mib}Mi)"
        )
        console.print(f"  {escape(r.why)}", style="dim")

    if plan.advice:
        console.print("[bold]Advice[/]")
        for a in plan.advice:
            console.print(f"  - {escape(a.text)}")
            for line in a.code:
                console.print(f"      {escape(line)}", style="green", highlight=False)

    if plan.unknowns:
        console.print("[bold yellow]Unknown[/]")
        for u in plan.unknowns:
            console.print(f"  - {escape(u)}", style="yellow")

    console.print("[bold]Commands[/]")
    console.print(escape(flag_per_line(gunicorn_argv(plan))), highlight=False, soft_wrap=True)
    console.print("[dim]# or with uvicorn's own process manager (no preload), or fastapi run:[/]")
    console.print(escape(one_line(uvicorn_argv(plan))), highlight=False, soft_wrap=True)
    console.print(escape(one_line(fastapi_argv(plan))), highlight=False, soft_wrap=True)
    for note in command_notes(plan):
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def _mix_json(plan: Plan) -> dict[str, Any] | None:
    """What the whole-mix model said, when the probe measured CPU (README: Plans from the mix)."""
    m = plan.mix_sizing
    if m is None:
        return None
    return {
        "throughput_workers": m.throughput_workers,
        "max_rps": round(m.max_rps, 1),
        "objective": m.objective.describe() if m.objective is not None else None,
        "target_rps": m.target_rps,
        "workers_for_objective": m.workers,
        "capacity_rps": None if m.capacity_rps is None else round(m.capacity_rps, 1),
        "why": m.why,
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON object `recommend --json` prints."""
    return {
        "profile": plan.profile,
        "profile_description": plan.profile_description,
        "app": plan.app,
        "inputs": list(plan.inputs),
        "workers": plan.workers,
        "worker_formula": plan.worker_formula,
        "rule_of_thumb": {"workers": plan.rule_of_thumb, "note": plan.rule_of_thumb_note},
        "settings": [{"name": s.name, "value": s.value, "why": s.why} for s in plan.settings],
        "limiter_tokens": plan.limiter_tokens,
        "advice": [{"text": a.text, "code": list(a.code)} for a in plan.advice],
        "unknowns": list(plan.unknowns),
        "commands": {
            "gunicorn": one_line(gunicorn_argv(plan)),
            "uvicorn": one_line(uvicorn_argv(plan)),
            "fastapi": one_line(fastapi_argv(plan)),
        },
        "command_notes": list(command_notes(plan)),
        "replicas": asdict(plan.replicas) if plan.replicas is not None else None,
        "mix_model": _mix_json(plan),
        # Only when the probe saw a collapse: plans without a cap stay as they were, byte for byte.
        **({} if plan.admission is None else {"admission": asdict(plan.admission)}),
    }
