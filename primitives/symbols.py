"""Terminals of the grammar and the sympy functions sympy lacks.

``p`` is the prediction in the task's prediction space (a probability for
classification, a raw value for regression) and ``y`` the target.  ``c0`` ...
``c9`` are named tunable constants: GP leaves them free, Optuna binds them.
All terminals are real, which lets sympy apply real-valued identities such as
``sqrt(x**2) -> Abs(x)``.
"""
from __future__ import annotations

import sympy

P = sympy.Symbol("p", real=True)
Y = sympy.Symbol("y", real=True)
TERMINALS: dict[str, sympy.Symbol] = {"p": P, "y": Y}

MAX_TUNABLE = 10
TUNABLE: dict[str, sympy.Symbol] = {f"c{i}": sympy.Symbol(f"c{i}", real=True) for i in range(MAX_TUNABLE)}

# Named numeric constants that sympy's printer may emit (``E`` for exp(1)).
NAMED_CONSTANTS: dict[str, sympy.Expr] = {"E": sympy.E, "pi": sympy.pi}

ALL_SYMBOLS: dict[str, sympy.Symbol] = {**TERMINALS, **TUNABLE}


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
