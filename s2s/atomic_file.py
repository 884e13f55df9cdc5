"""Outputs that appear whole or not at all: write beside the target, then rename it into place.

    check_writable(target, "--output")  # before any work: a target that can never be written is refused
    staging = staging_path(target)      # same folder, hidden: .reply.wav.<pid>.partial
    ...write staging...
    commit(staging, target)             # fsync, rename over the target (atomic on POSIX), fsync the folder

The target is opened by nobody: until ``commit`` it is the previous file (or absent). A crash or SIGKILL leaves at
worst the staging file, never a half-written or emptied target. A symlinked target stays a link: the file it
points to is replaced. The staging file is in the target's own folder because a rename across file systems is
not atomic.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def real_target(target: str | Path) -> Path:
    """The file that will be replaced: ``target`` with symlinks resolved (a link keeps pointing to it)."""
    return Path(os.path.realpath(target))


def staging_path(target: str | Path) -> Path:
    """Where to write ``target``'s new content: a hidden file beside it, named after it and this process."""
    real = real_target(target)
    return real.with_name(f".{real.name}.{os.getpid()}.partial")


def check_writable(target: str | Path, what: str) -> Path:
    """Refuse, with a ValueError naming ``what`` (e.g. "--output") and the fix, a target that can never be
    written: a folder, an existing non-regular file (a device, a pipe), or a place where no file can be created
    (/proc, a read-only disk). Creates and removes a probe file in the nearest existing folder; creates no folder
    and does not touch the target. Returns ``real_target(target)``."""
    shown = Path(target)
    real = real_target(target)
    if real.is_dir():
        raise ValueError(f"{what} {shown} is a folder; give a file path inside it")
    if real.exists() and not real.is_file():
        raise ValueError(f"{what} {shown} is not a regular file (a device, pipe or socket); give a file path")
    folder = real.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{what} {shown}: {folder} is a file, not a folder; give a path in a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{real.name}.", suffix=".probe")
    except OSError as exc:
        raise ValueError(f"{what} {shown} cannot be written ({exc.strerror} in {folder}); "
                         "give a path in a folder you can write to") from None
    os.close(fd)
    os.unlink(probe)
    return real


def commit(staging: str | Path, target: str | Path) -> Path:
    """Move the finished ``staging`` file over ``target`` (keeping an existing target's permissions): flushed to
    disk first, so the target is the old file or the new one, also after a power cut. Returns the file written."""
    staging, real = Path(staging), real_target(target)
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if real.is_file():
        shutil.copymode(real, staging)
    os.replace(staging, real)
    _fsync_folder(real.parent)
    return real


def discard(staging: str | Path) -> None:
    """Remove a staging file that will not be committed (absent is fine)."""
    Path(staging).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.debug("cannot open %s to fsync it: %s", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("cannot fsync %s: %s", folder, exc)
    finally:
        os.close(fd)
