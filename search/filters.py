"""Filters that keep training for candidates that deserve it.

In order, cheapest first: the tree must be a valid expression; canonical-form
duplicates and functional-fingerprint duplicates (a cache that spans
generations) reuse the first one's result; then a candidate is rejected if it
is constant in ``p``, ignores the target ``y``, is non-finite (value or
gradient) on its domain, has a gradient that points the wrong way, or fails a
direct-optimisation check: minimising it over free predictions (no model) for
a few steps must improve the task's kind of metric.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from lossforge.losses.spaces import EXPRESSION_SPACE, per_sample_loss
from lossforge.primitives import Expr
from lossforge.primitives.fingerprint import behaviour, fingerprint

from .evaluators import torch_threads

REASONS = ("invalid", "duplicate", "fingerprint_duplicate", "constant", "no_target", "non_finite",
           "wrong_gradient", "direct_check")

# float32 probe grids used for the finiteness check, wider than the fingerprint's.
_PROB_P = torch.sigmoid(torch.linspace(-16.0, 16.0, 65))
_REAL_P = torch.linspace(-20.0, 20.0, 41)


@dataclass
class Verdict:
    status: str                      # "ok" or one of REASONS
    detail: str = ""
    duplicate_of: str | None = None  # canonical form of the candidate whose result is reused


class CandidateFilter:
    """Stateful filter for one search (its fingerprint cache spans generations)."""

    def __init__(self, kinds: set[str], fingerprint_dedup: bool = True, direct_check: bool = True,
                 direct_check_steps: int = 60):
        self.kinds = set(kinds)
        self.spaces = sorted({EXPRESSION_SPACE["binary" if k == "segmentation" else k] for k in self.kinds})
        self.fingerprint_dedup = fingerprint_dedup
        self.direct_check = direct_check
        self.direct_check_steps = direct_check_steps
        self.fingerprints: dict[str, str] = {}     # fingerprint -> first canonical form
        # canonical -> the rejection filters' verdict (None: passes).  Deterministic, so
        # cached: the screen in the strategies and check() share it, and a candidate
        # screened as viable is not re-checked when it is scored.
        self._verdicts: dict[str, Verdict | None] = {}
        self._keys: dict[str, str] = {}    # canonical -> fingerprint key (computed here or by a screening worker)

    # ---------------------------------------------------------------- state
    def state(self) -> dict:
        return {"fingerprints": dict(self.fingerprints)}

    def load_state(self, state: dict) -> None:
        self.fingerprints = dict(state.get("fingerprints", {}))

    # ---------------------------------------------------------------- checks
    def check(self, expr: Expr | None, seen: dict[str, str] | None = None) -> Verdict:
        """Classify one candidate. ``seen`` maps canonical forms already accepted
        (this generation and earlier) to themselves."""
        if expr is None:
            return Verdict("invalid", "not a valid expression")
        canon = expr.canonical
        if seen is not None and canon in seen:
            return Verdict("duplicate", duplicate_of=canon)
        verdict = self._rejection(expr)
        if verdict is None and self.fingerprint_dedup:
            first = self.fingerprints.setdefault(self.fingerprint_key(expr), canon)
            if first != canon:
                verdict = Verdict("fingerprint_duplicate", f"behaves like {first}", duplicate_of=first)
        return verdict or Verdict("ok")

    def fingerprint_key(self, expr: Expr) -> str:
        """The candidate's functional fingerprint over the search's prediction spaces (cached)."""
        canon = expr.canonical
        key = self._keys.get(canon)
        if key is None:
            with torch_threads(1):
                key = self._keys[canon] = "|".join(fingerprint(expr, s) for s in self.spaces)
        return key

    def learn(self, canonical: str, verdict: Verdict | None, key: str | None) -> None:
        """Take the rejection verdict (None: passes) and fingerprint key of ``canonical``
        computed elsewhere (a screening worker, :mod:`lossforge.search.screening`); both are
        pure functions of the expression and this filter's settings, so they equal what
        :meth:`check` would compute here."""
        self._verdicts.setdefault(canonical, verdict)
        if key is not None:
            self._keys.setdefault(canonical, key)

    def viable(self, expr: Expr) -> bool:
        """Would this candidate pass the rejection filters (not the dedup ones)?
        Used by strategies to screen proposals."""
        return self._rejection(expr) is None

    def _rejection(self, expr: Expr) -> Verdict | None:
        canon = expr.canonical
        if canon not in self._verdicts:
            with torch_threads(1):  # tiny probe tensors: one thread (several crawl on a busy driver core)
                self._verdicts[canon] = self._reject(expr)
        return self._verdicts[canon]

    def _reject(self, expr: Expr) -> Verdict | None:
        if expr.constants:
            return Verdict("invalid", f"unbound constants {', '.join(expr.constants)}")
        if "p" not in expr.terminals:
            return Verdict("constant", "does not depend on the prediction p")
        if "y" not in expr.terminals:
            return Verdict("no_target", "does not depend on the target y")
        try:
            program = expr.compile()
        except Exception as exc:
            return Verdict("invalid", f"does not compile: {exc}")
        for space in self.spaces:
            bad = _non_finite(program, space)
            if bad:
                return Verdict("non_finite", bad)
            values, grads = behaviour(expr, space)
            if not np.any(np.abs(grads) > 1e-12):
                return Verdict("constant", f"zero gradient everywhere on the {space} domain")
            wrong = _wrong_gradient(expr, grads, space)
            if wrong:
                return Verdict("wrong_gradient", wrong)
        if self.direct_check:
            for kind in sorted(self.kinds):
                failed = direct_optimisation_fails(program, kind, self.direct_check_steps)
                if failed:
                    return Verdict("direct_check", failed)
        return None


def _non_finite(program, space: str) -> str:
    if space == "probability":
        p = _PROB_P.repeat(2)
        y = torch.cat([torch.zeros(len(_PROB_P)), torch.ones(len(_PROB_P))])
    else:
        pp, yy = torch.meshgrid(_REAL_P, _REAL_P[::4], indexing="ij")
        p, y = pp.reshape(-1), yy.reshape(-1)
    p = p.clone().requires_grad_(True)
    try:
        out = program(p, y)
        out.sum().backward()
    except Exception as exc:
        return f"raises on the {space} domain: {exc}"
    if not torch.isfinite(out).all():
        return f"non-finite value on the {space} domain (float32)"
    if p.grad is None or not torch.isfinite(p.grad).all():
        return f"non-finite gradient on the {space} domain (float32)"
    return ""


def _wrong_gradient(expr: Expr, grads: np.ndarray, space: str) -> str:
    from lossforge.primitives.fingerprint import probe_inputs

    p, y = (t.numpy() for t in probe_inputs(space))
    if space == "probability":
        # Summed over the class columns, a loss must push the true class's
        # probability up relative to the others': dL/dp smaller where y = 1.
        if grads[y == 1].mean() >= grads[y == 0].mean():
            return "dL/dp is not lower for the true class than for the others"
        return ""
    # Regression: on average the gradient must point from the target to the prediction.
    if np.mean(grads * np.sign(p - y)) <= 0:
        return "dL/dp does not point away from the target"
    return ""


def _direct_problem(kind: str, gen: torch.Generator):
    n = 96
    if kind == "multiclass":
        target = torch.randint(0, 5, (n,), generator=gen)
        z = 0.3 * torch.randn(n, 5, generator=gen)
    elif kind in ("binary", "segmentation"):
        target = torch.randint(0, 2, (n,), generator=gen).float()
        z = 0.3 * torch.randn(n, generator=gen)
    else:
        target = torch.randn(n, generator=gen)
        z = torch.zeros(n)
    return z, target


def _direct_metric(kind: str, z: torch.Tensor, target: torch.Tensor) -> float:
    if kind == "multiclass":
        return float((z.argmax(-1) == target).float().mean())
    if kind in ("binary", "segmentation"):
        return float(((z > 0).float() == target).float().mean())
    return -float(((z - target) ** 2).mean())


def _passes(kind: str, before: float, after: float) -> bool:
    if kind == "regression":
        return after > 0.5 * before  # metric is -MSE: the error must at least halve
    return after >= max(before + 0.25, 0.75)


_GRID_P = torch.linspace(-6.0, 6.0, 601)
_GRID_Y = torch.linspace(-2.0, 2.0, 17)


def _regression_argmin_fails(program) -> str:
    """Regression: minimise over a free prediction by grid search, one target at
    a time (one vectorised call, no autograd): the minimisers must track the
    targets (squared error below half the targets' own) and lie inside the grid
    (a loss unbounded below or flat on one side has its minimum at the edge)."""
    pp, yy = torch.meshgrid(_GRID_P, _GRID_Y, indexing="ij")
    with torch.no_grad():
        values = program(pp, yy)
    if values.shape != pp.shape:
        values = values.expand(pp.shape)
    if not torch.isfinite(values).all():
        return "non-finite on the regression grid"
    idx = values.argmin(dim=0)
    if bool(((idx == 0) | (idx == len(_GRID_P) - 1)).any()):
        return "its minimum over the prediction lies at the edge of [-6, 6] (unbounded below or flat on one side)"
    best = _GRID_P[idx]
    err, scale = float(((best - _GRID_Y) ** 2).mean()), float((_GRID_Y ** 2).mean())
    if not err < 0.5 * scale:
        return f"its minimisers over the prediction miss the targets (MSE {err:.3g} vs {scale:.3g} at p = 0)"
    return ""


def direct_optimisation_fails(program, kind: str, steps: int = 60) -> str:
    """Minimise the loss over free predictions (no model); return why it fails, or ''.

    Regression: a grid search per target (see :func:`_regression_argmin_fails`).
    Classification: the loss is minimised over free logits.

    Adam (lr 0.1) written out on the one tensor -- an optimizer object costs
    more than the check itself; classification stops early once accuracy has
    improved enough.
    """
    if kind == "regression":
        return _regression_argmin_fails(program)
    gen = torch.Generator().manual_seed(1234)
    z0, target = _direct_problem(kind, gen)
    space = "binary" if kind == "segmentation" else kind
    z = z0.clone()
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    before = _direct_metric(kind, z0, target)
    for step in range(1, steps + 1):
        z.requires_grad_(True)
        loss = per_sample_loss(program, z, target, space).mean()
        if not torch.isfinite(loss):
            return f"loss became non-finite while optimising free {kind} predictions"
        (grad,) = torch.autograd.grad(loss, z)
        with torch.no_grad():
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step_size = lr / (1 - b1 ** step)
            z = z.detach() - step_size * m / ((v / (1 - b2 ** step)).sqrt() + eps)
        # Early exit only for classification: a regression loss that overshoots
        # (e.g. -p*y) looks fine for a while and must be judged at the end.
        if kind != "regression" and step % 10 == 0 and _passes(kind, before, _direct_metric(kind, z, target)):
            return ""
    after = _direct_metric(kind, z.detach(), target)
    if _passes(kind, before, after):
        return ""
    if kind == "regression":
        return f"minimising it over free predictions left the MSE at {-after:.3g} (from {-before:.3g})"
    return f"minimising it over free predictions reached accuracy {after:.2f} (from {before:.2f})"


def count_reasons(verdicts) -> dict[str, int]:
    c = Counter(v.status for v in verdicts)
    return {r: c.get(r, 0) for r in REASONS}
