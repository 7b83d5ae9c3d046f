"""Export a loss (reference or discovered) as code or data: ``export(name, format)``.

Formats (one function each; the torch code generator has its own module):

``py``     a standalone module that imports only torch: ``elementwise(p, y)``, a
           functional ``<name>_loss(input, target, reduction)`` and an
           ``nn.Module`` ``<Name>Loss(reduction)`` with torch's conventions, the
           formula in the docstring and the provenance in comments
           (:mod:`lossforge.losses.export_torch`).
``json``   name, expression, canonical form, LaTeX, kind, conventions, params and provenance.
``latex``  the expression in LaTeX.
``sympy``  a Python snippet that builds the expression with plain sympy
           (``from sympy import ...``), the mathematical form without the
           numeric guards (log and sqrt of ``|x|`` stay; the floors and clamps go).

The module conventions of ``py`` are :class:`~lossforge.losses.ExpressionLoss`'s
for the loss's first task kind (a segmentation loss exports as binary, per
pixel); ``task_kind=`` picks another.  Parameters of a reference loss can be
set: ``export("focal", "py", gamma=1.0)``.
"""
from __future__ import annotations

import json
from typing import Any

import sympy

from lossforge.primitives import Expr, as_expr, did_you_mean
from lossforge.primitives.protection import DIV_EPS, EXP_MAX, LOG_EPS
from lossforge.primitives.version import lossforge_version

from .errors import ExportError
from .export_torch import comment_text, module_source
from .loss import Loss

FORMATS = ("py", "json", "latex", "sympy")
_MODULE_KINDS = ("multiclass", "binary", "regression")


def _resolve(loss: str | Loss) -> Loss:
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise ExportError(f"export takes a loss name or a Loss, got {type(loss).__name__}")
    from .registry import get

    return get(loss)


def module_kind(loss: Loss, task_kind: str | None = None) -> str:
    """The convention the exported module follows: multiclass, binary or regression."""
    if task_kind is not None:
        if task_kind not in _MODULE_KINDS:
            raise ExportError(f"task_kind {task_kind!r} is not one of {', '.join(_MODULE_KINDS)}"
                              f"{did_you_mean(str(task_kind), _MODULE_KINDS)}")
        expected = "real" if task_kind == "regression" else "probability"
        if loss.space is not None and loss.space != expected:
            raise ExportError(f"'{loss.name}' is a {loss.space}-space expression; it cannot be exported as a "
                              f"{task_kind} loss")
        return task_kind
    if loss.space == "real":
        return "regression"
    for kind in loss.task_kinds:
        kind = "binary" if kind == "segmentation" else kind
        if kind in ("multiclass", "binary"):
            return kind
    return "multiclass"


def _expression(loss: Loss, params: dict[str, Any]) -> Expr:
    if loss.expr is None:
        factory = loss.module_factory
        where = f"{factory.__module__}.{getattr(factory, '__qualname__', factory.__name__)}" if factory else "torch"
        why = loss.notes or "it is not elementwise in (p, y)"
        raise ExportError(f"'{loss.name}' has no expression in the loss grammar ({why}), so it cannot be exported; "
                          f"the reference lives in its module: use lossforge.losses.get('{loss.name}').module() "
                          f"({where})")
    if not params:
        return loss.expr
    expr = loss.expression(**params)
    if expr is None:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        raise ExportError(f"'{loss.name}' has no expression in the grammar for {shown}; export it with other "
                          "values or use its module")
    return expr


