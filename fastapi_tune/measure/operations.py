"""Which operations the probe drives: discovered or given with -e, bodies attached, preflighted."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

import httpx

from fastapi_tune.core.deadline import within
from fastapi_tune.core.errors import TargetUnreachableError, UsageError
from fastapi_tune.core.redact import option_secrets, redact_secrets_in, redact_url
from fastapi_tune.discover.openapi import (
    Operation,
    Skipped,
    apply_excludes,
    discover,
    document_routes,
    explicit_operations,
    fetch_json,
    parse_body_option,
    parse_endpoint,
    parse_header,
    parse_param_option,
    resolve_target,
    route_name,
    same_route_once,
)
from fastapi_tune.discover.samples import Body
from fastapi_tune.measure.preflight import json_getter, preflight_all, resolve_ids
from fastapi_tune.measure.probe_options import ProbeOptions
from fastapi_tune.measure.report import Endpoint
from fastapi_tune.measure.schedule import DEFAULT_BUDGET_S

# The OpenAPI document and the preflight each get this long at most, whatever the server does.
DISCOVERY_DEADLINE_S: Final = 30.0


# The preflight (one request per endpoint, ~3 ms each on loopback) may use this share of
# --max-seconds; endpoints it does not reach are skipped as over the time budget.
PREFLIGHT_SHARE: Final = 0.25


def _openapi_url(options: ProbeOptions, base: str) -> str:
    """Where the document is; an absolute --openapi URL is checked like the target (loopback only)."""
    if not options.openapi:
        return base + "/openapi.json"
    if not options.openapi.startswith(("http://", "https://")):
        return base + "/" + options.openapi.lstrip("/")
    # Its host is checked like the target's; a query (?format=json) is the document's business.
    resolve_target(options.openapi.split("#", 1)[0].split("?", 1)[0], options.allow_remote)
    return options.openapi


def _given(options: ProbeOptions) -> tuple[dict[str, str], dict[tuple[str, str], Body]]:
    params = dict(parse_param_option(p) for p in options.params)
    bodies: dict[tuple[str, str], Body] = {}
    for text in options.bodies:
        method, path, content, content_type = parse_body_option(text, _read_body_file)
        bodies[(method, path)] = Body(content, content_type)
    return params, bodies


def _read_body_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"--body @{path}: cannot read it ({e.strerror or e})") from None


def find_operations(
    options: ProbeOptions, base: str, headers: Sequence[tuple[str, str]], started: float | None = None
) -> tuple[list[Operation], list[Skipped], str | None]:
    """Operations to probe from -e and/or the OpenAPI document, less --exclude, less failing ones.

    Everything here keeps to the probe's budget counted from `started`: the document and the list
    routes within it, the preflight within PREFLIGHT_SHARE of it.
    """
    explicit = [parse_endpoint(e) for e in options.endpoints]
    openapi_url = _openapi_url(options, base)
    params, bodies = _given(options)
    started = time.monotonic() if started is None else started
    # The route count (which may grow the default budget) is not known yet: the default bounds it.
    budget = options.max_seconds if options.max_seconds is not None else DEFAULT_BUDGET_S
    deadline = min(options.timeout_s * 3, DISCOVERY_DEADLINE_S, budget)
    with httpx.Client(headers=list(headers), timeout=options.timeout_s, verify=options.verify_tls) as client:
        get_doc = lambda: fetch_json(client, openapi_url)  # noqa: E731 - the call the deadline bounds
        doc: object | None
        if explicit:
            # Names given: the document only helps to fill parameters, and may be missing.
            try:
                doc = within(deadline, f"GET {redact_url(openapi_url)}", get_doc)
            except TargetUnreachableError:
                raise
            except Exception:
                doc = None
            ops, skipped = explicit_operations(explicit, doc, base, params, bodies)
            source: str | None = openapi_url if doc is not None else None
        else:
            doc = within(deadline, f"GET {redact_url(openapi_url)}", get_doc)
            found = discover(doc, base, openapi_url, options.unsafe, params, bodies)
            ops, skipped = list(found.operations), list(found.skipped)
            source = openapi_url
        if isinstance(doc, dict):
            ops = within(
                deadline,
                "list routes for real ids",
                lambda: resolve_ids(doc, ops, base, json_getter(client, options.timeout_s), params),
            )
        ops, repeated = same_route_once(ops)
        kept, excluded = apply_excludes(ops, options.excludes)
        kept = by_weight(kept, options.route_weights)
        failed: list[Skipped] = []
        if options.preflight and kept:
            until = started + PREFLIGHT_SHARE * budget
            # Each request is bounded by twice the timeout (headers, then the body's read cap).
            kept, failed = within(
                max(0.0, until - time.monotonic()) + 2 * options.timeout_s + 1,
                "preflight",
                lambda: preflight_all(client, kept, options.timeout_s, until),
            )
    # A preflight's reason may quote the server's own error page, and that may quote the request.
    secrets = option_secrets(options.headers, options.params, options.endpoints)
    reasons = [
        replace(s, reason=redact_secrets_in(s.reason, secrets))
        for s in [*skipped, *repeated, *excluded, *failed]
    ]
    return kept, reasons, source


def by_weight(ops: Sequence[Operation], weights: Mapping[str, float] | None) -> list[Operation]:
    """The operations heaviest first (a stable sort: equal weights keep the document's order)."""
    if not weights:
        return list(ops)
    return sorted(ops, key=lambda op: -weights.get(route_name(op.method, op.path), 0.0))


def routes_to_match(options: ProbeOptions) -> list[tuple[str, str]]:
    """The app's (METHOD, path template) pairs, for matching access-log lines: the -e endpoints and
    every operation of the OpenAPI document (which may be missing when -e names the endpoints)."""
    target = resolve_target(options.url, options.allow_remote)
    explicit = [parse_endpoint(e) for e in options.endpoints]
    url = _openapi_url(options, target.base_url)
    headers = [parse_header(h) for h in options.headers]
    deadline = min(options.timeout_s * 3, DISCOVERY_DEADLINE_S)
    with httpx.Client(headers=headers, timeout=options.timeout_s, verify=options.verify_tls) as client:
        try:
            doc = within(deadline, f"GET {redact_url(url)}", lambda: fetch_json(client, url))
        except TargetUnreachableError:
            raise
        except Exception:
            if not explicit:
                raise
            return explicit
    return [*explicit, *document_routes(doc, url)]


def with_body(ep: Endpoint, op: Operation) -> Endpoint:
    """Keep a generated body for verify; a body the user gave is only marked (it may hold secrets)."""
    if op.body is None:
        return ep
    if op.body_given:
        return replace(ep, body_given=True, content_type=op.content_type)
    return replace(ep, body=op.body.decode("utf-8", "replace"), content_type=op.content_type)
