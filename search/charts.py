"""Labels that fit in the report and compare figures.

Loss names are short, but expressions can be long (``exp(p - y) +
softplus(Min(p, y))``): :func:`fit_labels` keeps a label that fits, wraps
one that fits on two lines, and replaces a longer one by a key (``#3``)
whose full text goes to a legend under the plot (:func:`figure_with_notes`),
so nothing is cut off and nothing is shortened into a different expression.
"""
from __future__ import annotations

import textwrap

LABEL_WIDTH = 28   # characters per line of a tick label or annotation
NOTE_WIDTH = 110   # characters per line of the legend under a figure


def wrap(text: str, width: int = LABEL_WIDTH) -> list[str]:
    """``text`` in lines of at most ``width`` characters (broken at spaces where possible)."""
    return textwrap.wrap(str(text), width=width, break_on_hyphens=False) or [""]


def fit_labels(labels: list[str], width: int = LABEL_WIDTH, max_lines: int = 2, key: str = "#",
               tags: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(labels to draw, legend lines): a label is kept, wrapped onto ``max_lines``
    lines, or replaced by a key with ``"key: full text"`` in the legend.  Keys are
    ``#1, #2, ...`` (``key`` + a count), or with ``tags`` the label's own tag,
    drawn as ``"tag: label"`` when that fits and ``"tag (below)"`` when not."""
    shown, notes = [], []
    for i, label in enumerate(labels):
        text = f"{tags[i]}: {label}" if tags else label
        lines = wrap(text, width)
        if len(lines) <= max_lines:
            shown.append("\n".join(lines))
            continue
        tag = tags[i] if tags else f"{key}{len(notes) + 1}"
        shown.append(f"{tag} (below)" if tags else tag)
        notes.append(f"{tag}: {label}")
    return shown, notes


def figure_with_notes(width: float, height: float, cols: int = 1, notes: list[str] | None = None,
                      sharey: bool = False):
    """A figure with ``cols`` axes in a row and, when ``notes`` are given, a text
    panel under them holding the notes (wrapped); returns (fig, axes list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = [ln for note in notes or [] for ln in textwrap.wrap(note, NOTE_WIDTH, subsequent_indent="    ")]
    note_height = 0.17 * len(lines) + 0.15 if lines else 0.0
    fig = Figure(figsize=(width, height + note_height), dpi=100)
    FigureCanvasAgg(fig)
    if not lines:
        axes = fig.subplots(1, cols, squeeze=False, sharey=sharey)[0]
        return fig, list(axes)
    grid = fig.add_gridspec(2, cols, height_ratios=[height, note_height])
    axes = []
    for i in range(cols):
        axes.append(fig.add_subplot(grid[0, i], sharey=axes[0] if sharey and axes else None))
    text_ax = fig.add_subplot(grid[1, :])
    text_ax.axis("off")
    text_ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8, family="monospace",
                 transform=text_ax.transAxes)
    return fig, axes
