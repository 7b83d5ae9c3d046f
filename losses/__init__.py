"""lossforge.losses: the reference catalogue, the store of discovered losses, export.

>>> from lossforge.losses import get, names
>>> loss = get("huber")
>>> module = loss.module(delta=2.0, reduction="none")
"""
from __future__ import annotations

from .errors import LossInputError, LossNotFound, LossParameterError
from .expression_module import ExpressionLoss
from .loss import Loss
from .registry import CatalogueError, get, names, register_source, sources, unregister_source
from .table import catalogue_table

__all__ = [
    "CatalogueError", "ExpressionLoss", "Loss", "LossInputError", "LossNotFound", "LossParameterError",
    "catalogue_table", "get", "names", "register_source", "sources", "unregister_source",
]
