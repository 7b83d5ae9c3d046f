"""Refactorings change no bit: catalogue losses, random expressions and the
shipped discovered losses give exactly the values and gradients recorded before
(``tests/data/bit_identical.*``, written by ``record_bit_identical.py``).

Compared with ``np.array_equal`` (NaN equal to NaN), never with a tolerance, on a
machine whose CPU kernel set has a record (``record_bit_identical.py`` keeps one per
kernel set: vectorised torch kernels differ in the last bits between AVX2 and
AVX512).  On a kernel set without a record the values must agree within
:data:`ULPS` ulp of the array's largest magnitude, and non-finite values exactly.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lossforge.losses import get
from lossforge.losses.export import plain_sympy
from lossforge.primitives import parse

from .record_bit_identical import (META, catalogue_values, compile_values, export_values, kernel_set,
                                   population_values, recorded_arrays)

_META = json.loads(META.read_text())
_RECORDED, _EXACT = recorded_arrays()
ULPS = 256  # across kernel sets: 144 ulp of the element was the largest difference measured (AVX2 vs the record)
_EXPRESSIONS = [tuple(entry) for entry in _META["expressions"]]


@pytest.fixture(scope="module")
def recorded():
    return _RECORDED


def _same(got: np.ndarray, want: np.ndarray, what: str, exact: bool | None = None) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
    if not (_EXACT if exact is None else exact):
        return _near(got, want, what)
    if not np.array_equal(got, want, equal_nan=True):
        bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))).ravel())
        i = int(bad[0])
        raise AssertionError(f"{what}: {bad.size} of {got.size} elements changed, first at {i}: "
                             f"{got.ravel()[i]!r} != recorded {want.ravel()[i]!r}")


def _near(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Within ULPS ulp of the array's largest finite magnitude; non-finite values identical."""
    finite = np.isfinite(want)
    same_nonfinite = (got == want) | (np.isnan(got) & np.isnan(want))
    assert np.array_equal(np.isfinite(got), finite) and same_nonfinite[~finite].all(), \
        f"{what}: non-finite values changed (no record for the {kernel_set()} kernel set)"
    if finite.any():
        scale = np.spacing(np.abs(want[finite]).max().astype(want.dtype))
        worst = float(np.abs(got[finite] - want[finite]).max() / scale)
        assert worst <= ULPS, (f"{what}: {worst:.0f} ulp from the record (more than {ULPS}; no record for the "
                               f"{kernel_set()} kernel set: make one with record_bit_identical.py --kernel-set)")


def test_the_record_covers_the_catalogue_and_200_random_expressions():
    assert sum(label.startswith("random") for label, _ in _EXPRESSIONS) == 200
    discovered = [name for name in _META["catalogue"] if get(name).kind == "discovered"]
    assert discovered and all(name in dict(_EXPRESSIONS) for name in discovered)
    assert len(_META["catalogue"]) >= 50


@pytest.mark.parametrize("name", _META["catalogue"])
def test_catalogue_module_values_and_gradients(name, recorded):
    value, grad = catalogue_values(name, recorded)
    _same(value, recorded[f"cat/{name}/value"], f"{name} value")
    _same(grad, recorded[f"cat/{name}/grad"], f"{name} gradient")


def test_expressions_compile_export_and_sympy(recorded):
    p64, y64 = recorded["probe/p"], recorded["probe/y"]
    for label, text in _EXPRESSIONS:
        e = parse(text)
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            v, g = compile_values(e, p64, y64, dtype)
            _same(v, recorded[f"expr/{label}/compile_{tag}_value"], f"{label} {text} compile {tag} value")
            _same(g, recorded[f"expr/{label}/compile_{tag}_grad"], f"{label} {text} compile {tag} gradient")
        v, g = export_values(e, p64, y64)
        _same(v, recorded[f"expr/{label}/export_value"], f"{label} {text} export value")
        _same(g, recorded[f"expr/{label}/export_grad"], f"{label} {text} export gradient")
        for space, want in _META["plain_sympy"][label].items():
            assert str(plain_sympy(e, space)) == want, f"{label} {text}: plain sympy ({space})"


def test_population_program_values_and_derivatives(recorded):
    exprs = [parse(text) for _, text in _EXPRESSIONS]
    values, derivatives = population_values(exprs, recorded["probe/p"], recorded["probe/y"])
    _same(values, recorded["population/value"], "population program values")
    _same(derivatives, recorded["population/derivative"], "population program derivatives")


def test_each_kernel_set_record_differs_from_the_full_record_only_in_the_last_bits():
    """What a kernel set's record holds are real last-bit differences: every array differs from the
    full record (else it would not be kept) and lies within the cross-kernel-set tolerance."""
    from .record_bit_identical import ARRAYS, DATA

    with np.load(ARRAYS, allow_pickle=False) as data:
        full = {k: data[k] for k in data.files}
    files = sorted(DATA.glob("bit_identical.*.npz"))
    assert files, "no record of a second kernel set"
    for path in files:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                assert not np.array_equal(data[key], full[key], equal_nan=True), f"{path.name} {key}: kept but equal"
                _near(data[key], full[key], f"{path.name} {key}")


def test_the_tolerance_across_kernel_sets_still_sees_a_real_change():
    want = np.array([1.0, -2.5, 0.0, np.inf, np.nan], dtype=np.float32)
    _near(want.copy(), want, "unchanged")
    for bad in (want * np.float32(1.001), np.where(np.isinf(want), np.float32(3e38), want),
                np.where(np.isnan(want), np.float32(0), want)):
        with pytest.raises(AssertionError):
            _near(bad.astype(np.float32), want, "changed")
    with pytest.raises(AssertionError, match="elements changed"):
        _same(want * np.float32(1.001), want, "changed", exact=True)
