"""The :class:`Loss` catalogue entry and the plumbing every loss module shares.

A :class:`Loss` describes one loss (name, family, formula, default parameters,
citation, symbolic form) and builds its ``torch.nn.Module``.  The modules of the
reference catalogue derive from :class:`CatalogueLoss`, which keeps the
parameters and the reduction and calls the module's functional twin, so the
module and the function cannot disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping

import torch
from torch import nn

from lossforge.primitives import Expr, GrammarError, as_expr, did_you_mean

from .errors import LossInputError, LossParameterError

KINDS = ("reference", "discovered")
SPACES = ("probability", "real")
INPUTS = ("logits", "probabilities", "log_probabilities", "prediction", "log_rate",
          # conventions beyond (p, y); see CONVENTIONS
          "boxes", "embeddings", "embedding_pairs", "embedding_triplets", "images", "feature_maps",
          "critic_scores", "gaussian_mean", "noise_prediction", "reconstructions", "routing_logits")
TARGETS = ("index", "binary", "signed", "probabilities", "value",
           "boxes", "embeddings", "images", "feature_maps", "real_fake", "log_variance", "noise")
TASK_KINDS = ("multiclass", "binary", "regression", "segmentation", "boxes", "embeddings", "image", "generative")
# The input convention of each kind of module input: "p, y" is a prediction and a target of the same
# sample (the grammar's terminals, for the entries with an expression); the others take boxes, embeddings,
# images or the outputs of generative models and are reference-only (no expression in the grammar).
CONVENTIONS = {"logits": "p, y", "probabilities": "p, y", "log_probabilities": "p, y", "prediction": "p, y",
               "log_rate": "p, y", "boxes": "boxes", "embeddings": "embeddings", "embedding_pairs": "embeddings",
               "embedding_triplets": "embeddings", "images": "images", "feature_maps": "images",
               "critic_scores": "generative", "gaussian_mean": "generative", "noise_prediction": "generative",
               "reconstructions": "generative",
               "routing_logits": "p, y"}
REDUCTIONS = ("none", "mean", "sum")


# ------------------------------------------------------------------ reductions and input checks
def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise LossInputError(f"reduction must be one of 'none', 'mean', 'sum', got {reduction!r}")
    return reduction


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` to an unreduced loss tensor."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return reduce(loss, check_reduction(reduction))


def check_same_shape(input: torch.Tensor, target: torch.Tensor, what: str = "target") -> None:
    # Unlike F.mse_loss, a shape mismatch is an error: broadcasting a [N] target
    # against a [N, 1] prediction silently computes an N x N loss.
    if input.shape != target.shape:
        raise LossInputError(f"input shape {tuple(input.shape)} and {what} shape {tuple(target.shape)} differ; "
                             f"they must be equal (reshape one of them, e.g. input.squeeze(-1))")


def check_class_target(input: torch.Tensor, target: torch.Tensor) -> None:
    """Logits ``[N, C, *]`` and integer class indices ``[N, *]``."""
    if input.dim() < 2:
        raise LossInputError(f"input must be [N, C] or [N, C, d1, ...] class scores, got shape {tuple(input.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise LossInputError(f"target must hold integer class indices (torch.long), got dtype {target.dtype}")
    expected = input.shape[:1] + input.shape[2:]
    if target.shape != expected:
        raise LossInputError(f"input shape {tuple(input.shape)} needs target shape {tuple(expected)} "
                             f"(class dimension 1 removed), got {tuple(target.shape)}")


def check_signed_target(target: torch.Tensor) -> None:
    if not bool(((target == 1) | (target == -1)).all()):
        raise LossInputError("target must hold -1 and +1 labels; map 0/1 labels with 2*t - 1")


def one_hot_like(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One-hot ``[N, C, *]`` in the dtype of ``input`` from indices ``[N, *]``."""
    oh = torch.nn.functional.one_hot(target.long(), input.shape[1]).to(input.dtype)
    return oh.movedim(-1, 1)


