"""Refactorings change no bit: catalogue losses, random expressions and the
shipped discovered losses give exactly the values and gradients recorded before
(``tests/data/bit_identical.*``, written by ``record_bit_identical.py``).

Compared with ``np.array_equal`` (NaN equal to NaN), never with a tolerance.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lossforge.losses import get
from lossforge.losses.export import plain_sympy
from lossforge.primitives import parse

from .record_bit_identical import ARRAYS, META, catalogue_module, compile_values, export_values, population_values

_META = json.loads(META.read_text())
_EXPRESSIONS = [tuple(entry) for entry in _META["expressions"]]


@pytest.fixture(scope="module")
def recorded():
    with np.load(ARRAYS, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, f"{what}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
    if not np.array_equal(got, want, equal_nan=True):
        bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))).ravel())
        i = int(bad[0])
        raise AssertionError(f"{what}: {bad.size} of {got.size} elements changed, first at {i}: "
                             f"{got.ravel()[i]!r} != recorded {want.ravel()[i]!r}")


def test_the_record_covers_the_catalogue_and_200_random_expressions():
    assert sum(label.startswith("random") for label, _ in _EXPRESSIONS) == 200
    discovered = [name for name in _META["catalogue"] if get(name).kind == "discovered"]
    assert discovered and all(name in dict(_EXPRESSIONS) for name in discovered)
    assert len(_META["catalogue"]) >= 50


@pytest.mark.parametrize("name", _META["catalogue"])
def test_catalogue_module_values_and_gradients(name, recorded):
    args = []
    i = 0
    while f"cat/{name}/arg{i}" in recorded:
        args.append(torch.from_numpy(recorded[f"cat/{name}/arg{i}"].copy()))
        i += 1
    args[0].requires_grad_(True)
    out = catalogue_module(name)(*args)
    out.sum().backward()
    _same(out.detach().numpy(), recorded[f"cat/{name}/value"], f"{name} value")
    _same(args[0].grad.numpy(), recorded[f"cat/{name}/grad"], f"{name} gradient")


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
