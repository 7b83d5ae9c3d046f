"""MNIST-1D: generated locally with make_dataset, split, cached as npz, the paper's models."""
import random

import numpy as np
import pytest
import torch

from lossforge.tasks import get
from lossforge.tasks.mnist1d import MNIST1DCNN, MNIST1DMLP, mnist1d_arrays


def test_the_splits_and_the_label_noise():
    clean, noisy, mlp = get("mnist1d"), get("mnist1d_noisy"), get("mnist1d_mlp")
    assert (clean.n_train, clean.n_val, clean.n_test) == (3200, 800, 1000)
    assert clean.sample_shape == (1, 40) and clean.num_classes == 10
    assert np.array_equal(clean.X_train, noisy.X_train) and np.array_equal(clean.y_val, noisy.y_val)
    assert np.mean(clean.y_train != noisy.y_train) == pytest.approx(0.4, abs=0.001)
    assert np.array_equal(clean.y_test, noisy.y_test)
    assert clean.model == "MNIST1DCNN" and mlp.model == "MNIST1DMLP"
    assert np.bincount(clean.y_train).min() >= 300  # stratified: every digit is there


def test_generation_leaves_the_callers_rng_alone_and_the_cache_is_plain_npz(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSFORGE_CACHE", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    first = mnist1d_arrays()
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30)
    assert random.random() == random.Random(123).random()
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    with np.load(cached, allow_pickle=False) as f:
        assert np.array_equal(f["x"], first["x"])
    again = mnist1d_arrays()  # read back from the cache
    assert all(np.array_equal(first[k], again[k]) for k in first)
    cached.write_bytes(b"damaged")
    assert np.array_equal(mnist1d_arrays()["y"], first["y"])  # a damaged cache is regenerated


def test_the_papers_models_map_sequences_to_ten_logits():
    x = torch.randn(5, 1, 40)
    assert MNIST1DCNN()(x).shape == (5, 10) and MNIST1DCNN()(x[:, 0]).shape == (5, 10)
    assert MNIST1DMLP()(x).shape == (5, 10)
    assert sum(p.numel() for p in MNIST1DCNN().parameters()) < 6000  # the paper's small CNN
