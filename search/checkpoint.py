"""Generation checkpoints: JSON (never pickle), written atomically, checksummed.

A checkpoint holds only data (expression trees as token lists, RNG states as
lists of integers, fitness numbers), so loading one cannot execute code.  The
write goes to a temporary file that is fsynced and renamed over the old one,
so a crash leaves either the old or the new checkpoint, never half of one
(a write that fails removes its temporary file); the previous checkpoint is
kept beside it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lossforge.primitives.files import atomic_write_text

from .errors import StorageError

FORMAT = "lossforge-checkpoint/1"


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    if path.exists():
        # Copied, not renamed: the checkpoint must exist at every instant, or a crash
        # right here would look like a run that never wrote one (and restart it).
        atomic_write_text(path.with_name(path.stem + ".prev.json"), path.read_text(encoding="utf-8"))
    doc = {"format": FORMAT, "sha256": _digest(payload), "payload": payload}
    atomic_write_text(path, json.dumps(doc, sort_keys=True))


def read_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    prev = path.with_name(path.stem + ".prev.json")
    hint = (f" The previous checkpoint {prev} is intact: copy it over {path.name} to resume from one generation "
            "earlier." if prev.exists() and _is_valid(prev) else "")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StorageError(f"checkpoint {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"checkpoint {path} is corrupt or truncated ({exc.__class__.__name__}: {exc}). "
                           f"lossforge will not overwrite it.{hint}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "payload" not in doc:
        raise StorageError(f"checkpoint {path} is not a lossforge checkpoint (format {doc.get('format') if isinstance(doc, dict) else '?'!r})."
                           f"{hint}")
    if _digest(doc["payload"]) != doc.get("sha256"):
        raise StorageError(f"checkpoint {path} fails its checksum (edited or damaged). lossforge will not "
                           f"overwrite it.{hint}")
    return doc["payload"]


def _is_valid(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return _digest(doc["payload"]) == doc.get("sha256")
    except Exception:
        return False