def gather_class(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``values[n, target[n, ...], ...]``: the entry of each sample's target class, shape ``[N, *]``."""
    return values.gather(1, target.long().unsqueeze(1)).squeeze(1)


def focal_factor(base: torch.Tensor, gamma: float) -> torch.Tensor:
    """``base**gamma`` for the focal modulating factor ``(1 - p_t)**gamma``, with a
    zero instead of a NaN gradient where ``base`` is exactly 0 (p_t rounds to 1)
    and ``0 < gamma < 1`` would make the derivative infinite."""
    saturated = base == 0
    return torch.where(saturated, base.detach() ** gamma, base.masked_fill(saturated, 1.0) ** gamma)


# ------------------------------------------------------------------ parameter checks
def positive(name: str, value: float) -> None:
    if not value > 0:
        raise LossParameterError(f"{name} must be > 0, got {value}")


def non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise LossParameterError(f"{name} must be >= 0, got {value}")


def in_range(name: str, value: float, low: float, high: float, closed: bool = False) -> None:
    ok = low <= value <= high if closed else low < value < high
    if not ok:
        brackets = "[]" if closed else "()"
        raise LossParameterError(f"{name} must be in {brackets[0]}{low}, {high}{brackets[1]}, got {value}")


def switch(name: str, value: float) -> None:
    if value not in (0.0, 1.0):
        raise LossParameterError(f"{name} is a switch: 0 (off) or 1 (on), got {value}")


# ------------------------------------------------------------------ the module base class
class CatalogueLoss(nn.Module):
    """Base of the catalogue's loss modules.

    Subclasses set ``defaults`` (parameter name -> default value) and
    ``functional`` (the functional twin, called as
    ``functional(input, target, **params, reduction=...)``).
    """

    defaults: ClassVar[Mapping[str, float]] = {}
    functional: ClassVar[Callable[..., torch.Tensor]]

    def __init__(self, *, reduction: str = "mean", **params: float):
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.params = resolve_params(type(self).__name__, self.defaults, params)
        self.check_params(**self.params)

    @classmethod
    def check_params(cls, **params: float) -> None:
        """Raise :class:`LossParameterError` for values outside the loss's domain."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self).functional(input, target, **self.params, reduction=self.reduction)

    def extra_repr(self) -> str:
        items = [f"{k}={v:g}" for k, v in self.params.items()]
        return ", ".join(items + [f"reduction={self.reduction!r}"])


def resolve_params(owner: str, defaults: Mapping[str, float], given: Mapping[str, object],
                   extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Defaults overridden by ``given``; unknown names raise with a suggestion."""
    allowed = list(defaults) + list(extra)
    for name in given:
        if name not in allowed:
            hint = did_you_mean(name, allowed + ["reduction"])
            known = ", ".join(allowed) if allowed else "no parameters"
            raise LossParameterError(f"{owner} got an unknown parameter '{name}'{hint}; it takes {known}")
    values: dict[str, float] = {}
    for name, default in defaults.items():
        value = given.get(name, default)
        try:
            values[name] = float(value)  # bools (switches) become 0.0 / 1.0
        except (TypeError, ValueError):
            raise LossParameterError(f"{owner}: parameter '{name}' must be a number, got {value!r}") from None
        if math.isnan(values[name]):
            raise LossParameterError(f"{owner}: parameter '{name}' is NaN")
    return values


# ------------------------------------------------------------------ expression text
def num(value: float) -> str:
    """A parameter value as expression text: exact small fractions stay exact
    (``1.5`` -> ``(3/2)``) so that e.g. ``exp(gamma/alpha)`` is folded in float64
    at compile time instead of being rounded to 6 digits when parsed."""
    value = float(value)
    if value.is_integer():
        return f"({int(value)})"
    frac = Fraction(value).limit_denominator(1000)
    if float(frac) == value:
        return f"({frac.numerator}/{frac.denominator})"
    return f"({value!r})"


# ------------------------------------------------------------------ the catalogue entry
ExpressionBuilder = Callable[..., "Expr | str | None"]


@dataclass(frozen=True, eq=False)
class Loss:
    """One loss of the catalogue.

    ``expr`` is the elementwise symbolic form in the grammar's terminals with
    the default parameters (``None`` where the loss is not elementwise in
    ``(p, y)``); ``space`` says what ``p`` and ``y`` are for it: "probability"
    (classification: softmax / sigmoid probabilities, one-hot targets, summed
    over classes, see :mod:`lossforge.losses.spaces`) or "real" (regression).
    ``input`` and ``target`` say what the module's ``forward(input, target)``
    takes; ``task_kinds`` the kinds of task the module can train a model for.
    """

    name: str
    kind: str
    family: str
    formula: str
    params: Mapping[str, float]
    reference: str
    expr: Expr | None
    space: str | None
    input: str
    target: str
    task_kinds: tuple[str, ...]
    # Builds the module from (reduction=..., **params, **extra); None: an ExpressionLoss of expr.
    module_factory: Callable[..., nn.Module] | None = field(default=None, repr=False)
    # Builds the expression for given parameter values (all parameters passed); None: expr has no parameters.
    expression_builder: ExpressionBuilder | None = field(default=None, repr=False)
    # Non-numeric keyword arguments module() also accepts (e.g. class_counts).
    extra_args: tuple[str, ...] = ()
    notes: str = ""
    # Where a discovered loss came from (run id, config digest, generation, scores, seeds; see losses/store.py).
    provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType({k: float(v) for k, v in dict(self.params).items()}))
        object.__setattr__(self, "task_kinds", tuple(self.task_kinds))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {KINDS}")
        if self.input not in INPUTS:
            problems.append(f"input {self.input!r} is not one of {INPUTS}")
        if self.target not in TARGETS:
            problems.append(f"target {self.target!r} is not one of {TARGETS}")
        bad_kinds = [k for k in self.task_kinds if k not in TASK_KINDS]
        if bad_kinds:
            problems.append(f"task kinds {bad_kinds} are not among {TASK_KINDS}")
        if (self.expr is None) != (self.space is None):
            problems.append("space must be given exactly when expr is")
        if self.space is not None and self.space not in SPACES:
            problems.append(f"space {self.space!r} is not one of {SPACES}")
        if self.module_factory is None and self.expr is None:
            problems.append("a loss without an expression needs a module_factory")
        if problems:
            raise LossParameterError(f"invalid catalogue entry '{self.name}': " + "; ".join(problems))

    # ---------------------------------------------------------------- building
    def module(self, **params) -> nn.Module:
        """A ``torch.nn.Module`` computing this loss: ``forward(input, target)``.

        Keyword arguments override the default parameters; ``reduction`` is
        ``'none'``, ``'mean'`` (default) or ``'sum'``.
        """
        reduction = check_reduction(params.pop("reduction", "mean"))
        extra = {k: params.pop(k) for k in list(params) if k in self.extra_args}
        values = resolve_params(f"loss '{self.name}'", self.params, params, self.extra_args)
        if self.module_factory is not None:
            return self.module_factory(reduction=reduction, **values, **extra)
        from .expression_module import ExpressionLoss

        kind = next((k for k in self.task_kinds if k in ("multiclass", "binary", "regression")), None)
        if kind is None:
            raise LossParameterError(f"loss '{self.name}' has no module and no task kind an expression can train")
        return ExpressionLoss(self.expression(**values), kind, reduction=reduction)

    def expression(self, **params) -> Expr | None:
        """The symbolic form with these parameter values (defaults for the rest),
        or ``None`` where the loss has no elementwise form for them."""
        values = resolve_params(f"loss '{self.name}'", self.params, params)
        if self.expression_builder is None:
            return self.expr
        try:
            built = self.expression_builder(**values)
            return None if built is None else as_expr(built)
        except GrammarError:  # e.g. a parameter beyond the grammar's constant or exponent bounds
            return None

    @property
    def convention(self) -> str:
        """How the module's inputs are laid out: "p, y", "boxes", "embeddings", "images" or "generative"."""
        return CONVENTIONS[self.input]

    def __reduce__(self):
        # A reference entry pickles as its name (its builders are closures); others field by field.
        if self.kind == "reference":
            return (_reference_loss_named, (self.name,))
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["params"] = dict(self.params)
        return (_rebuild_loss, (state,))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"Loss({self.name!r}, kind={self.kind!r}, family={self.family!r}, params={{{params}}})"


