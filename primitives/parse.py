"""A whitelist parser for loss expressions.

The text is parsed with :func:`ast.parse` into a syntax tree that is then
walked over an explicit allow-list of node types; each allowed node builds the
corresponding sympy object through the primitive table.  Nothing in the text is
ever evaluated: no ``eval``, ``exec``, ``sympify`` or ``parse_expr``.

Limits keep hostile input cheap to reject: length, characters, nesting depth,
node count, constant magnitude and exponent size are all checked before any
sympy work that could grow with them.
"""
from __future__ import annotations

import ast
import math
import string

import sympy

from .errors import GrammarError, did_you_mean
from .symbols import ALL_SYMBOLS, NAMED_CONSTANTS, TUNABLE, to_grammar
from .table import MAX_EXPONENT, get_primitive, primitives

MAX_LENGTH = 4000
MAX_DEPTH = 64
MAX_NODES = 600
MAX_CONSTANT = 1e6
_LOG_MAX_NUMBER = math.log(1e12)

_ALLOWED_CHARS = frozenset(string.ascii_letters + string.digits + " \t\n+-*/().,_")

# Function names accepted in text: every table row (except the operator rows
# that have infix spellings, which are still accepted as calls) plus the
# spellings sympy's printer uses.
_ALIASES = {"Abs": "abs", "Max": "max", "Min": "min"}
_VARIADIC = {"max", "min", "add", "mul"}  # sympy prints Max(a, b, c)


def _function_names() -> dict[str, str]:
    names = {name: name for name in primitives()}
    names.update(_ALIASES)
    return names


def _token(node: ast.AST, text: str) -> str:
    seg = ast.get_source_segment(text, node)
    if seg is None:
        return type(node).__name__
    return seg if len(seg) <= 40 else seg[:37] + "..."


