"""lossforge.search: strategies (GP, Optuna, random), filters, evaluators, runs and the CLI.

>>> from lossforge.search import SearchConfig, run
>>> result = run(SearchConfig(tasks=["digits"], generations=3, population=16))  # doctest: +SKIP
"""
from __future__ import annotations

from .config import SearchConfig
from .engine import SearchResult, resume, run
from .errors import ConfigError, EvaluationError, StorageError
from .halloffame import Entry

__all__ = ["ConfigError", "Entry", "EvaluationError", "SearchConfig", "SearchResult", "StorageError", "resume", "run"]
