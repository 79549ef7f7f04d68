"""Secrets never leave: the one place that decides what is a secret and how it is hidden.

Every string fastapi-tune prints or saves that came from the user or the target (URLs, headers,
command lines, error messages) passes through here first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED: Final = "<redacted>"
# Names (of headers, query parameters, environment variables, flags) whose values are secrets.
SENSITIVE_WORDS: Final = (
    "auth", "cookie", "token", "secret", "key", "session", "password", "passwd", "pwd", "signature",
    "credential", "private", "dsn",
)  # fmt: skip
# NAME=value in a command line or an environment dump (-e DB_PASSWORD=x, --api-key=x).
# The value stops at a quote too: a message quoting a URL ('...?api_key=x') keeps its closing quote.
_ASSIGNMENT: Final = re.compile(r"(?P<name>[A-Za-z_][\w.-]*)=(?P<value>[^\s&'\"]+)")
# --password x, --token x: a sensitive flag followed by its value as the next word.
_FLAG_VALUE: Final = re.compile(r"(?P<flag>--?[\w-]+)(?P<sep>\s+)(?P<value>[^\s-][^\s]*)")
# scheme://user:password@host: the userinfo of any URL inside a longer text.
_USERINFO: Final = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<userinfo>[^/@\s]+)@")
# Authorization-like values anywhere in a text: "Bearer xyz", "Basic xyz".
_AUTH_SCHEME: Final = re.compile(
    r"\b(?P<scheme>Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE
)


def is_sensitive(name: str) -> bool:
    """Authorization, Cookie, X-API-Key, api_key, DB_PASSWORD and the like."""
    lowered = name.lower()
    return any(w in lowered for w in SENSITIVE_WORDS)


def redact_headers(headers: Sequence[tuple[str, str]]) -> list[str]:
    """Headers as 'Name: value' with sensitive values replaced, for reports and screens."""
    return [f"{n}: {REDACTED if is_sensitive(n) else v}" for n, v in headers]


def redact_url(url: str) -> str:
    """A URL without its userinfo password and with sensitive query values hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}" if ":" in userinfo else f"{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_sensitive(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_sensitive(k) else v) for k, v in pairs], safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Any free text (an error message, a command line): userinfo, NAME=secret, --secret VALUE, tokens."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m['name']}={REDACTED}" if is_sensitive(m["name"]) else m[0], text)
    text = _FLAG_VALUE.sub(
        lambda m: f"{m['flag']}{m['sep']}{REDACTED}" if is_sensitive(m["flag"]) else m[0], text
    )
    return _AUTH_SCHEME.sub(lambda m: f"{m['scheme']} {REDACTED}", text)


def redact_secrets_in(text: str, secrets: Sequence[str]) -> str:
    """`text` with each known secret value (a header value the user passed) replaced."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)


def option_secrets(
    headers: Sequence[str] = (), params: Sequence[str] = (), endpoints: Sequence[str] = ()
) -> list[str]:
    """Values the user passed that may be secrets: every -H value, --param values whose names are,
    and the values of sensitive query parameters in -e 'GET /x?api_key=...'."""
    values = [text.partition(":")[2].strip() for text in headers]
    values += [value for name, _, value in (p.partition("=") for p in params) if is_sensitive(name)]
    for text in endpoints:
        query = text.partition("?")[2].partition("#")[0]
        values += [v for k, v in parse_qsl(query, keep_blank_values=True) if is_sensitive(k)]
    return [v for v in values if v]


def redact_path(path: str) -> str:
    """A path as the user gave it (-e 'GET /x?api_key=...'), its sensitive query values hidden."""
    return redact_url(path) if "?" in path else path


# A query string inside a log line or a request target: everything from '?' to the next blank or
# quote. Access logs put api_key=, token=, password= there; none of it is ever shown or kept.
_QUERY: Final = re.compile(r"\?[^\s\"']*")
# "password": "x" and "token": 123 in a JSON log line, whatever the field's position.
_JSON_FIELD: Final = re.compile(r'"(?P<name>[^"\\]{1,64})"\s*:\s*(?P<value>"(?:[^"\\]|\\.)*"|[^,}\s]+)')
LOG_LINE_SHOWN: Final = 100  # characters of a log line an error message may quote


def strip_query(target: str) -> str:
    """A request target without its query string or fragment: `/a?token=x#f` -> `/a`."""
    cut = len(target)
    for mark in "?#":
        at = target.find(mark)
        if 0 <= at < cut:
            cut = at
    return target[:cut]


def redact_log_line(line: str) -> str:
    """An access-log line fit to quote in an error: queries and secret fields hidden, cut short."""
    text = _QUERY.sub("?" + REDACTED, line.strip())
    text = _JSON_FIELD.sub(
        lambda m: f'"{m["name"]}": "{REDACTED}"' if is_sensitive(m["name"]) else m[0], text
    )
    text = redact_text(text)
    return text if len(text) <= LOG_LINE_SHOWN else text[: LOG_LINE_SHOWN - 3] + "..."
