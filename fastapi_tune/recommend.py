"""What `recommend` does around the pure plan: read its inputs, and write its file safely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from fastapi_tune.errors import BadInputError, RefusedError
from fastapi_tune.fileio import atomic_write, write_with_backup
from fastapi_tune.report import ProbeReport, report_from_json

DEFAULT_PROBE: Final = Path("fastapi-tune-probe.json")
DEFAULT_OUTPUT: Final = Path("gunicorn.conf.py")


def load_report(path: Path | None) -> ProbeReport | None:
    """The probe report: an explicit --probe must exist; the default one may be missing."""
    chosen = path or DEFAULT_PROBE
    if not chosen.exists():
        if path is not None:
            raise BadInputError(f"{path}: no such probe report (run `fastapi-tune probe URL --out {path}`)")
        return None
    try:
        raw = json.loads(chosen.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{chosen}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{chosen}: not JSON (line {e.lineno}: {e.msg})") from None
    return report_from_json(raw, str(chosen))


class Overwrite(Enum):
    """What to do when the output file exists: decided by the CLI from flags and the prompt."""

    NEW = "new"  # no file there yet
    SAME = "same"  # the file already holds exactly this text
    ASK = "ask"  # a different file is there; needs consent


@dataclass(frozen=True)
class Written:
    path: Path
    backup: Path | None
    unchanged: bool


def existing_state(path: Path, text: str) -> Overwrite:
    """Whether writing `text` to `path` would replace anything."""
    if path.is_dir():
        raise RefusedError(f"{path}: is a directory; pass --output FILE")
    if not path.exists():
        return Overwrite.NEW
    if path.read_text(encoding="utf-8", errors="replace") == text:
        return Overwrite.SAME
    return Overwrite.ASK


def write_output(path: Path, text: str, consent: bool) -> Written:
    """Write atomically; replace a different existing file only with consent, keeping a backup."""
    state = existing_state(path, text)
    if state is Overwrite.SAME:
        return Written(path, None, unchanged=True)
    if state is Overwrite.ASK and not consent:
        raise RefusedError(
            f"{path} exists and differs; not replacing it without consent: pass --yes (the old file"
            " is kept as a backup next to it) or --output OTHER_FILE"
        )
    if state is Overwrite.NEW:
        atomic_write(path, text)
        return Written(path, None, unchanged=False)
    return Written(path, write_with_backup(path, text), unchanged=False)