def _provenance_lines(loss: Loss) -> list[str]:
    if loss.kind != "discovered":
        lines = [f"Reference loss '{loss.name}' of the lossforge catalogue: {loss.reference}",
                 f"Catalogue formula: {loss.formula}"]
        if loss.module_factory is not None:
            lines.append("This is its expression form in the prediction space; lossforge's catalogue module "
                         f"({loss.module_factory.__module__}) takes input '{loss.input}', target '{loss.target}'.")
        return lines
    prov = {k: v for k, v in loss.provenance.items() if k not in ("scores", "file")}
    lines = ["Provenance (discovered by a lossforge search):"]
    for key in ("run_id", "config_name", "config_digest", "strategy", "generation", "origin", "fitness",
                "complexity", "tasks", "eval_seeds", "steps", "split", "lossforge_version", "run_created"):
        if key in prov:
            lines.append(f"  {key}: {comment_text(prov.pop(key))}")
    for key, value in prov.items():
        lines.append(f"  {comment_text(key)}: {comment_text(value)}")
    for task, score in (loss.provenance.get("scores") or {}).items():
        lines.append(f"  score on {comment_text(task)}: {comment_text(score)}")
    return lines


def export_py(loss: Loss, expr: Expr, kind: str, params: dict[str, float]) -> str:
    title = ("a loss discovered by lossforge." if loss.kind == "discovered"
             else f"the {loss.name} loss of the lossforge catalogue, in expression form.")
    comments = _provenance_lines(loss)
    if params:
        comments.append("Parameters (fixed in this file): "
                        + ", ".join(f"{k}={v:g}" for k, v in params.items()))
    return module_source(loss.name, expr, kind, title=title, comments=comments, version=lossforge_version())


def export_json(loss: Loss, expr: Expr, kind: str, params: dict[str, float]) -> str:
    doc: dict[str, Any] = {
        "name": loss.name,
        "kind": loss.kind,
        "family": loss.family,
        "expression": str(expr),
        "canonical": expr.canonical,
        "latex": expr.latex(),
        "complexity": expr.complexity,
        "space": loss.space,
        "task_kind": kind,
        "task_kinds": list(loss.task_kinds),
        "input": loss.input,
        "target": loss.target,
        "params": params,
        "formula": loss.formula,
        "reference": loss.reference,
    }
    if loss.kind == "discovered":
        doc["provenance"] = {k: v for k, v in loss.provenance.items() if k not in ("scores", "file")}
        doc["scores"] = dict(loss.provenance.get("scores") or {})
        doc["file"] = loss.provenance.get("file")
    doc["lossforge_version"] = lossforge_version()
    return json.dumps(doc, indent=2, default=str) + "\n"


def export_latex(loss: Loss, expr: Expr, kind: str, params: dict[str, float]) -> str:
    return expr.latex() + "\n"


def plain_sympy(expr: Expr, space: str) -> sympy.Expr:
    """The expression in plain sympy (standard functions, no numeric guards): each row's ``plain`` form."""
    from lossforge.primitives.symbols import P, Y
    from lossforge.primitives.table import row_for_head

    p = sympy.Symbol("p", positive=True) if space == "probability" else sympy.Symbol("p", real=True)
    y = sympy.Symbol("y", nonnegative=True) if space == "probability" else sympy.Symbol("y", real=True)

    def walk(e):
        if e is P:
            return p
        if e is Y:
            return y
        if not e.args:
            return e
        args = [walk(a) for a in e.args]
        row = row_for_head(type(e))
        return row.plain(*args) if row is not None and row.plain is not None else e.func(*args)

    return walk(expr.sympy)


def _sympy_names(plain: sympy.Expr) -> list[str]:
    """What the snippet imports from sympy: the usual names and every function the expression uses."""
    used = {type(node).__name__ for node in sympy.preorder_traversal(plain) if isinstance(node, sympy.Function)}
    base = {"Abs", "E", "Float", "Max", "Min", "Rational", "S", "Symbol", "exp", "log", "pi", "sqrt", "tanh"}
    return sorted(base | {n for n in used if getattr(sympy, n, None) is not None})


