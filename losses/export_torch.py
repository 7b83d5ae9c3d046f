"""Export a loss as a standalone PyTorch module that imports only torch.

The code is generated from the expression's compiled form: the expression's
sympy tree is lowered by lossforge's compiler (:mod:`lossforge.primitives.compile`)
to a straight-line Program whose operations are rows of the primitive table,
and each operation is printed as the same torch call the row makes (the
protected log/sqrt/div/pow and the clamped exp of :mod:`~lossforge.primitives.table`,
with the thresholds of :mod:`~lossforge.primitives.protection`).  Constants are
the Program's folded float64 values, printed with ``repr`` (exact).  So the
exported values and gradients are those of lossforge's compiled loss, and the
module's input conventions are those of :class:`~lossforge.losses.ExpressionLoss`.

The generated code is TorchScript-compatible (type annotations, literal
thresholds, no Python-side polymorphism) and device-agnostic.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import reduce

import torch

from lossforge.primitives import Expr, get_primitive, primitives
from lossforge.primitives.torchforms import safe_denominator

from .errors import ExportError

# ----------------------------------------------------------------------------- helper functions of the module
# Each operator's standalone code is its primitive row's (``export``, ``export_source``,
# ``export_note``); this one is the exporter's own: a float operand of a call, as a tensor.
_SCALAR_LIKE = "scalar_like"
_SCALAR_LIKE_SOURCE = '''def scalar_like(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor of value with the dtype and device of like."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)
'''


def helper_source(helpers: list[str]) -> str:
    """The definitions ``helpers`` (row names, and ``scalar_like``) stand for, in order."""
    parts = [_SCALAR_LIKE_SOURCE if h == _SCALAR_LIKE else get_primitive(h).export_source for h in helpers]
    return "\n\n".join(p for p in parts if p)


def _is_call(template: str, arity: int) -> bool:
    """Whether a row's export template is one call (an atom as an operand)."""
    try:
        node = ast.parse(template.format(*[f"a{i}" for i in range(arity)]), mode="eval").body
    except (SyntaxError, IndexError, KeyError, ValueError) as exc:
        raise ExportError(f"export template {template!r} is not a Python expression over {{0}}..{{{arity - 1}}}: "
                          f"{exc}") from None
    return isinstance(node, ast.Call)


# ----------------------------------------------------------------------------- values while generating
@dataclass(frozen=True)
class _Tensor:
    code: str
    atom: bool  # a name or a call: needs no parentheses as an operand


@dataclass(frozen=True)
class _Float:
    value: float


def _literal(v: float) -> str:
    return repr(float(v))


def _operand(x) -> str:
    if isinstance(x, _Float):
        text = _literal(x.value)
        return f"({text})" if text.startswith("-") else text
    return x.code if x.atom else f"({x.code})"


def _plain(x) -> str:  # an argument of a call: no parentheses needed
    return _literal(x.value) if isinstance(x, _Float) else x.code


class _Generator:
    """Prints a compiled Program as Python/torch source, one row's export form per operation."""

    def __init__(self) -> None:
        self.helpers: set[str] = set()

    def use(self, helper: str) -> str:
        self.helpers.add(helper)
        return helper

    def op(self, opcode: str, xs: list, payload):
        floats = [isinstance(x, _Float) for x in xs]
        row = get_primitive(opcode)
        # add, mul, neg, div and pow: the compiler's lowering of sympy's Add/Mul/Pow,
        # whose operands may be Python floats (folded as the Program folds them).
        if opcode in ("add", "mul"):
            if all(floats):  # the Program computes these in Python floats: so do we, now
                return _Float(reduce(row.torch, [x.value for x in xs]))
            sep = " + " if opcode == "add" else " * "
            return _Tensor(sep.join(_operand(x) for x in xs), atom=False)
        if opcode == "neg":
            (x,) = xs
            return _Float(-x.value) if isinstance(x, _Float) else _Tensor(f"-{_operand(x)}", atom=False)
        if all(floats):
            raise ExportError(f"cannot export '{opcode}' of constant arguments {[_plain(x) for x in xs]}: "
                              "the compiler should have folded it (please report this expression)")
        if opcode == "div":
            a, b = xs
            if isinstance(b, _Float):
                # protected_div turns a float denominator into a default-dtype tensor first.
                safe = safe_denominator(torch.as_tensor(b.value))[0]
                return _Tensor(f"{_operand(a)} / {_operand(_Float(float(safe)))}", atom=False)
            self.use("div")
            if isinstance(a, _Float):
                return _Tensor(f"{_operand(a)} / safe_denominator({b.code})", atom=False)
            return _Tensor(f"protected_div({a.code}, {b.code})", atom=True)
        if opcode == "pow":
            (x,) = xs
            e = float(payload)
            if e.is_integer():
                n = int(e)
                if n >= 0:
                    return _Tensor(f"{_operand(x)} ** {n}", atom=False)
                self.use("div")
                return _Tensor(f"protected_div(torch.ones_like({x.code}), {_operand(x)} ** {-n})", atom=True)
            self.use("pow")
            return _Tensor(row.export.format(x.code, _literal(e)), atom=True)
        if row.export is None:
            raise ExportError(f"the primitive '{opcode}' has no standalone torch form: its torch form "
                              f"{getattr(row.torch, '__name__', row.torch)!r} is neither a torch function nor a def "
                              f"function with source; register it with export='...({{0}})' and "
                              "export_source='def ...' (code that imports only torch)")
        if row.export_source:
            self.use(opcode)
        call = _is_call(row.export, len(xs))
        tensor = next(x for x in xs if isinstance(x, _Tensor))
        args = []
        for x in xs:
            if isinstance(x, _Float):  # as the Program's float operand, a tensor of p's dtype
                args.append(f"{self.use(_SCALAR_LIKE)}({_literal(x.value)}, {tensor.code})")
            else:
                args.append(x.code if call else _operand(x))
        return _Tensor(row.export.format(*args), atom=call)


