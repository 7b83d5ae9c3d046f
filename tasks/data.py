"""A task's data: checked, encoded and standardised arrays, and their tensors on a device.

Inputs may have any sample shape: tabular ``[N, F]``, sequences ``[N, L]`` or
``[N, C, L]``, images ``[N, C, H, W]`` (segmentation: ``[N, (C,) H, W]`` with
masks ``[N, (1,) H, W]``).  They may be numpy arrays, torch tensors, or a
map-style ``torch.utils.data.Dataset`` of ``(x, y)`` pairs, which is
materialised once into arrays (refused when it would not fit in memory).
Standardisation uses statistics of the training split only: per feature for
``[N, F]`` inputs, per channel for ``[N, C, ...]``; ``standardize=False``
keeps the data as given.  Regression targets are standardised for training;
metrics are reported in the original units.
"""
from __future__ import annotations

import hashlib
import math
import numbers

import numpy as np
import torch

from lossforge.losses.spaces import space_of, targets

from .errors import TaskError

_EVAL_SAMPLES = 2048  # model evaluation chunk (samples; images count their pixels)


def as_array(name: str, value, *, dtype=None) -> np.ndarray:
    """A finite numeric numpy array from an array, tensor or sequence; a clear TaskError otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{name} is not a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TaskError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise TaskError(f"{name} contains {bad} NaN or infinite values; drop or impute them before building the task")
    return arr


def readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return info.get("MemAvailable", 8 << 30)
    except OSError:
        return 8 << 30


def materialise(name: str, dataset) -> tuple[np.ndarray, np.ndarray]:
    """A map-style Dataset of ``(x, y)`` pairs -> ``(X, y)`` arrays, read once."""
    try:
        n = len(dataset)
    except TypeError:
        raise TaskError(f"{name} is a {type(dataset).__name__} without len(); pass a map-style Dataset or "
                        "arrays") from None
    if n == 0:
        raise TaskError(f"{name} is empty")
    first = dataset[0]
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise TaskError(f"{name}[0] must be an (input, target) pair, got {type(first).__name__}")
    x0 = as_array(f"{name}[0] input", first[0], dtype=np.float64)
    need = n * (x0.size + 1) * 8
    if need > _available_memory() // 2:
        raise TaskError(f"{name} holds {n} samples of shape {x0.shape}: about {need / 2**30:.1f} GiB to read in, more "
                        "than half the free memory; subsample it or use a smaller input size")
    X = np.empty((n, *x0.shape), dtype=np.float64)
    ys = []
    for i in range(n):
        x, y = dataset[i]
        xi = as_array(f"{name}[{i}] input", x, dtype=np.float64)
        if xi.shape != x0.shape:
            raise TaskError(f"{name}[{i}] input has shape {xi.shape} but {name}[0] has {x0.shape}")
        X[i] = xi
        ys.append(as_array(f"{name}[{i}] target", y))
    return X, np.stack(ys)


def check_shapes(kind: str, arrays: dict) -> None:
    X0 = arrays["train"][0]
    if kind == "segmentation":
        if X0.ndim not in (3, 4):
            raise TaskError(f"segmentation X_train must be images [N, H, W] or [N, C, H, W], got shape {X0.shape}")
    elif X0.ndim < 2:
        raise TaskError(f"X_train must hold one sample per row ([N, F], [N, L], [N, C, L] or [N, C, H, W]), got "
                        f"shape {X0.shape}; reshape a single feature to [N, 1]")
    for split, (X, y) in arrays.items():
        if X.shape[1:] != X0.shape[1:]:
            raise TaskError(f"X_{split} has sample shape {X.shape[1:]} but X_train has {X0.shape[1:]}")
        if kind == "segmentation":
            image = X.shape[-2:]
            if y.shape[1:] != image and y.shape[1:] != (1, *image):
                raise TaskError(f"y_{split} must hold one mask per image of shape {image}, got {y.shape[1:]}")
        elif y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise TaskError(f"y_{split} must be one target per sample (shape [N]), got shape {y.shape}")


def encode_targets(kind: str, arrays: dict, num_classes) -> tuple[dict, int]:
    """Targets per split (class indices int64, 0/1 masks, or float64 values) and the number of classes."""
    out = {}
    for split, (X, y) in arrays.items():
        y = y.reshape(y.shape[0], -1) if kind == "segmentation" else y.reshape(-1)
        if kind == "regression":
            out[split] = y.astype(np.float64)
            continue
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise TaskError(f"y_{split} must hold integer class labels for a {kind} task (got values such as "
                            f"{y.reshape(-1)[np.mod(y.reshape(-1), 1) != 0][0]!r}); use kind='regression' for "
                            "real-valued targets")
        y = y.astype(np.int64)
        if kind in ("binary", "segmentation") and not np.isin(y, (0, 1)).all():
            raise TaskError(f"y_{split} of a {kind} task must be 0/1, found labels {np.unique(y)[:6].tolist()}")
        if y.min() < 0:
            raise TaskError(f"y_{split} has negative class labels; labels must be 0..C-1")
        out[split] = y
    if kind == "multiclass":
        seen = max(int(v.max()) for v in out.values()) + 1
        if num_classes is None:
            num_classes = seen
        elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < seen:
            raise TaskError(f"num_classes={num_classes!r} but the labels go up to {seen - 1}")
        if num_classes < 2:
            raise TaskError("a multiclass task needs at least 2 classes")
        return out, int(num_classes)
    return out, (2 if kind != "regression" else 1)


def standardise(kind: str, arrays: dict, enabled: bool = True):
    """Scaled float32 inputs per split and the (mean, std) used, from the training split only."""
    if kind == "segmentation" and arrays["train"][0].ndim == 3:
        arrays = {s: (X[:, None], y) for s, (X, y) in arrays.items()}
    X0 = arrays["train"][0]
    axes = (0,) if X0.ndim == 2 else (0, *range(2, X0.ndim))  # per feature, or per channel
    if enabled:
        mean = X0.mean(axis=axes, keepdims=True)
        std = X0.std(axis=axes, keepdims=True)
        std = np.where(std > 0, std, 1.0)  # constant features (digits' blank pixels) stay 0
    else:
        mean = np.zeros([1 if i in axes else d for i, d in enumerate(X0.shape)])
        std = np.ones_like(mean)
    scaled = {s: readonly(((X - mean) / std).astype(np.float32)) for s, (X, _) in arrays.items()}
    return scaled, readonly(mean.astype(np.float64)), readonly(std.astype(np.float64))


def data_fingerprint(*arrays) -> str:
    """SHA-256 of arrays' shapes, dtypes and bytes (None entries count as absent)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise TaskError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise TaskError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class TaskTensors:
    """A task's arrays as tensors on one device, in the layouts the trainer uses (samples first)."""

    def __init__(self, task, device: torch.device):
        self.device = device
        self.kind = task.kind
        self.n_train = task.n_train
        self.batch = task.effective_batch_size
        self.pixels = task.pixels
        self.X = {"train": torch.tensor(task.X_train, device=device), "val": torch.tensor(task.X_val, device=device)}
        raw = {"train": task.y_train, "val": task.y_val}
        if task.X_test is not None:
            self.X["test"] = torch.tensor(task.X_test, device=device)
            raw["test"] = task.y_test
        self.probe = self.X["train"][: min(2, task.n_train)]
        if task.kind == "regression":
            y_train = (task.y_train - task.target_mean) / task.target_std
            self.y_train = torch.tensor(y_train, dtype=torch.float32, device=device)
            self.y_eval = {s: torch.tensor(v, dtype=torch.float64, device=device) for s, v in raw.items()}
        else:
            self.y_train = torch.tensor(task.y_train, device=device)
            self.y_eval = {s: torch.tensor(v.reshape(-1), device=device) for s, v in raw.items()}
        # Targets as the expressions see them, for all training samples: [columns, n, pixels].
        t = self.y_train.view(task.n_train, -1)  # [n, pixels]
        y = targets(t, space_of(task.kind), task.num_classes)  # the one definition of y
        cols = y.unsqueeze(0) if task.kind == "regression" else y.movedim(-1, 0)
        self._y_columns = cols.to(torch.float32).contiguous()

    def expression_targets(self, idx: torch.Tensor) -> torch.Tensor:
        """The expressions' ``y`` for a batch: ``[columns, N]`` (classes or the two binary columns first)."""
        cols = self._y_columns.index_select(1, idx)
        return cols.view(cols.shape[0], -1)

    def train_batch(self, idx: torch.Tensor):
        return self.X["train"].index_select(0, idx), self.y_train.index_select(0, idx)

    def eval_chunks(self, split: str):
        X = self.X[split]
        step = max(1, _EVAL_SAMPLES // max(self.pixels, 1) * 4) if self.pixels > 1 else _EVAL_SAMPLES
        return [X[i:i + step] for i in range(0, X.shape[0], step)]

    def eval_targets(self, split: str) -> torch.Tensor:
        return self.y_eval[split]
