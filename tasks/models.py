"""Models of a task: built-in spec strings or any ``torch.nn.Module``, made per seed.

A task's model is one of

* a spec string: ``"mlp:64"`` (one hidden layer of 64 ReLU units),
  ``"mlp:100-10"``, ``"linear"`` (no hidden layer) or ``"cnn:8-8"`` (a fully
  convolutional net for segmentation: 3x3 convolutions with 8 and 8
  channels, ReLU, then a 1x1 convolution to the outputs).  An MLP flattens
  inputs of any sample shape.  Weights are drawn uniform in +-1/sqrt(fan_in)
  (as ``nn.Linear``/``nn.Conv2d``) from the seed;
* an ``nn.Module`` subclass, called with no arguments, or a zero-argument
  factory returning an ``nn.Module``: built once per seed with torch's RNG
  seeded from that seed (inside ``torch.random.fork_rng``, so the caller's RNG
  is untouched), so its own initialisation is reproducible;
* an ``nn.Module`` instance, used as a template: deep-copied and its
  parameters re-initialised per seed by each submodule's
  ``reset_parameters()``.  A submodule without ``reset_parameters`` keeps the
  template's values (the same for every seed).

Every form becomes a :class:`ModelSource`, which makes one fresh model for a
seed (:meth:`ModelSource.make`); ``population.py`` stacks K copies of it.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from lossforge.primitives import did_you_mean

from .errors import TaskError

ARCHS = ("mlp", "cnn")


@dataclass(frozen=True)
class ModelSpec:
    arch: str  # "mlp" | "cnn"
    widths: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.arch == "mlp" and not self.widths:
            return "linear"
        return f"{self.arch}:{'-'.join(str(w) for w in self.widths)}"

    def describe(self, inputs: int, outputs: int) -> str:
        """E.g. ``mlp 64-64-10`` (input, hidden and output widths)."""
        if self.arch == "cnn":
            return f"cnn {inputs}-{'-'.join(str(w) for w in self.widths)}-{outputs} (3x3)"
        return f"mlp {'-'.join(str(w) for w in (inputs, *self.widths, outputs))}"

    def n_params(self, inputs: int, outputs: int) -> int:
        sizes = (inputs, *self.widths, outputs)
        if self.arch == "cnn":
            ks = [9] * len(self.widths) + [1]
            return sum(a * b * k + b for a, b, k in zip(sizes[:-1], sizes[1:], ks))
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    def build(self, inputs: int, outputs: int, seed: int | None = None) -> nn.Module:
        """This architecture as a plain ``nn.Sequential``; with ``seed``, its initial weights for that seed."""
        sizes = (inputs, *self.widths, outputs)
        layers: list[nn.Module] = [] if self.arch == "cnn" else [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            if self.arch == "cnn":
                layers.append(nn.Conv2d(a, b, 1 if last else 3, padding=0 if last else 1))
            else:
                layers.append(nn.Linear(a, b))
            if not last:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        if seed is not None:
            with torch.no_grad():
                for p, w in zip(model.parameters(), initial_weights(self, inputs, outputs, seed)):
                    p.copy_(w)
        return model


def parse_model(spec) -> ModelSpec:
    """``"mlp:64"``, ``"mlp:100-10"``, ``"linear"``, ``"cnn:8-8"``, a ModelSpec or a tuple of widths."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, (tuple, list)) and all(isinstance(w, int) for w in spec):
        spec = "mlp:" + "-".join(str(w) for w in spec) if spec else "linear"
    if not isinstance(spec, str):
        raise TaskError(f"model must be a spec such as 'mlp:64' or 'cnn:8-8', got {spec!r}")
    text = spec.strip().lower()
    if text == "linear":
        return ModelSpec("mlp", ())
    arch, _, rest = text.partition(":")
    if arch not in ARCHS:
        raise TaskError(f"unknown model '{spec}'{did_you_mean(arch, ARCHS + ('linear',))}; "
                        "write 'mlp:64', 'mlp:100-10', 'linear' or 'cnn:8-8', or pass an nn.Module "
                        "(a class, a zero-argument factory or an instance)")
    try:
        widths = tuple(int(w) for w in rest.replace(",", "-").split("-") if w.strip()) if rest else ()
    except ValueError:
        raise TaskError(f"model '{spec}': widths must be integers separated by '-', e.g. 'mlp:64-64'") from None
    if any(w <= 0 for w in widths):
        raise TaskError(f"model '{spec}': every width must be positive")
    if arch == "cnn" and not widths:
        raise TaskError(f"model '{spec}': a cnn needs at least one hidden channel count, e.g. 'cnn:8-8'")
    return ModelSpec(arch, widths)


