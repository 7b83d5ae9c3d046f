"""K copies of any ``nn.Module`` trained at once: stacked state, ``torch.func.vmap``.

``PopulationModel`` makes one model for the seed, stacks K copies of its
parameters and buffers (``torch.func.stack_module_state``: every parameter
and buffer gets the population as its first dimension, so
``param.view(K, -1)`` is one row per model) and runs them with
``vmap(functional_call(...))`` over the stacked state and a shared input
batch (common random numbers: all K models start from the same weights and
see the same samples).  Buffers are per model, so BatchNorm running
statistics are per model; they are updated in place in the stacked tensors.

Dropout: by default (``randomness="same"``) every model of a population sees
the same dropout masks at a step, drawn from a generator seeded by the
task seed, exactly like the shared initial weights and minibatch order.  A
model's result then does not depend on which, or how many, other models share
its population (nor on the number of workers).  ``randomness="different"``
gives each model its own masks (vmap's ``randomness="different"``); the masks
then depend on the model's position in the population, so results change
with the population's make-up: use it only for ensembles, not for comparing
losses.

Where ``vmap`` cannot batch a module (an operator without a batching rule,
data-dependent control flow), the population falls back to a loop over the
K models with ``functional_call`` on slices of the same stacked tensors (one
warning names the reason); with ``randomness="same"`` the loop replays the
RNG state for every model, so both paths give the same results.

``forward(x)`` returns the outputs in the trainer's layout ``[K, out, N]``:
classes (or the one regression/binary output) on dim 1, samples (pixels
inner for segmentation maps) on dim 2.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch.func import functional_call, stack_module_state, vmap

from .errors import TaskError, TaskWarning

RANDOMNESS = ("same", "different")


def output_layout(out: torch.Tensor, kind: str, outputs: int, batch: int, lead: int = 0) -> torch.Tensor:
    """One or K models' outputs -> ``[(K,) out, N]``; ``lead`` is the number of leading population dims.

    Accepted shapes per sample: ``[C]`` (multiclass), ``[]`` or ``[1]``
    (binary, regression), ``[1, H, W]`` or ``[H, W]`` (segmentation).
    """
    shape = tuple(out.shape[lead:])
    pre = tuple(out.shape[:lead])
    if kind == "multiclass":
        if shape != (batch, outputs):
            raise TaskError(_shape_message(kind, shape, f"[{batch}, {outputs}]", batch))
        return out.transpose(-1, -2)
    if kind in ("binary", "regression"):
        if shape not in ((batch,), (batch, 1)):
            raise TaskError(_shape_message(kind, shape, f"[{batch}] or [{batch}, 1]", batch))
        return out.reshape(*pre, 1, batch)
    # segmentation: [B, 1, H, W] or [B, H, W] -> [1, B*H*W]
    if len(shape) == 4 and shape[0] == batch and shape[1] == 1:
        return out.reshape(*pre, 1, -1)
    if len(shape) == 3 and shape[0] == batch:
        return out.reshape(*pre, 1, -1)
    raise TaskError(_shape_message(kind, shape, f"[{batch}, 1, H, W] or [{batch}, H, W]", batch))


def _shape_message(kind: str, got, want: str, batch: int) -> str:
    return (f"the model's output has shape {list(got)} for a batch of {batch} samples, but a {kind} task needs "
            f"{want}; change the model's last layer")


class PopulationModel:
    """K models made from ``source`` for ``seed``, stacked; ``forward(x) -> [K, out, N]``."""

    def __init__(self, source, kind: str, k: int, seed: int, device: torch.device | str = "cpu",
                 randomness: str = "same", probe: torch.Tensor | None = None):
        self.kind, self.k, self.outputs = kind, k, source.outputs
        self.randomness = randomness
        self.device = torch.device(device)
        base = source.make(seed).to(self.device)
        params, buffers = stack_module_state([base] * k)
        self.param_names = list(params)
        self.params: list[torch.Tensor] = [params[n].detach().requires_grad_(True) for n in self.param_names]
        self.buffers = {n: b.detach() for n, b in buffers.items()}
        # The module the functional calls run through: its own tensors are never used.
        self.module = copy.deepcopy(base).to("meta")
        self.batched = True
        self.fallback_reason: str | None = None
        if probe is not None:
            self._probe(probe)

    # ------------------------------------------------------------------ state
    def n_params_per_model(self) -> int:
        return sum(p[0].numel() for p in self.params)

    def _state(self):
        return dict(zip(self.param_names, self.params)), self.buffers

    def _one(self, params, buffers, x):
        return functional_call(self.module, (params, buffers), (x,))

    def _probe(self, x: torch.Tensor) -> None:
        """Try the batched path on a small batch (on copies of the buffers, RNG restored)."""
        params, buffers = self._state()
        buffers = {n: b.clone() for n, b in buffers.items()}
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                out = vmap(self._one, in_dims=(0, 0, None), randomness=self.randomness)(params, buffers, x)
                out.float().sum().backward()
        except TaskError:
            raise
        except Exception as exc:  # no batching rule, data-dependent control flow, ...
            self.batched = False
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.fallback_reason = f"{type(exc).__name__}: {first}"
            warnings.warn(f"torch.func.vmap cannot batch model {type(self.module).__name__} ({self.fallback_reason});"
                          " training the population one model at a time (same results, slower)",
                          TaskWarning, stacklevel=3)
        finally:
            for p in self.params:
                p.grad = None

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, train: bool = True) -> torch.Tensor:
        self.module.train(train)
        params, buffers = self._state()
        if self.batched:
            out = vmap(self._one, in_dims=(0, 0, None), randomness=self.randomness)(params, buffers, x)
        else:
            out = self._loop(params, buffers, x)
        return output_layout(out.float(), self.kind, self.outputs, x.shape[0], lead=1)

    __call__ = forward

    def _loop(self, params, buffers, x):
        replay = self.randomness == "same"
        cuda = self.device.type == "cuda"
        state = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if cuda else None) if replay else None
        outs = []
        for i in range(self.k):
            if replay:
                torch.set_rng_state(state[0])
                if cuda:
                    torch.cuda.set_rng_state(state[1], self.device)
            outs.append(self._one({n: p[i] for n, p in params.items()}, {n: b[i] for n, b in buffers.items()}, x))
        return torch.stack(outs)

    def freeze(self, rows: torch.Tensor) -> None:
        """Zero the buffers of the models in ``rows`` (their parameters are zeroed by the trainer)."""
        with torch.no_grad():
            for b in self.buffers.values():
                if b.is_floating_point():
                    b.index_fill_(0, rows, 0.0)