def _where(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return f" at column {col + 1}" if col is not None else ""


class _Builder:
    def __init__(self, text: str):
        self.text = text
        self.nodes = 0
        self.functions = _function_names()

    def fail(self, node: ast.AST, message: str) -> GrammarError:
        return GrammarError(f"{message}{_where(node)} in {self._short()}")

    def _short(self) -> str:
        t = self.text.strip()
        return repr(t if len(t) <= 60 else t[:57] + "...")

    # -- walking -----------------------------------------------------------
    def build(self, node: ast.AST, depth: int) -> sympy.Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(node, f"expression has more than {MAX_NODES} nodes; simplify it")
        if depth > MAX_DEPTH:
            raise self.fail(node, f"expression is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.BinOp):
            return self.binop(node, depth)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return self.check_number(node, -self.build(node.operand, depth + 1))
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, depth + 1)
            raise self.fail(node, f"operator '{_token(node, self.text)}' is not allowed (use +, -, *, /, **)")
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        raise self.fail(node, f"'{_token(node, self.text)}' ({type(node).__name__}) is not part of the loss grammar")

    def binop(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        # Flatten left-nested chains of + - and * / iteratively, so a long sum
        # is not mistaken for deep nesting and cannot exhaust the stack.
        additive = isinstance(node.op, (ast.Add, ast.Sub))
        multiplicative = isinstance(node.op, (ast.Mult, ast.Div))
        if additive or multiplicative:
            kinds = (ast.Add, ast.Sub) if additive else (ast.Mult, ast.Div)
            chain: list[tuple[ast.operator, ast.AST]] = []
            cur: ast.AST = node
            while isinstance(cur, ast.BinOp) and isinstance(cur.op, kinds):
                chain.append((cur.op, cur.right))
                cur = cur.left
                self.nodes += 1
                if self.nodes > MAX_NODES:
                    raise self.fail(node, f"expression has more than {MAX_NODES} nodes; simplify it")
            acc = self.build(cur, depth + 1)
            for op, right in reversed(chain):
                r = self.build(right, depth + 1)
                if isinstance(op, ast.Add):
                    acc = acc + r
                elif isinstance(op, ast.Sub):
                    acc = acc - r
                elif isinstance(op, ast.Mult):
                    acc = acc * r
                else:
                    if r.is_zero:
                        raise self.fail(right, "division by the constant zero")
                    acc = acc / r
                acc = self.check_number(node, acc)
            return acc
        if isinstance(node.op, ast.Pow):
            base = self.build(node.left, depth + 1)
            exponent = self.build(node.right, depth + 1)
            return self.power(node, base, exponent)
        raise self.fail(node, f"operator '{type(node.op).__name__}' is not allowed (use +, -, *, /, **)")

    def power(self, node: ast.AST, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
        bad = {s.name for s in exponent.free_symbols} - set(TUNABLE)
        if bad:
            raise self.fail(node, f"the exponent must be a constant, not an expression of {', '.join(sorted(bad))}")
        if exponent.is_number:
            ev = complex(exponent.evalf())
            if ev.imag != 0 or not math.isfinite(ev.real) or abs(ev.real) > MAX_EXPONENT:
                raise self.fail(node, f"exponent {exponent} is outside [-{MAX_EXPONENT}, {MAX_EXPONENT}]")
            if base.is_number:
                if base.is_zero and ev.real < 0:
                    raise self.fail(node, "zero raised to a negative power")
                mag = abs(complex(base.evalf()))
                if mag > 0 and ev.real * math.log(mag) > _LOG_MAX_NUMBER:
                    raise self.fail(node, f"constant {base}**{exponent} is larger than 1e12")
        return self.check_number(node, to_grammar(base**exponent))

    def check_number(self, node: ast.AST, value: sympy.Expr) -> sympy.Expr:
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise self.fail(node, "the expression is undefined here (division by zero or an infinite constant)")
        if value.is_Number:
            v = abs(float(value))
            if not math.isfinite(v) or v > 1e12:
                raise self.fail(node, f"constant {value} is larger than 1e12")
        return value

    def constant(self, node: ast.Constant) -> sympy.Expr:
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(node, f"literal {_token(node, self.text)} is not a number")
        if abs(v) > MAX_CONSTANT or not math.isfinite(v):  # abs first: a huge int overflows isfinite
            raise self.fail(node, f"constant {_token(node, self.text)} is outside [-{MAX_CONSTANT:g}, {MAX_CONSTANT:g}]")
        if isinstance(v, int):
            return sympy.Integer(v)
        return sympy.Float(v)

    def name(self, node: ast.Name) -> sympy.Expr:
        if node.id in ALL_SYMBOLS:
            return ALL_SYMBOLS[node.id]
        if node.id in NAMED_CONSTANTS:
            return NAMED_CONSTANTS[node.id]
        if node.id in self.functions:
            raise self.fail(node, f"'{node.id}' is a function; call it, e.g. {node.id}(p)")
        known = list(ALL_SYMBOLS) + list(NAMED_CONSTANTS)
        raise self.fail(node, f"unknown name '{node.id}'{did_you_mean(node.id, known + list(self.functions))}; "
                              f"the terminals are p (prediction), y (target) and the constants c0..c9")

    def call(self, node: ast.Call, depth: int) -> sympy.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, f"only calls of grammar functions are allowed, not '{_token(node.func, self.text)}'")
        fname = node.func.id
        if fname not in self.functions:
            raise self.fail(node, f"unknown function '{fname}'{did_you_mean(fname, self.functions)}; "
                                  f"known: {', '.join(sorted(set(self.functions.values())))}")
        if node.keywords:
            raise self.fail(node, f"'{fname}' takes no keyword arguments")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.fail(a, "starred arguments are not allowed")
        row = get_primitive(self.functions[fname])
        n = len(node.args)
        if row.name in _VARIADIC:
            if n < 2:
                raise self.fail(node, f"'{fname}' takes at least 2 arguments, got {n}")
        elif n != row.arity:
            raise self.fail(node, f"'{fname}' takes {row.arity} argument{'s' if row.arity > 1 else ''}, got {n}")
        args = [self.build(a, depth + 1) for a in node.args]
        if row.name == "pow":
            return self.power(node, args[0], args[1])
        if row.name == "div" and args[1].is_zero:
            raise self.fail(node, "division by the constant zero")
        if row.name in _VARIADIC and n > 2:
            acc = args[0]
            for a in args[1:]:
                acc = row.sympy(acc, a)
            return self.check_number(node, acc)
        return self.check_number(node, row.sympy(*args))


def parse_sympy(text: str) -> sympy.Expr:
    """Parse ``text`` into a sympy expression over the grammar's terminals."""
    if not isinstance(text, str):
        raise GrammarError(f"an expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise GrammarError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise GrammarError("empty expression; write a loss in p and y, e.g. '-y*log(p)'")
    for i, ch in enumerate(text):
        if ch not in _ALLOWED_CHARS:
            raise GrammarError(f"character {ch!r} at column {i + 1} is not allowed in a loss expression")
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth > MAX_DEPTH:
            raise GrammarError(f"parentheses nested deeper than {MAX_DEPTH} levels (column {i + 1})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise GrammarError(f"syntax error{col} in {text.strip()[:60]!r}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise GrammarError(f"expression cannot be parsed ({type(exc).__name__}); it is too deeply nested or too large") from None
    builder = _Builder(text.strip())
    try:
        return builder.build(tree.body, 0)
    except RecursionError:
        raise GrammarError(f"expression is nested too deeply (limit {MAX_DEPTH})") from None
