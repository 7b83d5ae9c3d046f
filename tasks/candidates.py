"""Candidate losses: expressions, expression text, or catalogue ``Loss`` objects.

Each loss given to ``Task.evaluate`` becomes a :class:`Candidate` that trains
one model of the population either through the *expression path* (its
compiled Program joins the population program, see ``program.py``) or through
the *module path* (its ``nn.Module`` is called on the model outputs adapted to
the module's ``input``/``target`` conventions).  A loss that cannot be used
on the task becomes a candidate with an ``error``: it is reported, not
trained, and the other candidates are unaffected.

Module-path conventions (a catalogue ``Loss`` is duck-typed: ``.name``,
``.expr``, ``.space``, ``.input``, ``.target``, ``.task_kinds``, ``.module()``):

* multiclass task: logits ``[B, C]``; ``index`` targets are class indices,
  ``binary``/``probabilities`` targets the one-hot matrix (a binary loss is
  then one-vs-all, summed over classes), ``signed`` targets ``2*onehot - 1``.
* binary task (and segmentation, per pixel, shaped ``[B, 1, H, W]``): a binary
  loss sees the logit, its sigmoid or log-sigmoid, and targets ``t`` (``2t-1``
  when signed); a multiclass loss sees logits ``[0, z]`` with index targets
  (or ``[1-t, t]`` probabilities), as in ``losses/spaces.py``.
* regression: ``prediction`` inputs and ``value`` targets (standardised).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import sympy
import torch
import torch.nn.functional as F

from lossforge.primitives import Expr, LossforgeError, as_expr
from lossforge.primitives.compile import Program

INPUTS = ("logits", "probabilities", "log_probabilities", "prediction", "log_rate")
TARGETS = ("index", "binary", "signed", "probabilities", "value")


@dataclass
class Candidate:
    label: str
    program: Program | None = None
    module: Any = None
    adapt: Callable | None = None  # (z [out, N], batch targets) -> per-sample losses [B]
    error: str | None = None
    source: Any = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return "error" if self.error else ("expression" if self.program is not None else "module")


def _label(loss) -> str:
    if isinstance(loss, (Expr, str)):
        return str(loss)
    name = getattr(loss, "name", None)
    return str(name) if name is not None else type(loss).__name__


def _is_catalogue_loss(loss) -> bool:
    return all(hasattr(loss, a) for a in ("name", "module", "expr"))


def prepare(loss, task) -> Candidate:
    """Turn one user loss into a Candidate for ``task`` (never raises for a bad loss)."""
    label = _label(loss)
    try:
        if isinstance(loss, (Expr, str, sympy.Basic)):
            return Candidate(label, program=as_expr(loss).compile(), source=loss)
        if _is_catalogue_loss(loss):
            return _prepare_catalogue(loss, task, label)
        return Candidate(label, error=f"cannot train with a {type(loss).__name__}: pass an Expr, expression text "
                                      "or a catalogue Loss (lossforge.losses.get(name))")
    except LossforgeError as exc:
        return Candidate(label, error=f"{type(exc).__name__}: {exc}", source=loss)
    except Exception as exc:  # a broken third-party loss must not stop the others
        return Candidate(label, error=f"{type(exc).__name__}: {exc}", source=loss)


def _prepare_catalogue(loss, task, label: str) -> Candidate:
    kinds = tuple(getattr(loss, "task_kinds", ()) or ())
    # A segmentation map is binary per pixel: a binary loss trains it too.
    applies = task.kind in kinds or (task.kind == "segmentation" and "binary" in kinds)
    if kinds and not applies:
        return Candidate(label, error=f"loss '{label}' trains {', '.join(kinds)} tasks, not a {task.kind} task "
                                      f"like '{task.name}'", source=loss)
    expr = getattr(loss, "expr", None)
    if expr is not None and getattr(loss, "space", None) == task.expression_space:
        return Candidate(label, program=as_expr(expr).compile(), source=loss)
    inp, tgt = getattr(loss, "input", None), getattr(loss, "target", None)
    if inp not in INPUTS or tgt not in TARGETS:
        return Candidate(label, error=f"loss '{label}' has input={inp!r}, target={tgt!r}; expected input in "
                                      f"{INPUTS} and target in {TARGETS}", source=loss)
    adapt = _adapter(task, inp, tgt)
    if isinstance(adapt, str):
        return Candidate(label, error=f"loss '{label}' (input {inp}, target {tgt}) {adapt}", source=loss)
    module = _build_module(loss)
    return Candidate(label, module=module, adapt=adapt, source=loss)


def _build_module(loss):
    try:
        module = loss.module(reduction="none")
    except TypeError:
        module = loss.module()
        if hasattr(module, "reduction"):
            module.reduction = "none"
    return module


# ----------------------------------------------------------------------------- adapters
def _binary_input(z: torch.Tensor, inp: str):
    if inp == "logits":
        return z
    if inp == "probabilities":
        return torch.sigmoid(z)
    if inp == "log_probabilities":
        return F.logsigmoid(z)
    return None


def _class_input(logits: torch.Tensor, inp: str, dim: int = 1):
    if inp == "logits":
        return logits
    if inp == "probabilities":
        return torch.softmax(logits, dim=dim)
    if inp == "log_probabilities":
        return torch.log_softmax(logits, dim=dim)
    return None


def _per_sample(out: torch.Tensor, batch: int, sum_dim1: bool = False) -> torch.Tensor:
    if out.dim() == 0 or out.shape[0] != batch:
        raise LossforgeError(f"the loss module returned shape {tuple(out.shape)}; with reduction='none' it must "
                             f"return per-sample or elementwise values with the batch ({batch}) first")
    if sum_dim1 and out.dim() > 1:
        out = out.sum(dim=1)
    return out.reshape(batch, -1).mean(dim=1) if out.dim() > 1 else out


def _adapter(task, inp: str, tgt: str):
    """A function ``(module, z [out, N], targets) -> [B]`` or an error string."""
    kind = task.kind
    if kind == "multiclass":
        if inp not in ("logits", "probabilities", "log_probabilities"):
            return f"needs {inp} inputs, which a multiclass task does not produce"
        if tgt == "value":
            return "needs real-valued targets; a multiclass task has class labels"
        c = task.num_classes

        def adapt(module, z, t):
            x = _class_input(z.t(), inp)
            if tgt == "index":
                return _per_sample(module(x, t), t.shape[0])
            onehot = F.one_hot(t, c).to(z.dtype)
            target = 2 * onehot - 1 if tgt == "signed" else onehot
            return _per_sample(module(x, target), t.shape[0], sum_dim1=tgt in ("binary", "signed"))

        return adapt
    if kind in ("binary", "segmentation"):
        if inp not in ("logits", "probabilities", "log_probabilities"):
            return f"needs {inp} inputs, which a {kind} task does not produce"
        if tgt == "value":
            return f"needs real-valued targets; a {kind} task has 0/1 labels"
        image = task.image_shape if kind == "segmentation" else None

        def shaped(v, batch):  # [N] -> [B] or [B, 1, H, W]
            return v.view(batch, 1, *image[1:]) if image is not None else v

        def adapt(module, z, t):
            batch = t.shape[0]
            flat_t = t.reshape(-1)
            if tgt in ("index", "probabilities"):  # a multiclass loss: logits [0, z]
                z2 = torch.stack([torch.zeros_like(z[0]), z[0]], dim=-1)  # [N, 2]
                if image is not None:
                    z2 = z2.view(batch, *image[1:], 2).movedim(-1, 1)  # [B, 2, H, W]
                x = _class_input(z2, inp, dim=1)
                if tgt == "index":
                    target = t.long() if image is None else t.long().view(batch, *image[1:])
                else:
                    tf = flat_t.to(z.dtype)
                    target = torch.stack([1 - tf, tf], dim=-1)
                    if image is not None:
                        target = target.view(batch, *image[1:], 2).movedim(-1, 1)
                return _per_sample(module(x, target), batch)
            x = shaped(_binary_input(z[0], inp), batch)
            tf = flat_t.to(z.dtype)
            target = shaped(2 * tf - 1 if tgt == "signed" else tf, batch)
            return _per_sample(module(x, target), batch)

        return adapt
    # regression
    if inp == "log_rate":
        return "needs non-negative count targets; regression targets are standardised (real-valued)"
    if inp != "prediction" or tgt != "value":
        return "does not fit a regression task, which needs input 'prediction' and target 'value'"

    def adapt(module, z, t):
        return _per_sample(module(z[0], t), t.shape[0])

    return adapt
