"""Writing a file atomically: a reader (or a crash) sees the old file or the new one, never half of one.

The one writer behind run directories, checkpoints, reports and the loss store.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a fsynced temporary file and ``os.replace``.

    A failed write (disk full, interrupted) leaves the old file and no
    temporary one, and raises the ``OSError``; callers say what it means in
    their layer's error.
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """:func:`atomic_write_text` for bytes (e.g. an ``.npz`` cache)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
