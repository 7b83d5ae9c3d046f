"""lossforge.losses: the reference catalogue, the store of discovered losses, export.

>>> from lossforge.losses import get, names
>>> loss = get("huber")
>>> module = loss.module(delta=2.0, reduction="none")
>>> print(export("huber", format="py"))            # doctest: +SKIP

Discovered losses live in TOML files (``losses/discovered/`` and the user store,
``$LOSSFORGE_STORE`` or ``~/.lossforge/losses``); see :mod:`lossforge.losses.store`.
``lossforge.search.compare.compare`` scores losses against each other on tasks
(it trains models, so it lives in the search layer).
"""
from __future__ import annotations

from .errors import CompareError, ExportError, LossInputError, LossNotFound, LossParameterError, StoreError
from .export import FORMATS as EXPORT_FORMATS
from .export import export, export_expression
from .expression_module import ExpressionLoss
from .loss import Loss
from .registry import CatalogueError, get, names, register_source, sources, unregister_source
from .store import StoreWarning, save, save_discovered, store_directory, use_store
from .store import _SOURCE as _DISCOVERED_SOURCE
from .table import catalogue_table

register_source("discovered", _DISCOVERED_SOURCE, replace=True)

__all__ = [
    "CatalogueError", "CompareError", "EXPORT_FORMATS", "ExportError", "ExpressionLoss", "Loss", "LossInputError",
    "LossNotFound", "LossParameterError", "StoreError", "StoreWarning", "catalogue_table", "export",
    "export_expression", "get", "names", "register_source", "save", "save_discovered", "sources", "store_directory",
    "unregister_source", "use_store",
]
