"""Figures written to PNG files with matplotlib's Agg canvas.

Figures are built with :class:`matplotlib.figure.Figure` and an Agg canvas
directly, never through ``pyplot``: no global backend switch, no window, no
figure left open in the caller's session.
"""
from __future__ import annotations

from pathlib import Path


def figure(width: float = 7.0, height: float = 4.0, rows: int = 1, cols: int = 1):
    """A new figure and its axes (an array when ``rows * cols > 1``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=True)
    return fig, axes


def save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (a PNG) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def file_stem(name: str) -> str:
    """A file-name-safe version of a task or loss name."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))
    return safe.strip(".") or "unnamed"
