"""Functional fingerprints: gradients are hashed, the probe grids and the
quantisation are pinned, and the digest depends on every part it claims to."""
import importlib
import math

import numpy as np
import pytest
import torch

from lossforge.primitives import fingerprint, parse
from lossforge.primitives.fingerprint import behaviour, probe_inputs, quantise

# the package exports the function under the module's name; this is the module
fp_module = importlib.import_module("lossforge.primitives.fingerprint")


def _stubbed(monkeypatch, values, grads) -> str:
    monkeypatch.setattr(fp_module, "behaviour", lambda expr, space="probability": (values, grads))
    return fp_module.fingerprint(parse("p*y"), "probability")


def test_equal_values_with_different_gradients_give_different_fingerprints(monkeypatch):
    # No two grammar expressions agree in value on the whole probe grid and differ in
    # dL/dp there, so the behaviour is stubbed: the same values, gradients apart.
    values, grads = np.linspace(0.1, 2.0, 58), np.linspace(-1.0, 1.0, 58)
    a = _stubbed(monkeypatch, values, grads)
    assert _stubbed(monkeypatch, values.copy(), grads.copy()) == a
    assert _stubbed(monkeypatch, values, 2.0 * grads) != a
    assert _stubbed(monkeypatch, 3.0 * values, grads) != a


def test_fingerprint_is_a_24_digit_hex_digest_and_deterministic():
    e = parse("-y*log(p)")
    f = fingerprint(e)
    assert len(f) == 24 and int(f, 16) >= 0
    assert fingerprint(parse("-log(p)*y")) == f == fingerprint(e, "probability")


def test_probe_grids_are_the_documented_ones():
    p, y = probe_inputs("probability")
    assert p.dtype == y.dtype == torch.float64 and p.shape == y.shape == (58,)
    grid = torch.sigmoid(torch.linspace(-7.0, 7.0, 29, dtype=torch.float64))
    torch.testing.assert_close(p[::2], grid, rtol=0, atol=0)
    torch.testing.assert_close(p[1::2], grid, rtol=0, atol=0)
    assert y[::2].tolist() == [0.0] * 29 and y[1::2].tolist() == [1.0] * 29
    p, y = probe_inputs("real")
    assert p.shape == y.shape == (91,)
    torch.testing.assert_close(p[::7], torch.linspace(-3.0, 3.0, 13, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(y[:7], torch.linspace(-2.5, 2.5, 7, dtype=torch.float64), rtol=0, atol=0)
    assert not p.requires_grad
    with pytest.raises(ValueError, match=r"unknown prediction space 'complex'; use one of \('probability', 'real'\)"):
        probe_inputs("complex")


def test_behaviour_gives_values_and_gradients_in_p():
    values, grads = behaviour(parse("(p-y)**2"), "real")
    p, y = (t.numpy() for t in probe_inputs("real"))
    np.testing.assert_allclose(values, (p - y) ** 2, rtol=1e-12)
    np.testing.assert_allclose(grads, 2 * (p - y), rtol=1e-12, atol=1e-12)
    values, grads = behaviour(parse("-y*log(p)"))
    p, y = (t.numpy() for t in probe_inputs("probability"))
    np.testing.assert_allclose(grads, -y / p, rtol=1e-9)
    # an expression without p has a zero gradient (not None)
    values, grads = behaviour(parse("y + 1"), "real")
    np.testing.assert_allclose(values, probe_inputs("real")[1].numpy() + 1)
    assert grads.shape == (91,) and np.all(grads == 0.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # np.sign(nan) cast to int
def test_quantise_codes_are_pinned():
    codes = quantise(np.array([1.0, -1.0, 0.0, 1e-11, -1e-11, np.nan, np.inf, -np.inf, 3.0, 2e-10]))
    assert codes.dtype == np.int64
    assert codes.tolist() == [33554433, -33554431, 0, 0, 0, -1, -2, 2, 50331650, 57647072]
    # mantissa steps of 2**-14: 1 + 1e-5 is the same number, 1 + 1e-4 is not
    assert quantise(np.array([1.0 + 1e-5]))[0] == 33554433
    assert quantise(np.array([1.0 + 1e-4]))[0] == 33558529
    assert quantise([0.5])[0] == 33554432  # lists are accepted
    assert quantise(np.array([1e-10]))[0] != 0  # the zero threshold is strict
    assert math.isfinite(float(quantise(np.array([1e300]))[0]))
