import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F


class FakeLoss:
    """A stand-in for a catalogue Loss (duck-typed: the catalogue is built in parallel)."""

    def __init__(self, name, factory, input="logits", target="index", task_kinds=("multiclass",), expr=None,
                 space=None):
        self.name, self._factory = name, factory
        self.input, self.target, self.task_kinds, self.expr, self.space = input, target, task_kinds, expr, space

    def module(self, **params):
        return self._factory(**params)


class NaNAfter(nn.Module):
    """Cross-entropy that turns NaN after ``step`` calls: divergence in the module path."""

    def __init__(self, step=5, reduction="none"):
        super().__init__()
        self.step, self.calls, self.reduction = step, 0, reduction

    def forward(self, input, target):
        self.calls += 1
        out = F.cross_entropy(input, target, reduction="none")
        return out * float("nan") if self.calls > self.step else out


class Broken(nn.Module):
    def __init__(self, reduction="none"):
        super().__init__()

    def forward(self, input, target):
        raise RuntimeError("this loss is broken")


@pytest.fixture
def fake_losses():
    return {
        "cross_entropy": FakeLoss("cross_entropy", nn.CrossEntropyLoss, "logits", "index",
                                  ("multiclass", "binary", "segmentation")),
        "bce_with_logits": FakeLoss("bce_with_logits", nn.BCEWithLogitsLoss, "logits", "binary",
                                    ("binary", "multiclass", "segmentation")),
        "nll": FakeLoss("nll", nn.NLLLoss, "log_probabilities", "index", ("multiclass", "binary")),
        "hinge": FakeLoss("hinge", lambda reduction="none": _Hinge(), "logits", "signed", ("binary", "multiclass")),
        "mse": FakeLoss("mse", nn.MSELoss, "prediction", "value", ("regression",)),
        "poisson": FakeLoss("poisson", nn.PoissonNLLLoss, "log_rate", "value", ("regression",)),
        "nan_after": FakeLoss("nan_after", NaNAfter, "logits", "index", ("multiclass",)),
        "broken": FakeLoss("broken", Broken, "logits", "index", ("multiclass",)),
    }


class _Hinge(nn.Module):
    def forward(self, input, target):
        return torch.clamp(1 - input * target, min=0)
