"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every file scalpscan writes for others to read (checkpoints, configs, logs, metrics,
plots, reports) goes through :func:`atomic_write`: the content is written to a temporary
file in the target's folder, flushed to disk, given the permissions a plain ``open``
would give (``mkstemp`` makes them 0600), then renamed over the target.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "file_sha256", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(target: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Create ``target`` through ``write(tmp)``, which writes a temporary path, then rename.

    The target's folder is created if needed. On any error the temporary file is removed
    and the old target, if any, is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text, newlines written as given."""
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
