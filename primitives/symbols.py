"""Terminals of the grammar and the sympy functions sympy lacks.

``p`` is the prediction in the task's prediction space (a probability for
classification, a raw value for regression) and ``y`` the target.  ``c0`` ...
``c9`` are named tunable constants: GP leaves them free, Optuna binds them.
All terminals are real, which lets sympy apply real-valued identities such as
``sqrt(x**2) -> Abs(x)``.
"""
from __future__ import annotations

import sympy

from .protection import LOG_EPS, SQRT_EPS

P = sympy.Symbol("p", real=True)
Y = sympy.Symbol("y", real=True)
TERMINALS: dict[str, sympy.Symbol] = {"p": P, "y": Y}

MAX_TUNABLE = 10
TUNABLE: dict[str, sympy.Symbol] = {f"c{i}": sympy.Symbol(f"c{i}", real=True) for i in range(MAX_TUNABLE)}

# Named numeric constants that sympy's printer may emit (``E`` for exp(1)).
NAMED_CONSTANTS: dict[str, sympy.Expr] = {"E": sympy.E, "pi": sympy.pi}

ALL_SYMBOLS: dict[str, sympy.Symbol] = {**TERMINALS, **TUNABLE}


class _OfMagnitude(sympy.Function):
    """A function of |x| with |x| floored (the protected log and sqrt): real for every real x."""

    nargs = 1
    _plain = staticmethod(sympy.Function)  # the sympy function applied to max(|x|, _floor)
    _floor: float = 0.0

    def _eval_evalf(self, prec):
        v = self.args[0]._eval_evalf(prec)
        if v is None or not v.is_real:
            return None
        return self._plain(max(abs(v), sympy.Float(self._floor)))._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _sympystr(self, printer):
        return "%s(%s)" % (type(self).__name__, printer._print(self.args[0]))


class log(_OfMagnitude):  # noqa: N801  (printed, and parsed back, as "log")
    """Protected logarithm log(|x|): real for every real x, unlike sympy.log,
    so sympy never turns a candidate into a complex expression."""

    _plain, _floor = staticmethod(sympy.log), LOG_EPS

    @classmethod
    def eval(cls, x):
        if x.is_Number and abs(x) == 1:
            return sympy.Integer(0)
        if isinstance(x, sympy.Abs):  # log already takes |x|
            return cls(x.args[0])
        if isinstance(x, sympy.exp):
            return x.args[0]
        return None

    def fdiff(self, argindex=1):
        return 1 / self.args[0]

    def _latex(self, printer, exp=None):
        body = r"\log{\left(%s \right)}" % printer._print(self.args[0])
        return body if exp is None else r"%s^{%s}" % (body, exp)


class sqrt(_OfMagnitude):  # noqa: N801  (printed, and parsed back, as "sqrt")
    """Protected square root sqrt(|x|)."""

    _plain, _floor = staticmethod(sympy.sqrt), SQRT_EPS

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            root = sympy.sqrt(abs(x))
            return root if root.is_Rational else None
        if isinstance(x, sympy.Abs):  # sqrt already takes |x|
            return cls(x.args[0])
        if x.is_Pow and x.exp == 2 and x.base.is_real:
            return sympy.Abs(x.base)
        return None

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sympy.sign(x) / (2 * sqrt(x))

    def _eval_is_nonnegative(self):
        return self.args[0].is_real

    def _latex(self, printer, exp=None):
        body = r"\sqrt{%s}" % printer._print(self.args[0])
        return body if exp is None else r"\left(%s\right)^{%s}" % (body, exp)


class _Extremum(sympy.Function):
    """Max/Min with a cheap, exact normal form: nested calls flattened,
    duplicates removed, numeric arguments folded to one, the rest sorted.
    sympy's own Max/Min try to prove dominance between arguments, which costs
    tens of milliseconds per node and is not needed for deduplication."""

    _pick = max

    @classmethod
    def eval(cls, *args):
        flat: list[sympy.Expr] = []
        for a in args:
            flat.extend(a.args if type(a) is cls else (a,))
        numbers = [a for a in flat if a.is_number]
        rest = [a for a in flat if not a.is_number]
        if numbers:
            values = [complex(n.evalf()) for n in numbers]
            if all(v.imag == 0 for v in values):
                best = cls._pick(zip((v.real for v in values), range(len(numbers))))[1]
                numbers = [numbers[best]]
        unique = sorted(set(rest), key=sympy.default_sort_key) + numbers
        if len(unique) == 1:
            return unique[0]
        if tuple(unique) != tuple(args):
            return sympy.Function.__new__(cls, *unique, evaluate=False)
        return None

    def _eval_is_real(self):
        return all(a.is_real for a in self.args) or None

    def _eval_evalf(self, prec):
        values = [a._eval_evalf(prec) for a in self.args]
        if any(v is None or not v.is_real for v in values):
            return None
        return self._pick(values)

    def fdiff(self, argindex=1):
        others = self.args[: argindex - 1] + self.args[argindex:]
        sign = 1 if self._pick is max else -1
        return sympy.Heaviside(sign * (self.args[argindex - 1] - type(self)(*others)))


class Max(_Extremum):  # noqa: N801
    _pick = max

    def _latex(self, printer, exp=None):
        body = r"\max\left(%s\right)" % ", ".join(printer._print(a) for a in self.args)
        return body if exp is None else r"%s^{%s}" % (body, exp)


class Min(_Extremum):  # noqa: N801
    _pick = min

    def _latex(self, printer, exp=None):
        body = r"\min\left(%s\right)" % ", ".join(printer._print(a) for a in self.args)
        return body if exp is None else r"%s^{%s}" % (body, exp)


def to_grammar(expr: sympy.Expr) -> sympy.Expr:
    """Rewrite sympy's own log and fractional powers into the protected forms:
    log(x) -> log(|x|), x**(1/2) -> sqrt(|x|), x**e (e not an integer) -> |x|**e."""
    def rewrite(e):
        if not e.args:
            return e
        args = [rewrite(a) for a in e.args]
        if e.func is sympy.log:
            return log(args[0])
        if e.func is sympy.Max:
            return Max(*args)
        if e.func is sympy.Min:
            return Min(*args)
        if e.is_Pow:
            b, ex = args
            if ex.is_number and float(ex) == 0.5:
                return sqrt(b)
            if ex.is_number and float(ex) == -0.5:
                return 1 / sqrt(b)
            if ex.is_number and not ex.is_integer and not isinstance(b, sympy.Abs):
                return sympy.Pow(sympy.Abs(b), ex)
            return sympy.Pow(b, ex)
        return e.func(*args)

    return rewrite(expr)


class sigmoid(sympy.Function):  # noqa: N801  (sympy prints the class name)
    """Logistic function 1/(1+exp(-x))."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return 1 / (1 + sympy.exp(-x))
        return None

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sympy.exp(-x))

    def _eval_evalf(self, prec):
        return (1 / (1 + sympy.exp(-self.args[0])))._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _latex(self, printer, exp=None):
        body = r"\sigma\left(%s\right)" % printer._print(self.args[0])
        return body if exp is None else r"%s^{%s}" % (body, exp)


class softplus(sympy.Function):  # noqa: N801
    """log(1+exp(x)), computed stably on the torch side."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sympy.log(1 + sympy.exp(x))
        return None

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sympy.log(1 + sympy.exp(x))

    def _eval_evalf(self, prec):
        return sympy.log(1 + sympy.exp(self.args[0]))._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real

    def _latex(self, printer, exp=None):
        body = r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])
        return body if exp is None else r"%s^{%s}" % (body, exp)
