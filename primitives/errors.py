"""The project's exception hierarchy.

Every error lossforge raises on purpose derives from :class:`LossforgeError`.
Each layer adds its own subclasses next to its code (``losses``, ``tasks``,
``search``); the ones the grammar needs live here because every other layer
imports ``primitives``.  Messages name the bad value and say how to fix it.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class LossforgeError(Exception):
    """Base class of every error lossforge raises deliberately."""


class GrammarError(LossforgeError, ValueError):
    """Text or a sympy expression is outside the loss grammar."""


class CompileError(LossforgeError, ValueError):
    """An expression cannot be compiled to torch (e.g. unbound constants)."""


class PrimitiveError(LossforgeError, ValueError):
    """A primitive failed its registration probe or was registered twice."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 1) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=n, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
