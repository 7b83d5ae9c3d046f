"""MNIST-1D (Greydanus, "Scaling down deep learning with MNIST-1D", 2020), generated locally.

The data come from the ``mnist1d`` package's ``make_dataset`` with its default
arguments (5000 sequences of length 40, 10 classes; the package's own
80/20 train/test split, seed 42) — never its download path.  The 4000
training sequences are split 3200/800 into train and validation (stratified,
fixed seed); the 1000 test sequences are the package's test split.
Generation takes a few seconds, so the arrays are cached as a plain ``.npz``
(no pickle) under ``$LOSSFORGE_CACHE`` (default ``~/.cache/lossforge``).

The models are plain ``nn.Module`` classes, the same path a user's model
takes: :class:`MNIST1DCNN` follows the paper's convolutional baseline (three
1-D convolutions with 25 channels, stride 2, ReLU, then a linear layer;
published test accuracy with cross-entropy about 0.94 after 6000 steps) and
:class:`MNIST1DMLP` its MLP (two hidden layers of 100; about 0.68).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lossforge.primitives.files import atomic_write_bytes

from .errors import TaskError

_ARGS_OVERRIDE: dict = {}  # make_dataset arguments changed from the package defaults (none)


class MNIST1DCNN(nn.Module):
    """The MNIST-1D paper's CNN: [B, 1, 40] (or [B, 40]) -> logits [B, 10]."""

    def __init__(self, channels: int = 25, length: int = 40, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        out = length
        for k, pad in ((5, 1), (3, 1), (3, 1)):
            out = (out + 2 * pad - k) // 2 + 1
        self.linear = nn.Linear(channels * out, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.linear(h.flatten(1))


class MNIST1DMLP(nn.Module):
    """The MNIST-1D paper's MLP: 40 -> 100 -> 100 -> 10 with ReLU."""

    def __init__(self, length: int = 40, hidden: int = 100, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(length, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _cache_dir() -> Path:
    return Path(os.environ.get("LOSSFORGE_CACHE") or Path.home() / ".cache" / "lossforge")


def _generate(args) -> dict:
    from mnist1d.data import make_dataset

    # make_dataset seeds numpy's and Python's global RNGs: keep the caller's streams untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def mnist1d_arrays() -> dict[str, np.ndarray]:
    """``x [4000, 40]``, ``y``, ``x_test [1000, 40]``, ``y_test`` from ``make_dataset`` (cached)."""
    try:
        from mnist1d.data import get_dataset_args
    except ImportError:
        raise TaskError("the MNIST-1D tasks need the 'mnist1d' package: pip install mnist1d") from None
    args = get_dataset_args(as_dict=True)
    args.update(_ARGS_OVERRIDE)
    args.pop("url", None)  # never downloaded
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    path = _cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is regenerated
    from mnist1d.data import ObjectView

    data = _generate(ObjectView(dict(args)))
    buffer = io.BytesIO()
    np.savez(buffer, **data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:
        pass  # a read-only home: generate each time
    return data


def mnist1d_splits(noise: float = 0.0, noise_seed: int = 6):
    """(X_train, y_train, X_val, y_val, X_test, y_test), inputs ``[N, 1, 40]``.

    ``noise``: the fraction of training labels flipped to one of the other 9
    classes uniformly (symmetric noise); validation and test stay clean.
    """
    from sklearn.model_selection import train_test_split

    d = mnist1d_arrays()
    x, y = d["x"][:, None, :].astype(np.float64), d["y"].astype(np.int64)
    X_tr, X_va, y_tr, y_va = train_test_split(x, y, test_size=800, random_state=0, stratify=y)
    if noise:
        rng = np.random.default_rng(noise_seed)
        y_tr = y_tr.copy()
        flip = rng.permutation(len(y_tr))[: round(noise * len(y_tr))]
        y_tr[flip] = (y_tr[flip] + rng.integers(1, 10, size=len(flip))) % 10
    return X_tr, y_tr, X_va, y_va, d["x_test"][:, None, :].astype(np.float64), d["y_test"].astype(np.int64)
