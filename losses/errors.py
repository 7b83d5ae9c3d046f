"""Errors of the losses layer."""
from __future__ import annotations

from lossforge.primitives import LossforgeError


class LossNotFound(LossforgeError, KeyError):
    """No loss of that name in the catalogue (reference or discovered)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class LossParameterError(LossforgeError, ValueError, TypeError):
    """A loss was given a parameter it does not take, or a value outside its range.

    A ValueError (bad value) and a TypeError (unexpected keyword), so code that
    catches either, as it would for a torch loss, still catches it."""


class LossInputError(LossforgeError, ValueError):
    """Inputs of a loss do not fit it: shapes, dtypes, target encoding or the reduction."""


class StoreError(LossforgeError, ValueError):
    """A stored loss file is unreadable, invalid or hostile, or a save would lose data.

    Messages name the file and say how to fix it."""


class ExportError(LossforgeError, ValueError):
    """A loss cannot be exported in the requested format (e.g. a reference without an expression)."""


class CompareError(LossforgeError, ValueError):
    """A comparison was asked for unknown tasks or losses, or with invalid settings."""