def elementwise_source(expr: Expr, function_name: str = "elementwise") -> tuple[str, list[str]]:
    """Source of ``def elementwise(p, y)`` computing the expression exactly as lossforge
    does, and the names of the helper functions it calls (in definition order)."""
    program = expr.compile()
    gen = _Generator()
    slots: list = [_Tensor("p", True), _Tensor("y", True)] + [_Float(c) for c in program.constants]
    uses: dict[int, int] = {}
    for _, args, _ in program.instructions:
        for a in args:
            uses[a] = uses.get(a, 0) + 1
    uses[program.output] = uses.get(program.output, 0) + 1
    body: list[str] = []
    first = len(slots)
    for k, (opcode, args, payload) in enumerate(program.instructions):
        value = gen.op(opcode, [slots[a] for a in args], payload)
        if isinstance(value, _Tensor) and uses.get(first + k, 0) > 1:  # shared subexpression: name it once
            name = f"t{k}"
            body.append(f"{name} = {value.code}")
            value = _Tensor(name, True)
        slots.append(value)
    out = slots[program.output]
    body.append(f"loss = {_plain(out)}")
    if not program.uses_p:  # as the Program: keep a (zero) graph to p so backward() works
        body.append("loss = p * 0 + loss")
    if not program.uses_y:
        body.append("loss = torch.broadcast_tensors(loss, p, y)[0]")
    body.append("return loss")
    doc = f'    """L(p, y) = {expr}, elementwise, with lossforge\'s protected operators."""'
    code = (f"def {function_name}(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:\n{doc}\n"
            + "".join(f"    {line}\n" for line in body))
    order = [name for name in primitives() if name in gen.helpers]
    return code, order + ([_SCALAR_LIKE] if _SCALAR_LIKE in gen.helpers else [])


# ----------------------------------------------------------------------------- the module around it
def python_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if ident and not ident[0].isdigit() else f"loss_{ident}"


def class_name(name: str) -> str:
    parts = [p for p in python_identifier(name).split("_") if p]
    return "".join(p[:1].upper() + p[1:] for p in parts) + "Loss"


