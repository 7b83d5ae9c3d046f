"""Lookup of losses by name across sources.

A *source* is a named function returning catalogue entries.  The reference
catalogue is the built-in source; the store of discovered losses registers
itself as another (``register_source("discovered", load)``), and ``get`` and
``names`` then see its losses too.  Sources are asked on every lookup, so a
source that caches decides itself when to reload.  A source may also have an
``explain_missing(name)`` method returning the error to raise for a name it
knows but cannot load (a corrupt file), instead of "no loss named ...".
"""
from __future__ import annotations

from typing import Callable, Iterable

from lossforge.primitives import LossforgeError, did_you_mean

from .errors import LossNotFound
from .loss import KINDS, Loss
from .reference import reference_losses

Source = Callable[[], Iterable[Loss]]

_SOURCES: dict[str, Source] = {"reference": reference_losses}


class CatalogueError(LossforgeError, ValueError):
    """A catalogue query or a source is invalid (unknown kind or family, a name defined twice)."""


def register_source(name: str, source: Source, *, replace: bool = False) -> None:
    """Add a source of losses (e.g. the discovered-loss store)."""
    if name in _SOURCES and not replace:
        raise CatalogueError(f"a loss source named '{name}' is already registered; pass replace=True to swap it")
    _SOURCES[name] = source


def unregister_source(name: str) -> None:
    if name == "reference":
        raise CatalogueError("the reference catalogue cannot be unregistered")
    _SOURCES.pop(name, None)


def sources() -> tuple[str, ...]:
    """Names of the registered sources, in lookup order."""
    return tuple(_SOURCES)


def all_losses() -> dict[str, Loss]:
    """Every loss of every source by name; a name defined twice is an error."""
    found: dict[str, Loss] = {}
    origin: dict[str, str] = {}
    for source_name, source in _SOURCES.items():
        for loss in source():
            if loss.name in found:
                raise CatalogueError(f"loss '{loss.name}' is defined by both the '{origin[loss.name]}' and the "
                                     f"'{source_name}' source; rename one of them")
            found[loss.name] = loss
            origin[loss.name] = source_name
    return found


def get(name: str) -> Loss:
    """The loss called ``name``, reference or discovered."""
    losses = all_losses()
    try:
        return losses[name]
    except (KeyError, TypeError):
        pass
    # A source may know why a name is missing (the store: a file of that name is invalid).
    for source in _SOURCES.values():
        explain = getattr(source, "explain_missing", None)
        reason = explain(name) if explain is not None and isinstance(name, str) else None
        if reason is not None:
            raise reason
    raise LossNotFound(f"no loss named {name!r}{did_you_mean(str(name), losses)}; "
                       f"`lossforge catalogue` lists them")


def select(kind: str | None = None, family: str | None = None) -> list[Loss]:
    """Losses of this kind and family, in catalogue order."""
    if kind is not None and kind not in KINDS:
        raise CatalogueError(f"unknown loss kind {kind!r}{did_you_mean(str(kind), KINDS)}; "
                             f"use one of {', '.join(KINDS)}")
    losses = list(all_losses().values())
    if family is not None:
        families = sorted({loss.family for loss in losses})
        if family not in families:
            raise CatalogueError(f"unknown loss family {family!r}{did_you_mean(str(family), families)}; "
                                 f"known: {', '.join(families)}")
    return [loss for loss in losses
            if (kind is None or loss.kind == kind) and (family is None or loss.family == family)]


def names(kind: str | None = None, family: str | None = None) -> list[str]:
    """Names of the losses of this kind ("reference", "discovered" or None for all) and family."""
    return [loss.name for loss in select(kind, family)]