def _reference_loss_named(name: str) -> Loss:
    from .reference import reference_losses

    return next(loss for loss in reference_losses() if loss.name == name)


def _rebuild_loss(state: dict) -> Loss:
    return Loss(**state)


def reference_loss(name: str, *, family: str, formula: str, reference: str, module: type[CatalogueLoss] | Callable,
                   input: str, target: str, task_kinds: tuple[str, ...], space: str | None = None,
                   expression: ExpressionBuilder | str | None = None, params: Mapping[str, float] | None = None,
                   extra_args: tuple[str, ...] = (), notes: str = "") -> Loss:
    """A reference entry: parameters default to the module's, ``expression`` is
    expression text, or a builder called with every parameter by name."""
    params = dict(getattr(module, "defaults", {}) if params is None else params)
    builder = expression if callable(expression) else None
    if isinstance(expression, str):
        expr = as_expr(expression)
    elif builder is not None:
        built = builder(**params)
        expr = None if built is None else as_expr(built)
    else:
        expr = None
    return Loss(name=name, kind="reference", family=family, formula=formula, params=params, reference=reference,
                expr=expr, space=space if expr is not None else None, input=input, target=target,
                task_kinds=task_kinds, module_factory=module, expression_builder=builder,
                extra_args=extra_args, notes=notes)
