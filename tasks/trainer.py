"""The population trainer: K candidate losses train K models in one loop.

Per training step there is one batched forward pass of all K models (see
``population.py``: K copies of any ``nn.Module`` through ``torch.func``), one
evaluation of all expression losses (``program.py``), one backward pass and
one optimizer step on the stacked parameters.  Adam, AdamW
and SGD act elementwise, so the K models' updates stay independent; optional
gradient clipping is per model.

Common random numbers: every candidate of a call starts from the same
initial weights, sees the same minibatches and (by default) the same dropout
masks, all drawn from ``seed``, so a candidate's result depends on its loss
and the seed, not on its neighbours (beyond float rounding in the batched
kernels).

Isolation: a hook on the model outputs zeroes the gradient rows of
candidates whose loss or output gradient is not finite, before it reaches the
shared backward; such a candidate is marked diverged, its parameters and
optimizer state are set to zero (so it computes nothing non-finite again and
Adam/SGD leave it where it is) and the others continue unaffected.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from lossforge.losses.spaces import decisions, predictions, space_of

from .candidates import Candidate
from .errors import TaskError
from .data import _EVAL_SAMPLES
from .stacked import make_population
from .program import PopulationProgram, with_derivatives



@dataclass
class Outcome:
    status: str  # "ok" | "diverged" | "error"
    metric: float = math.nan
    error: str | None = None
    steps: int = 0


def resolve_device(device=None) -> torch.device:
    """``device`` as given, else ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TaskError(f"device {device!r} is not a device; use 'cpu', 'cuda', 'cuda:N' or a torch.device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TaskError(f"device {device!r}: CUDA is not available on this machine; use 'cpu' or leave device unset")
    return dev


def batch_schedule(n: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """Minibatch indices ``[steps, batch]``: shuffled epochs without replacement,
    the last partial batch of each epoch dropped; drawn from ``seed`` only."""
    return np.concatenate(list(epoch_batches(n, batch, steps, seed)))


def epoch_batches(n: int, batch: int, steps: int, seed: int):
    """The rows of :func:`batch_schedule`, one epoch ``[<= n // batch, batch]`` at a
    time, so that memory does not grow with ``steps`` (a huge budget stopped by a
    time limit must not allocate its whole schedule first)."""
    rng = np.random.default_rng([int(seed) % (2**63), 0x6C6F7373])
    per_epoch = n // batch
    left = steps
    while left > 0:
        rows = rng.permutation(n)[: per_epoch * batch].reshape(per_epoch, batch)[:left]
        left -= len(rows)
        yield rows


# ----------------------------------------------------------------------------- training
class _Population:
    """Bookkeeping of which candidates still train, and why the others stopped."""

    def __init__(self, k: int, device):
        self.alive = torch.ones(k, dtype=torch.bool, device=device)
        self.outcomes: list[Outcome | None] = [None] * k

    def stop(self, i: int, outcome: Outcome) -> None:
        self.alive[i] = False
        if self.outcomes[i] is None:
            self.outcomes[i] = outcome


def _make_optimizer(task, params):
    name = task.optimizer
    kw = dict(lr=task.lr, weight_decay=task.weight_decay)
    if name == "adam":
        cls = torch.optim.Adam
    elif name == "adamw":
        cls = torch.optim.AdamW
    else:
        cls = torch.optim.SGD
        kw["momentum"] = task.momentum
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return cls(params, **kw)


def _freeze(rows: torch.Tensor, params, optimizer, model) -> None:
    """Zero the parameters, buffers and optimizer state of the models in ``rows``."""
    model.freeze(rows)
    with torch.no_grad():
        for p in params:
            p.index_fill_(0, rows, 0.0)
            if p.grad is not None:
                p.grad.index_fill_(0, rows, 0.0)
            for v in optimizer.state.get(p, {}).values():
                if isinstance(v, torch.Tensor) and v.shape == p.shape:
                    v.index_fill_(0, rows, 0.0)


def _clip_per_model(params, k: int, max_norm: float) -> None:
    with torch.no_grad():
        sq = sum(p.grad.view(k, -1).pow(2).sum(dim=1) for p in params)
        scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.view(k, -1).mul_(scale.view(k, 1))


def _signature(c: Candidate) -> tuple:
    """Sort key putting structurally equal losses next to each other, which makes
    more of the population program's gathers contiguous slices."""
    if c.program is None:
        return (1, "")
    return (0, " ".join(op for op, _, _ in c.program.instructions))


def train_population(task, data, candidates: list[Candidate], *, seed: int, steps: int, split: str,
                     device: torch.device, deadline: float | None) -> list[Outcome]:
    """Train one model per candidate (all must be trainable) and score it on ``split``.

    Models are laid out in an order of the trainer's choosing (see
    :func:`_signature`); outcomes come back in the order given.
    """
    order = sorted(range(len(candidates)), key=lambda i: _signature(candidates[i]))
    got = _train(task, data, [candidates[i] for i in order], seed=seed, steps=steps, split=split,
                 device=device, deadline=deadline)
    outcomes: list[Outcome] = [None] * len(candidates)  # type: ignore[list-item]
    for pos, i in enumerate(order):
        outcomes[i] = got[pos]
    return outcomes


def _train(task, data, candidates: list[Candidate], *, seed: int, steps: int, split: str,
           device: torch.device, deadline: float | None) -> list[Outcome]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # dropout draws come from the seed, not the caller's RNG
        torch.manual_seed(int(seed) % (2**63) ^ 0x64726F70)
        return _train_seeded(task, data, candidates, seed=seed, steps=steps, split=split, device=device,
                             deadline=deadline)


def _train_seeded(task, data, candidates: list[Candidate], *, seed: int, steps: int, split: str,
                  device: torch.device, deadline: float | None) -> list[Outcome]:
    k = len(candidates)
    kind = task.kind
    space = space_of(kind)
    model = make_population(task, k, seed, device, probe=data.probe)
    params = model.params
    optimizer = _make_optimizer(task, params)
    pop = _Population(k, device)

    expr_idx = [i for i, c in enumerate(candidates) if c.program is not None]
    module_idx = [i for i, c in enumerate(candidates) if c.program is None]
    n_expr = len(expr_idx)
    program = PopulationProgram([candidates[i].program for i in expr_idx]) if expr_idx else None
    # Expression candidates come first (see _signature): their rows are z[:n_expr].
    assert expr_idx == list(range(n_expr))
    keep = torch.ones(n_expr, dtype=torch.bool, device=device)

    batches = (idx for rows in epoch_batches(data.n_train, data.batch, steps, seed)
               for idx in torch.from_numpy(rows).to(device))
    done = 0
    for step in range(steps):
        if deadline is not None and time.perf_counter() > deadline:
            break
        alive_before = pop.alive.clone()
        idx = next(batches)
        xb, tb = data.train_batch(idx)
        z = model(xb)  # [K, out, N]

        terms = []
        finite = torch.ones(k, dtype=torch.bool, device=device)  # loss and (expressions) derivatives finite
        value_finite = torch.ones(k, dtype=torch.bool, device=device)  # the loss alone, for the message
        if program is not None:
            ze = z if not module_idx else z[:n_expr]
            p = predictions(ze, space, class_dim=1)
            values, derivatives = program.evaluate(p.detach(), data.expression_targets(idx))
            per_candidate = with_derivatives(p, values, derivatives, keep).sum(dim=1).mean(dim=-1)  # [n_expr]
            # A candidate whose loss or derivative is not finite gets no gradient (keep is read at backward).
            value_finite[:n_expr] = torch.isfinite(per_candidate.detach())
            ok = value_finite[:n_expr] & torch.isfinite(derivatives.flatten(1).sum(dim=1))
            finite[:n_expr] = ok
            torch.logical_and(pop.alive[:n_expr], ok, out=keep)
            terms.append(per_candidate.sum())
        for i in module_idx:
            if not bool(pop.alive[i]):
                continue
            cand = candidates[i]
            try:
                value = cand.adapt(cand.module, z[i], tb).mean()
            except Exception as exc:  # the module failed on real data: report it, keep the others
                pop.stop(i, Outcome("error", error=f"loss module failed at step {step}: {type(exc).__name__}: {exc}",
                                    steps=step))
                continue
            if not bool(torch.isfinite(value)):
                finite[i] = value_finite[i] = False
            terms.append(value)

        training = pop.alive & finite
        grad_ok: list[torch.Tensor] = []

        def keep_rows(g: torch.Tensor, training=training, grad_ok=grad_ok) -> torch.Tensor:
            row_ok = torch.isfinite(g.flatten(1).sum(dim=1))
            grad_ok.append(row_ok)
            shape = (k,) + (1,) * (g.dim() - 1)
            return torch.where((training & row_ok).view(shape), g, torch.zeros((), dtype=g.dtype, device=g.device))

        if terms:
            if module_idx:  # module losses are differentiated by autograd: screen their output gradients
                z.register_hook(keep_rows)
            for prm in params:
                prm.grad = None
            sum(terms).backward()
        still = training & grad_ok[0] if grad_ok else training
        newly = alive_before & ~still
        if bool(newly.any()):
            rows = newly.nonzero().flatten()
            for i in rows.tolist():
                where = "loss" if not bool(value_finite[i]) else "gradient"
                pop.stop(i, Outcome("diverged", error=f"non-finite {where} at step {step}", steps=step))
            _freeze(rows, params, optimizer, model)  # also the modules that failed this step
            keep[:] = pop.alive[:n_expr]
        if not bool(pop.alive.any()):
            done = step + 1
            break
        if task.grad_clip is not None:
            _clip_per_model(params, k, task.grad_clip)
        optimizer.step()
        done = step + 1

    if done < steps and bool(pop.alive.any()):
        reason = (f"time limit reached after {done} of {steps} steps" if deadline is not None
                  else f"stopped after {done} of {steps} steps")
        for i in pop.alive.nonzero().flatten().tolist():
            pop.stop(i, Outcome("error", error=reason, steps=done))

    # Score the models that finished.
    live = [i for i in range(k) if pop.outcomes[i] is None]
    if live:
        with torch.no_grad():
            z_eval = torch.cat([model(x, train=False) for x in data.eval_chunks(split)], dim=-1)  # [K, out, N]
            finite_eval = torch.isfinite(z_eval).flatten(1).all(dim=1)
            dec = decisions(z_eval, space, class_dim=1, target_mean=task.target_mean, target_std=task.target_std)
            values = task.metric_fn(dec, data.eval_targets(split), task.num_classes).tolist()
        for i in live:
            if not bool(finite_eval[i]) or not math.isfinite(values[i]):
                pop.outcomes[i] = Outcome("diverged", error=f"non-finite predictions on the {split} split", steps=done)
            else:
                pop.outcomes[i] = Outcome("ok", metric=float(values[i]), steps=done)
    return pop.outcomes  # type: ignore[return-value]


# ----------------------------------------------------------------------------- memory
def bytes_per_candidate(task, rows_per_candidate: int = 12) -> int:
    """A generous estimate of the memory one candidate needs while training.

    From the task's model statistics (parameters, and activations per sample
    measured by a forward pass when the task was built).
    """
    n_params, activations_per_sample = task.model_stats
    pixels = task.pixels
    weights = 4 * n_params * 4  # parameter, gradient, two optimizer moments
    activations = 4 * task.effective_batch_size * activations_per_sample * 3  # forward, saved, backward
    columns = task.num_classes if task.kind == "multiclass" else (2 if task.kind != "regression" else 1)
    loss = 4 * (2 * rows_per_candidate + 8) * columns * task.effective_batch_size * pixels
    eval_samples = min(task.n_eval_max, max(1, _EVAL_SAMPLES // max(pixels, 1) * 4) if pixels > 1 else _EVAL_SAMPLES)
    evaluation = 4 * eval_samples * activations_per_sample
    return int(weights + activations + loss + evaluation)


def memory_budget(device: torch.device) -> int:
    """Bytes the trainer may use on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        available = info.get("MemAvailable", 8 << 30)
    except OSError:
        available = 8 << 30
    return int(min(available // 4, 4 << 30))


def default_max_population(task, device: torch.device) -> int:
    """Largest sub-population that fits the memory budget; capped where a larger one
    no longer speeds a step up (256 on a CPU, 4096 on a GPU)."""
    cap = 4096 if device.type == "cuda" else 256
    return int(max(1, min(cap, memory_budget(device) // bytes_per_candidate(task))))
