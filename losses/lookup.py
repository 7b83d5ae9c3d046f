"""A loss is a name or an expression, everywhere one is asked for.

:func:`loss_or_expr` is the one lookup behind ``seed_losses``, ``compare``
(``--losses`` and ``--loss``) and ``export``: a loss name (reference, shipped
discovered, or saved in the user store) gives its :class:`Loss`; any other
text is parsed by the grammar's whitelist parser and gives an :class:`Expr`.
Text that does not parse raises :class:`GrammarError` with the parser's
message at once (``'(' was never closed``), except a bare word that is no
loss name, which is taken for a mistyped name: :class:`LossNotFound` with the
closest name.  Nothing is ever executed.
"""
from __future__ import annotations

import re

from lossforge.primitives import Expr, GrammarError, did_you_mean, parse

from .errors import LossNotFound
from .loss import Loss

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_losses(text: str) -> list[str]:
    """Split ``"focal, mse, max(p, y)"`` at the commas outside parentheses; blanks are dropped."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def loss_or_expr(value) -> Loss | Expr:
    """The :class:`Loss` called ``value``, else ``value`` parsed as a loss expression.

    A ``Loss`` or ``Expr`` is returned as it is.  Raises :class:`LossNotFound`
    for a bare word that is neither a loss name nor an expression, and
    :class:`GrammarError` (the parser's message) for other text that does not
    parse.
    """
    from .registry import get, names

    if isinstance(value, (Loss, Expr)):
        return value
    if not isinstance(value, str):
        raise GrammarError(f"a loss is a name or expression text, got {type(value).__name__} {value!r}")
    text = value.strip()
    if not text:
        raise GrammarError("an empty loss: give a loss name (see `lossforge catalogue`) or an expression in p "
                           "and y such as '(p - y)**2'")
    try:
        return get(text)
    except LossNotFound:
        pass
    try:
        return parse(text)
    except GrammarError:
        if not _WORD.fullmatch(text):
            raise
    raise LossNotFound(f"unknown loss '{text}'{did_you_mean(text, names())}; `lossforge catalogue` lists the "
                       "reference and discovered losses (or give an expression in p and y, e.g. '(p - y)**2')")
