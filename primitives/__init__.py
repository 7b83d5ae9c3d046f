"""The loss grammar: primitives, terminals, the Expr object, safe parsing and
compilation to torch.

>>> from lossforge.primitives import parse
>>> e = parse("-y*log(p)")
>>> e.canonical
'-y*log(p)'
"""
from __future__ import annotations

from .errors import CompileError, GrammarError, LossforgeError, PrimitiveError, did_you_mean
from .expr import Expr, as_expr, parse
from .fingerprint import SPACES, fingerprint
from .symbols import ALL_SYMBOLS, P, TERMINALS, TUNABLE, Y
from .table import Primitive, get_primitive, primitives, register, unregister

__all__ = [
    "ALL_SYMBOLS", "CompileError", "Expr", "GrammarError", "LossforgeError", "P", "Primitive",
    "PrimitiveError", "SPACES", "TERMINALS", "TUNABLE", "Y", "as_expr", "did_you_mean",
    "fingerprint", "get_primitive", "parse", "primitives", "register", "unregister",
]