def comment_text(value) -> str:
    """One line of text that is safe inside a ``#`` comment (no newlines or control characters)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= 400 else text[:397] + "..."


_CONVENTION_DOC = {
    "multiclass": (
        "multiclass: ``input`` holds logits :math:`(N, C, *)`, ``target`` integer class\n"
        "indices :math:`(N, *)` (as ``torch.nn.CrossEntropyLoss``).  p = softmax(input) over the\n"
        "classes (dim 1), y = one-hot(target), and the loss of a sample is sum_c L(p_c, y_c).",
        "input (N, C, *) logits, target (N, *) class indices (int64), output (N, *)"),
    "binary": (
        "binary: ``input`` holds one logit per element, ``target`` 0/1 labels of the same\n"
        "shape (as ``torch.nn.BCEWithLogitsLoss``).  With s = sigmoid(input) and t = target,\n"
        "the loss of an element is L(1 - s, 1 - t) + L(s, t).",
        "input (*) logits, target (*) 0/1 labels (any dtype), output (*)"),
    "regression": (
        "regression: ``input`` holds predictions, ``target`` the targets, of the same shape\n"
        "(as ``torch.nn.MSELoss``); the loss of an element is L(input, target).",
        "input (*), target (*), output (*)"),
}

_FORWARD = {
    "multiclass": '''    if input.dim() < 2:
        raise ValueError(f"input must be [N, C] or [N, C, d1, ...] logits, got shape {{list(input.shape)}}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError("target must hold integer class indices (torch.long)")
    expected = [input.shape[0]] + list(input.shape[2:])
    if list(target.shape) != expected:
        raise ValueError(f"input shape {{list(input.shape)}} needs target shape {{expected}}, "
                         f"got {{list(target.shape)}}")
    p = F.softmax(input.movedim(1, -1), dim=-1)
    y = F.one_hot(target.long(), input.shape[1]).to(input.dtype)
    return _reduce({elementwise}(p, y).sum(dim=-1), reduction)
''',
    "binary": '''    if input.shape != target.shape:
        raise ValueError(f"input shape {{list(input.shape)}} and target shape {{list(target.shape)}} differ; "
                         "they must be equal (no broadcasting)")
    p = torch.stack([torch.sigmoid(-input), torch.sigmoid(input)], dim=-1)
    t = target.to(input.dtype)
    y = torch.stack([1 - t, t], dim=-1)
    return _reduce({elementwise}(p, y).sum(dim=-1), reduction)
''',
    "regression": '''    if input.shape != target.shape:
        raise ValueError(f"input shape {{list(input.shape)}} and target shape {{list(target.shape)}} differ; "
                         "they must be equal (no broadcasting)")
    return _reduce({elementwise}(input, target.to(input.dtype)), reduction)
''',
}

_REDUCE = '''def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
'''


def module_source(name: str, expr: Expr, kind: str, *, title: str, comments: list[str], version: str,
                  command: str | None = None) -> str:
    """The whole exported file: docstring, provenance comments, helpers, the
    elementwise form, the functional form and the ``nn.Module``."""
    if kind not in _FORWARD:
        raise ExportError(f"cannot export for task kind {kind!r}; use multiclass, binary or regression")
    ident = python_identifier(name)
    fn_name, cls_name = f"{ident}_loss", class_name(name)
    element_code, helpers = elementwise_source(expr)
    protections = [get_primitive(h).export_note for h in helpers if h != _SCALAR_LIKE and get_primitive(h).export_note]
    convention, shape = _CONVENTION_DOC[kind]
    latex = expr.latex().replace('"""', "'''")
    protection_text = ("Protected operators, exactly as in lossforge (so values and gradients match):\n"
                       + "".join(f"{p};\n" for p in protections).rstrip(";\n") + "." if protections
                       else "The expression uses no protected operator.")
    doc = (f'r"""{ident}: {title}\n\n'
           f"The loss of one element is\n\n    L(p, y) = {expr}\n\nLaTeX: {latex}\n\n"
           f"{convention}\n\n{protection_text}\n\n"
           f"Shape: {shape}; with reduction 'mean' or 'sum', a scalar.\n\n"
           "This file imports only torch and works on any device, under torch.jit.script and torch.compile.\n"
           f'"""')
    header = "\n".join(f"# {comment_text(c)}" for c in comments)
    parts = [
        doc,
        f"# Generated by lossforge {comment_text(version)} "
        f"(`{comment_text(command or f'lossforge export {ident} --format py')}`).",
        header,
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        f'__all__ = ["{fn_name}", "{cls_name}", "elementwise"]',
        "",
    ]
    code = "\n".join(parts) + "\n"
    if helpers:
        code += "\n" + helper_source(helpers) + "\n"
    code += "\n" + element_code + "\n\n" + _REDUCE + "\n\n"
    code += (f"def {fn_name}(input: torch.Tensor, target: torch.Tensor, reduction: str = \"mean\") -> torch.Tensor:\n"
             f'    """The {ident} loss of ``input`` and ``target``; see the module docstring.\n\n'
             f"    reduction: 'none' | 'mean' | 'sum' (default 'mean').\n"
             f'    """\n'
             f'    if reduction not in ["none", "mean", "sum"]:\n'
             f"        raise ValueError(f\"reduction must be one of 'none', 'mean', 'sum', got '{{reduction}}'\")\n"
             + _FORWARD[kind].format(elementwise="elementwise") + "\n\n")
    code += (f"class {cls_name}(nn.Module):\n"
             f'    """The {ident} loss as a module: ``forward(input, target)``.\n\n'
             f"    {convention.splitlines()[0]}\n"
             + "".join(f"    {line}\n" for line in convention.splitlines()[1:])
             + f"\n    Args:\n        reduction: 'none' | 'mean' | 'sum'. Default: 'mean'.\n\n"
             f"    Shape:\n        {shape}; with 'mean' or 'sum', a scalar.\n"
             f'    """\n\n'
             f"    def __init__(self, reduction: str = \"mean\") -> None:\n"
             f"        super().__init__()\n"
             f"        if reduction not in (\"none\", \"mean\", \"sum\"):\n"
             f"            raise ValueError(f\"reduction must be one of 'none', 'mean', 'sum', got {{reduction!r}}\")\n"
             f"        self.reduction = reduction\n\n"
             f"    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:\n"
             f"        return {fn_name}(input, target, self.reduction)\n\n"
             f"    def extra_repr(self) -> str:\n"
             f"        return f\"reduction={{self.reduction!r}}\"\n")
    return code
