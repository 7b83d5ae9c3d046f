"""Errors of the search layer."""
from __future__ import annotations

from lossforge.primitives import LossforgeError


class ConfigError(LossforgeError, ValueError):
    """A search configuration is invalid (unknown key, wrong type, bad value)."""


class StorageError(LossforgeError):
    """The run store, a checkpoint or a run directory is unusable."""


class EvaluationError(LossforgeError):
    """An evaluator could not run at all (not raised for failing candidates)."""
