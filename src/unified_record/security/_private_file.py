"""Files that hold secrets: readable by their owner only, published whole or not at all.

Shared by the data-key file and the token signing key, so both refuse a file others can
read and both survive two processes creating one at the same moment.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from unified_record.config import ConfigError

__all__ = ["read_private_file", "write_private_file"]


def read_private_file(path: Path, label: str) -> bytes:
    """The file's bytes, after checking nobody but the owner can read or write it."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{label} {path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{label} {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{label} {path} has permissions {stat.S_IMODE(info.st_mode):04o}, looser than "
            f"0600; refusing to use it (run: chmod 600 {path})"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{label} {path}: cannot read ({exc.strerror})") from None


def write_private_file(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write to a 0600 temp file in the same directory, fsync, then publish it in one step.

    With ``replace=False`` the file is published by hard link, which fails rather than
    overwrite a file that appeared meanwhile; returns False in that case.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; best effort, as some filesystems refuse directory fsync."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