def sympy_snippet(name: str, expr: Expr, kind: str) -> str:
    """A Python snippet building ``expr`` in plain sympy, for a ``kind`` task's prediction space."""
    space = "real" if kind == "regression" else "probability"
    plain = plain_sympy(expr, space)
    text = sympy.sstr(plain, sympy_integers=True)
    if space == "probability":
        symbols = ('p = Symbol("p", positive=True)   # a probability (softmax / sigmoid output)\n'
                   'y = Symbol("y", nonnegative=True)  # a one-hot / 0-1 target\n')
    else:
        symbols = 'p = Symbol("p", real=True)  # the prediction\ny = Symbol("y", real=True)  # the target\n'
    return (f'"""{name} as a plain sympy expression: L(p, y) = {expr}\n\n'
            "lossforge evaluates it with numeric guards that are left out here: log and sqrt of |x| with\n"
            f"|x| floored at {LOG_EPS:g}, denominators floored at {DIV_EPS:g} in magnitude, exp(x) clamped at "
            f"x <= {EXP_MAX:g}.\n"
            '"""\n'
            f"from sympy import {', '.join(_sympy_names(plain))}  # noqa: F401\n\n"
            f"{symbols}\nloss = {text}\n")


def export_sympy(loss: Loss, expr: Expr, kind: str, params: dict[str, float]) -> str:
    return sympy_snippet(loss.name, expr, kind)


_EXPORTERS = {"py": export_py, "json": export_json, "latex": export_latex, "sympy": export_sympy}


def export(loss: str | Loss, format: str = "py", *, task_kind: str | None = None, **params: float) -> str:
    """The loss ``loss`` (a name or a :class:`Loss`) as text in ``format``: "py", "json", "latex" or "sympy".

    ``task_kind`` picks the module convention of the ``py`` export (default:
    the loss's own); ``params`` override the loss's parameters (references).
    A reference without a grammar expression raises :class:`ExportError`.
    """
    if format not in _EXPORTERS:
        raise ExportError(f"unknown export format {format!r}{did_you_mean(str(format), FORMATS)}; "
                          f"use one of {', '.join(FORMATS)}")
    entry = _resolve(loss)
    expr = _expression(entry, params)
    kind = module_kind(entry, task_kind)
    if entry.space is None:
        raise ExportError(f"'{entry.name}' has no prediction space, so it cannot be exported")
    values = {**dict(entry.params), **{k: float(v) for k, v in params.items()}}
    return _EXPORTERS[format](entry, expr, kind, values)


def export_expression(expr: Expr | str, kind: str = "multiclass", format: str = "py", *,
                      name: str = "custom") -> str:
    """Any expression (an :class:`Expr` or its text) as text in ``format``: "py", "json", "latex" or "sympy".

    ``kind`` is the module convention of the ``py`` export (multiclass, binary or
    regression; see :func:`export`).  Operators registered by the user export
    with the code their row carries, so the ``py`` file still imports only torch.
    """
    if format not in _EXPORTERS:
        raise ExportError(f"unknown export format {format!r}{did_you_mean(str(format), FORMATS)}; "
                          f"use one of {', '.join(FORMATS)}")
    if kind not in _MODULE_KINDS:
        raise ExportError(f"kind {kind!r} is not one of {', '.join(_MODULE_KINDS)}"
                          f"{did_you_mean(str(kind), _MODULE_KINDS)}")
    e = as_expr(expr)
    if format == "py":
        return module_source(name, e, kind, title="a loss expression exported by lossforge.",
                             comments=[f"Expression: {e} (canonical form: {e.canonical})"], version=lossforge_version(),
                             command=f"lossforge export '{e}' --kind {kind} --format py")
    if format == "latex":
        return e.latex() + "\n"
    if format == "sympy":
        return sympy_snippet(name, e, kind)
    doc = {"name": name, "expression": str(e), "canonical": e.canonical, "latex": e.latex(),
           "complexity": e.complexity, "space": "real" if kind == "regression" else "probability",
           "task_kind": kind, "lossforge_version": lossforge_version()}
    return json.dumps(doc, indent=2) + "\n"
