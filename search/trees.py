"""DEAP trees as an internal encoding of expressions.

The primitive set is built from the primitive table (one float type: a
typed set whose every primitive maps float -> float).  Trees are converted to
:class:`~lossforge.primitives.Expr` by walking them through the table's sympy
builders -- no ``gp.compile``, no eval -- and serialised as JSON token lists
(primitive names, terminal names, constant values), so checkpoints and Ray
messages never need pickle or DEAP's ``creator`` globals.
"""
from __future__ import annotations

import random
from typing import Sequence

import sympy
from deap import base, gp

from lossforge.primitives import Expr, GrammarError, get_primitive, primitives
from lossforge.primitives.canonical import round_number, split_product
from lossforge.primitives.symbols import TERMINALS

CONSTANT_NAME = "lossforge_constant"
_CONSTANT_RANGE = [-2.0, 2.0]  # set by make_pset; read by the ephemeral generator
_FRIENDLY_CONSTANTS = (-1.0, 0.5, 1.0, 2.0)


def draw_constant() -> float:
    """Ephemeral constant: a friendly value half the time, else uniform in range (2 decimals)."""
    if random.random() < 0.5:
        return random.choice(_FRIENDLY_CONSTANTS)
    return round(random.uniform(*_CONSTANT_RANGE), 2) or 1.0


class Fitness(base.Fitness):
    """(fitness to maximise, complexity to minimise)."""

    weights = (1.0, -1.0)


class Individual(gp.PrimitiveTree):
    def __init__(self, content):
        super().__init__(content)
        self.fitness = Fitness()


def make_pset(names: Sequence[str] | None = None, constant_range=(-2.0, 2.0)) -> gp.PrimitiveSetTyped:
    rows = primitives()
    chosen = [rows[n] for n in names] if names else [r for r in rows.values() if r.gp]
    pset = gp.PrimitiveSetTyped("loss", [float, float], float)
    for row in chosen:
        if row.name == "pow":
            continue  # needs a constant exponent; square/cube cover the GP's needs
        pset.addPrimitive(_Marker(row.name), [float] * row.arity, float, name=row.name)
    pset.renameArguments(ARG0="p", ARG1="y")
    _CONSTANT_RANGE[:] = list(constant_range)
    pset.addEphemeralConstant(CONSTANT_NAME, draw_constant, float)
    return pset


class _Marker:
    """Stand-in 'function' for a DEAP primitive; the table row does the work."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args):  # pragma: no cover - never called: we never gp.compile
        raise RuntimeError("DEAP trees are converted with tree_to_expr, not compiled")


def is_constant(node) -> bool:
    return isinstance(node, gp.Terminal) and not isinstance(node.value, str)


def make_constant(pset: gp.PrimitiveSetTyped, value: float):
    cls = pset.mapping[CONSTANT_NAME]
    node = cls.__new__(cls)
    gp.Terminal.__init__(node, float(value), False, float)
    return node


def tree_to_sympy(tree: Sequence) -> sympy.Expr:
    stack: list[tuple[object, list]] = []
    result = None
    for node in tree:
        stack.append((node, []))
        while stack and len(stack[-1][1]) == stack[-1][0].arity:
            node, args = stack.pop()
            if isinstance(node, gp.Primitive):
                value = get_primitive(node.name).sympy(*args)
            elif is_constant(node):
                value = round_number(float(node.value))
            else:
                value = TERMINALS[node.value]
            if not stack:
                result = value
                break
            stack[-1][1].append(value)
    return result


def tree_to_expr(tree: Sequence) -> Expr | None:
    """The tree's Expr, or None if it is not a valid expression (e.g. 1/0)."""
    try:
        return Expr(tree_to_sympy(tree))
    except (GrammarError, ValueError, TypeError, ZeroDivisionError, RecursionError):
        return None


def serialise(tree: Sequence) -> list:
    out: list = []
    for node in tree:
        if isinstance(node, gp.Primitive):
            out.append(node.name)
        elif is_constant(node):
            out.append(float(node.value))
        else:
            out.append(str(node.value))
    return out


def deserialise(tokens: Sequence, pset: gp.PrimitiveSetTyped) -> Individual:
    nodes = []
    for tok in tokens:
        if isinstance(tok, (int, float)) and not isinstance(tok, bool):
            nodes.append(make_constant(pset, tok))
        elif isinstance(tok, str) and tok in pset.mapping and tok != CONSTANT_NAME:
            nodes.append(pset.mapping[tok])
        else:
            raise GrammarError(f"checkpoint token {tok!r} is not part of this search's primitive set")
    ind = Individual(nodes)
    if not _well_formed(ind):
        raise GrammarError("checkpoint tree is malformed (wrong arities)")
    return ind


def _well_formed(tree: Sequence) -> bool:
    need = 1
    for node in tree:
        if need <= 0:
            return False
        need += node.arity - 1
    return need == 0


# ------------------------------------------------------------- sympy -> tree
class NotRepresentable(Exception):
    pass


def sympy_to_tree(expr: sympy.Expr, pset: gp.PrimitiveSetTyped) -> Individual:
    """Encode an expression with the set's primitives (for seeding with
    catalogue losses). Raises NotRepresentable if it needs another operator."""
    from lossforge.primitives.table import row_for_head

    def prim(name):
        if name not in pset.mapping:
            raise NotRepresentable(f"needs primitive '{name}', not in this search's set")
        return [pset.mapping[name]]

    def chain(name, parts):
        out = parts[0]
        for part in parts[1:]:
            out = prim(name) + out + part
        return out

    def enc(e) -> list:
        if e.is_Symbol:
            if e.name not in TERMINALS:
                raise NotRepresentable(f"has the free constant {e.name}")
            return [pset.mapping[e.name]]
        if e.is_number:
            return [make_constant(pset, float(e))]
        if e.is_Add:
            return chain("add", [enc(a) for a in e.args])
        if e.is_Mul:
            coeff, num, den = split_product(e)
            parts = [enc(f) for f in num]
            if coeff == -1 and parts:
                body = chain("mul", parts)
                return (prim("neg") + body) if not den else prim("neg") + prim("div") + body + chain("mul", [enc(f) for f in den])
            if coeff != 1:
                parts.insert(0, [make_constant(pset, float(coeff))])
            top = chain("mul", parts) if parts else [make_constant(pset, 1.0)]
            return top if not den else prim("div") + top + chain("mul", [enc(f) for f in den])
        if e.is_Pow:
            if e.exp == 2:
                return prim("square") + enc(e.base)
            if e.exp == 3:
                return prim("cube") + enc(e.base)
            if e.exp == -1:
                return prim("div") + [make_constant(pset, 1.0)] + enc(e.base)
            if e.exp.is_Integer and 1 < e.exp <= 6:
                return chain("mul", [enc(e.base)] * int(e.exp))
            raise NotRepresentable(f"has the power {e}")
        row = row_for_head(type(e))
        if row is None:
            raise NotRepresentable(f"has '{type(e).__name__}'")
        parts = [enc(a) for a in e.args]
        if row.arity == 2 and len(parts) > 2:
            return chain(row.name, parts)
        return prim(row.name) + [n for part in parts for n in part]

    return Individual(enc(expr))
