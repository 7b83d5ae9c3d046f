"""The installed lossforge version, as recorded in runs, stored losses and exported files."""
from __future__ import annotations

from importlib import metadata


def lossforge_version() -> str:
    try:
        return metadata.version("lossforge")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