def _uniform(gen: torch.Generator, shape, fan_in: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound


def initial_weights(spec: ModelSpec, inputs: int, outputs: int, seed: int) -> list[torch.Tensor]:
    """One spec model's initial parameters (CPU, float32), drawn from ``seed``.

    MLP: per layer ``W [out, in]``, ``b [out]``; CNN: ``W [out, in, k, k]``, ``b [out]``.
    """
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    sizes = (inputs, *spec.widths, outputs)
    out = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if spec.arch == "cnn":
            k = 3 if i < len(spec.widths) else 1
            fan_in = a * k * k
            out += [_uniform(gen, (b, a, k, k), fan_in), _uniform(gen, (b,), fan_in)]
        else:
            out += [_uniform(gen, (b, a), a), _uniform(gen, (b,), a)]
    return out


def _seeded(seed: int, fn):
    """``fn()`` with torch's CPU RNG seeded from ``seed``; the caller's RNG state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % (2**63))
        return fn()


class ModelSource:
    """Makes a task's model for a seed; built from any of the forms in the module docstring.

    ``kind`` is ``"spec"``, ``"class"``, ``"factory"`` or ``"template"``.  A
    source pickles by reference to the user's class or factory (so a Ray
    worker must be able to import it: define it at module level) or, for a
    template, with the template's state.
    """

    def __init__(self, model, inputs: int, outputs: int):
        self.inputs, self.outputs = inputs, outputs
        self.spec: ModelSpec | None = None
        self.obj = model
        if isinstance(model, nn.Module):
            self.kind = "template"
            self.obj = copy.deepcopy(model).cpu()
        elif inspect.isclass(model) and issubclass(model, nn.Module):
            self.kind = "class"
        elif isinstance(model, (str, ModelSpec, tuple, list)):
            self.kind = "spec"
            self.spec = parse_model(model)
        elif callable(model):
            self.kind = "factory"
        else:
            raise TaskError(f"model must be a spec string ('mlp:64', 'cnn:8-8'), an nn.Module subclass, a "
                            f"zero-argument factory returning an nn.Module, or an nn.Module instance; got "
                            f"{type(model).__name__}")

    @property
    def name(self) -> str:
        if self.spec is not None:
            return str(self.spec)
        target = type(self.obj) if self.kind == "template" else self.obj
        return getattr(target, "__qualname__", None) or type(target).__name__

    def make(self, seed: int) -> nn.Module:
        """A fresh model (CPU, float32, train mode) with the initial weights for ``seed``."""
        if self.spec is not None:
            return self.spec.build(self.inputs, self.outputs, seed)
        if self.kind == "template":
            def reinit():
                model = copy.deepcopy(self.obj)
                for sub in model.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()
                return model
            model = _seeded(seed, reinit)
        else:
            try:
                model = _seeded(seed, self.obj)
            except TypeError as exc:
                raise TaskError(f"model {self.name} could not be built with no arguments ({exc}); pass a "
                                "zero-argument factory, e.g. functools.partial(MyNet, width=64)") from None
            if not isinstance(model, nn.Module):
                raise TaskError(f"model factory {self.name} returned a {type(model).__name__}, not an nn.Module")
        return model.float().train()

    def describe(self) -> str:
        if self.spec is not None:
            return self.spec.describe(self.inputs, self.outputs)
        return f"{self.name} ({self.kind})"

    def fingerprint(self) -> str:
        """What identifies the architecture: the spec, or the module's repr and parameter shapes."""
        if self.spec is not None:
            return f"spec {self.spec} {self.inputs}->{self.outputs}"
        model = self.make(0)
        shapes = ";".join(f"{n}:{tuple(p.shape)}" for n, p in model.named_parameters())
        return f"{self.kind} {self.name}\n{model!r}\n{shapes}"


def reference_model(spec: ModelSpec, inputs: int, outputs: int, seed: int | None = None) -> nn.Module:
    """The spec's architecture as one plain ``nn.Sequential`` (for baselines and tests)."""
    return spec.build(inputs, outputs, seed)
