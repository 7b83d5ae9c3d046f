"""Errors of the tasks layer."""
from __future__ import annotations

from lossforge.primitives import LossforgeError


class TaskError(LossforgeError, KeyError, ValueError):
    """A task is unknown or invalid (bad data, metric, model or budget).

    A ``KeyError`` for ``get(name)`` callers and a ``ValueError`` for
    validation callers; the message names the bad value and the fix.
    """

    # KeyError would quote the message; show it as written.
    __str__ = Exception.__str__


class TaskWarning(UserWarning):
    """Something about a task that works but not as fast or as expected (e.g. vmap fell back to a loop)."""
