"""Writing files safely: never a half-written config, never a lost backup.

Consent (may this file be overwritten?) is the CLI's question; these functions only say what a
write would replace, and write.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from fastapi_tune.core.errors import BadInputError, RefusedError

# A new file gets the usual mode for a config file (the umask cannot be read without racing).
_NEW_FILE_MODE: Final = 0o644
_MAX_BACKUPS: Final = 1000


def check_writable(path: Path | str, flag: str) -> None:
    """Refuse, before any work, an output path that cannot be written; one line says why.

    Tried for real (a temp file created and removed in the directory): permissions, a read-only
    filesystem and root's exemptions all answer the same way the final write will.
    """
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise BadInputError(f"{flag} {target}: is a directory; give a file name")
    if target.exists() and not target.is_file():
        # os.replace would swap a device or a socket (e.g. /dev/null, as root) for a plain file.
        raise BadInputError(f"{flag} {target}: exists and is not a regular file")
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise BadInputError(f"{flag} {target}: the directory {parent} {why}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".check", dir=parent)
    except OSError as e:
        raise BadInputError(f"{flag} {target}: cannot write in {parent} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write(path: Path | str, text: str) -> None:
    """Replace `path` with `text` in one step: readers see the old file or the new, never half.

    The temp file sits in the same directory so os.replace is a rename on one filesystem;
    fsync before the rename so a crash cannot leave an empty file under the real name.
    An existing file's permission bits are kept. A failed write (full disk, read-only
    directory) leaves the old file as it was and no temp file; BadInputError names the path.
    """
    target = Path(path)
    try:
        _replace(target, text)
    except OSError as e:
        kept = "the old file is unchanged" if target.is_file() else "nothing was written"
        raise BadInputError(f"{target}: cannot write it ({e.strerror or e}); {kept}") from None


def _replace(target: Path, text: str) -> None:
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename itself is only durable once the directory is synced (POSIX only).
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def backup_path(path: Path | str) -> Path:
    """The first free backup name: FILE.bak, then FILE.bak.1, FILE.bak.2, ... (never an existing one)."""
    target = Path(path)
    candidate = target.with_name(target.name + ".bak")
    for n in range(1, _MAX_BACKUPS + 1):
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        candidate = target.with_name(f"{target.name}.bak.{n}")
    raise RefusedError(f"{target}: {_MAX_BACKUPS} backups already exist; remove some first")


def _copy_to_fresh_backup(target: Path) -> Path:
    # Open the backup with O_EXCL: another writer taking the same name between the check in
    # backup_path and the copy must not be clobbered; take the next name instead.
    for _ in range(_MAX_BACKUPS):
        backup = backup_path(target)
        try:
            with target.open("rb") as src, backup.open("xb") as dst:
                try:
                    shutil.copyfileobj(src, dst)
                    dst.flush()
                    os.fsync(dst.fileno())
                except OSError as e:  # a full disk: no half (or 0-byte) backup left behind
                    backup.unlink(missing_ok=True)
                    raise BadInputError(
                        f"{backup}: cannot write the backup ({e.strerror or e}); {target} is unchanged"
                    ) from None
        except FileExistsError:
            continue
        except OSError as e:
            raise BadInputError(
                f"{backup}: cannot write the backup ({e.strerror or e}); {target} is unchanged"
            ) from None
        shutil.copystat(target, backup)  # the backup keeps the old file's mode and times
        return backup
    raise RefusedError(f"{target}: could not find a free backup name")


def write_with_backup(path: Path | str, text: str) -> Path | None:
    """Write `text` to `path` atomically, first copying an existing file to a fresh backup.

    Returns the backup written, or None when there was nothing to back up (no file, or the
    file already holds exactly `text`).
    """
    target = Path(path)
    if target.is_dir():
        raise RefusedError(f"{target}: is a directory, not a file")
    backup: Path | None = None
    if target.exists():
        if target.read_text(encoding="utf-8", errors="replace") == text:
            return None
        backup = _copy_to_fresh_backup(target)
    try:
        atomic_write(target, text)
    except BadInputError:
        if backup is not None:  # the old file is intact: its copy would only be a stray file
            backup.unlink(missing_ok=True)
        raise
    return backup


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
        raise RefusedError(f"{path}: is a directory; pass --out FILE")
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
            " is kept as a backup next to it) or --out OTHER_FILE"
        )
    if state is Overwrite.NEW:
        atomic_write(path, text)
        return Written(path, None, unchanged=False)
    return Written(path, write_with_backup(path, text), unchanged=False)
