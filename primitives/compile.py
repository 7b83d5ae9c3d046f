"""Compile a sympy expression to a torch callable, with no eval.

The tree is lowered once to a straight-line :class:`Program`: a list of
instructions ``(opcode, argument slots, payload)`` whose opcodes name rows of
the primitive table.  Common subexpressions share a slot; numeric
subexpressions are folded to floats at compile time.  A Program is a plain
data object, so it pickles (for Ray) without cloudpickle tricks.
"""
from __future__ import annotations

from functools import reduce
from typing import Sequence

import sympy
import torch

from .errors import CompileError
from .symbols import TERMINALS, TUNABLE
from .canonical import split_product
from .table import get_primitive, row_for_head

_P, _Y = TERMINALS["p"], TERMINALS["y"]


def _resolve(opcode: str, n_args: int):
    """The function an instruction calls: its row's torch form, folded left over
    more arguments than the row's arity (the compiler's n-ary add and mul)."""
    row = get_primitive(opcode)
    if n_args > row.arity:
        fn = row.torch
        return lambda *xs: reduce(fn, xs)
    return row.torch


class Program:
    """A compiled loss: ``program(p, y)`` returns the elementwise loss tensor
    with the broadcast shape of ``p`` and ``y``."""

    __slots__ = ("instructions", "constants", "output", "source", "uses_p", "uses_y", "tensor_constants", "_steps")
    _STATE = ("instructions", "constants", "output", "source", "uses_p", "uses_y", "tensor_constants")

    def __init__(self, instructions, constants, output, source, uses_p, uses_y, tensor_constants=False):
        self.tensor_constants = tensor_constants
        self.instructions = tuple(instructions)
        self._steps = tuple((_resolve(op, len(args)), args, payload) for op, args, payload in self.instructions)
        self.constants = tuple(constants)
        self.output = output
        self.source = source
        self.uses_p = uses_p
        self.uses_y = uses_y

    # Functions are looked up again after unpickling: rows may hold lambdas.
    def __getstate__(self):
        return {k: getattr(self, k) for k in self._STATE}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self._steps = tuple((_resolve(op, len(args)), args, payload) for op, args, payload in self.instructions)

    def __repr__(self) -> str:
        return f"Program({self.source!r}, {len(self.instructions)} instructions)"

    def __call__(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.tensor_constants:
            consts = [torch.tensor(c, dtype=p.dtype, device=p.device) for c in self.constants]
        else:
            consts = list(self.constants)  # folded programs pass floats to operators that take them
        vals: list = [p, y, *consts]
        for fn, args, payload in self._steps:
            xs = [vals[i] for i in args]
            if payload is not None:
                xs.append(payload)
            vals.append(fn(*xs))
        out = vals[self.output]
        if not self.uses_p:  # keep a (zero-gradient) graph to p, so backward() works
            out = p * 0 + out
        shape = torch.broadcast_shapes(p.shape, y.shape)
        if out.shape != shape:
            out = out.expand(shape)
        return out


class _Lowering:
    def __init__(self, fold: bool = True):
        self.fold = fold
        self.instructions: list[tuple[str, tuple[int, ...], object]] = []
        self.constants: list[float] = []
        self.slot_of: dict[sympy.Expr, int] = {_P: 0, _Y: 1}
        self.const_slot: dict[float, int] = {}

    def const(self, value: float) -> int:
        # Constants and instruction results are numbered separately while
        # lowering (negative ids) and resolved to slots in finish().
        if value not in self.const_slot:
            self.constants.append(value)
            self.const_slot[value] = -len(self.constants)  # resolved in finish()
        return self.const_slot[value]

    def emit(self, opcode: str, args: Sequence[int], payload=None) -> int:
        self.instructions.append((opcode, tuple(args), payload))
        return -(10**9) - (len(self.instructions) - 1)  # instruction result, resolved in finish()

    def lower(self, e: sympy.Expr) -> int:
        if e in self.slot_of:
            return self.slot_of[e]
        if e.is_Number or isinstance(e, sympy.NumberSymbol):
            slot = self.const(float(e))
            self.slot_of[e] = slot
            return slot
        if e.is_number and self.fold:
            # Fold a constant subtree once, with the same protected ops as training.
            zero = torch.zeros((), dtype=torch.float64)
            value = float(compile_sympy(e, _fold=False)(zero, zero))
            slot = self.const(value)
            self.slot_of[e] = slot
            return slot
        if e.is_Symbol:
            if e.name in TUNABLE:
                raise CompileError(f"unbound constant '{e.name}'")
            raise CompileError(f"unknown symbol '{e}'")
        if e.is_Add:
            slot = self.emit("add", [self.lower(a) for a in e.args])
        elif e.is_Mul:
            slot = self.lower_mul(e)
        elif e.is_Pow:
            slot = self.lower_pow(e.base, e.exp)
        else:
            row = row_for_head(type(e))
            if row is None:
                raise CompileError(f"'{type(e).__name__}' in {e} has no torch form in the primitive table")
            args = [self.lower(a) for a in e.args]
            if len(args) > row.arity:  # Max/Min with several arguments
                slot = args[0]
                for a in args[1:]:
                    slot = self.emit(row.name, [slot, a])
            else:
                slot = self.emit(row.name, args)
        self.slot_of[e] = slot
        return slot

    def lower_mul(self, e: sympy.Expr) -> int:
        coeff, num, den = split_product(e)
        num_slots = [self.lower(f) for f in num]
        if coeff == -1 and num_slots and not den:
            inner = num_slots[0] if len(num_slots) == 1 else self.emit("mul", num_slots)
            return self.emit("neg", [inner])
        if coeff != 1:
            num_slots.insert(0, self.const(float(coeff)))
        if not den:
            return num_slots[0] if len(num_slots) == 1 else self.emit("mul", num_slots)
        den_slots = [self.lower(f) for f in den]
        numerator = self.const(1.0) if not num_slots else (num_slots[0] if len(num_slots) == 1 else self.emit("mul", num_slots))
        denominator = den_slots[0] if len(den_slots) == 1 else self.emit("mul", den_slots)
        return self.emit("div", [numerator, denominator])

    def lower_pow(self, base: sympy.Expr, exp: sympy.Expr) -> int:
        if not exp.is_number:
            names = sorted(s.name for s in exp.free_symbols)
            raise CompileError(f"exponent {exp} is not a number (unbound {', '.join(names)})")
        b = self.lower(base)
        if exp == 2:
            return self.emit("square", [b])
        if exp == 3:
            return self.emit("cube", [b])
        if exp == sympy.Rational(1, 2):
            return self.emit("sqrt", [b])
        if exp == sympy.Rational(-1, 2):
            return self.emit("div", [self.const(1.0), self.emit("sqrt", [b])])
        return self.emit("pow", [b], float(exp))

    def finish(self, out: int, source: str) -> Program:
        n_const = len(self.constants)

        def resolve(slot: int) -> int:
            if slot <= -(10**9):
                return 2 + n_const + (-(slot + 10**9))
            if slot < 0:
                return 2 + (-slot - 1)
            return slot

        instructions = [(op, tuple(resolve(a) for a in args), payload) for op, args, payload in self.instructions]
        used = {a for _, args, _ in instructions for a in args} | {resolve(out)}
        return Program(instructions, self.constants, resolve(out), source, uses_p=0 in used, uses_y=1 in used,
                       tensor_constants=not self.fold)


def compile_sympy(expr: sympy.Expr, source: str | None = None, _fold: bool = True) -> Program:
    """Lower a validated sympy expression (no unbound constants) to a Program."""
    unbound = sorted(s.name for s in expr.free_symbols if s.name in TUNABLE)
    if unbound:
        names = ", ".join(unbound)
        raise CompileError(f"expression {expr} has unbound constants {names}; bind them first, "
                           f"e.g. expr.bind({unbound[0]}=1.0)")
    lowering = _Lowering(fold=_fold)
    out = lowering.lower(expr)
    return lowering.finish(out, source if source is not None else str(expr))
