"""Record the reference values that ``test_bit_identical.py`` compares against.

    python tests/primitives/record_bit_identical.py

Run once, before a refactoring of the primitive table, the compiler, the
population program, the exporter or the catalogue, and commit the data it
writes; the test then checks that the refactoring changed no bit.  What it
records, on fixed seeded inputs (stored with the data, so the test does not
depend on any input generator):

* every catalogue entry named in ``names()`` at recording time: the output of
  ``loss.module()(*args)`` and the gradient of its sum with respect to the input;
* 200 random expressions (seeded, over the table's GP rows), every shipped
  discovered loss and every catalogue expression: values and gradients of
  ``expr.compile()`` (float32 and float64, gradients by autograd), values and
  derivatives of one :class:`~lossforge.tasks.program.PopulationProgram` over
  all of them (float32), values and gradients of the standalone export's
  ``elementwise(p, y)``, and the text of the plain-sympy export.

The data are plain arrays (``.npz``, loaded with ``allow_pickle=False``) and JSON.

Vectorised torch kernels differ by CPU (``torch.backends.cpu.get_cpu_capability()``:
AVX2, AVX512, ...) in the last bits of some results (measured: 117 of 1550 arrays
differ between the original record's machine and an AVX2 one, by 1 to 144 ulp of
the element, never in a non-finite value).  So a record is kept per kernel set:
``bit_identical.npz`` is the full record, and ``bit_identical.<CAPABILITY>.npz``
holds, for another kernel set, only the arrays that differ there::

    python tests/primitives/record_bit_identical.py --kernel-set   # on the other kind of machine

records that file for the running machine, computed with the unchanged code
(run it before a refactoring, like the full record).  The test compares bit for
bit against the record of the running machine's kernel set, and within a few
ulp (:func:`kernel_set_tolerance`) where no record for it exists.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
ARRAYS = DATA / "bit_identical.npz"
META = DATA / "bit_identical.json"


def kernel_set() -> str:
    """The CPU kernel set torch dispatches to on this machine (e.g. ``AVX2``)."""
    return torch.backends.cpu.get_cpu_capability()


def kernel_set_arrays(capability: str) -> Path:
    return DATA / f"bit_identical.{capability}.npz"


def recorded_arrays() -> tuple[dict[str, np.ndarray], bool]:
    """The record for this machine's kernel set, and whether it is exact for it: the full
    record, overlaid with this kernel set's own arrays where a file for it exists."""
    with np.load(ARRAYS, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    capability = kernel_set()
    own = kernel_set_arrays(capability)
    if own.exists():
        with np.load(own, allow_pickle=False) as data:
            arrays.update({k: data[k] for k in data.files})
        return arrays, True
    return arrays, json.loads(META.read_text()).get("kernel_set") == capability
N_RANDOM = 200
SEED = 20261201

# Probe points: the protected operators' edges (0, +-1e-9, huge), probabilities and reals.
_SPECIAL = [0.0, 1e-9, -1e-9, 1e-7, 1e-3, -1e-3, 0.5, 1.0, -1.0, 2.0, -2.0, 30.0, -30.0, 1e3]


def probe_inputs() -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(SEED)
    n_rand = 50 - len(_SPECIAL)
    p = torch.cat([torch.tensor(_SPECIAL, dtype=torch.float64),
                   torch.rand(n_rand // 2, generator=g, dtype=torch.float64),
                   torch.randn(n_rand - n_rand // 2, generator=g, dtype=torch.float64) * 3])
    y = torch.cat([torch.randint(0, 2, (25,), generator=g).to(torch.float64),
                   torch.randn(25, generator=g, dtype=torch.float64) * 2])
    y = y[torch.randperm(50, generator=g)]
    return p.numpy(), y.numpy()


def expression_texts() -> list[tuple[str, str]]:
    """(label, expression text): random ones, shipped discovered losses, catalogue expressions."""
    from lossforge.losses import get, names
    from lossforge.primitives import parse
    from lossforge.primitives.generate import random_expression

    rng = random.Random(SEED)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(out) < N_RANDOM:
        text = str(random_expression(rng, max_depth=4))
        e = parse(text)
        if e.canonical in seen:
            continue
        seen.add(e.canonical)
        out.append((f"random{len(out)}", text))
    for name in names():
        loss = get(name)
        if loss.expr is not None:
            out.append((name, str(loss.expr)))
    return out


def compile_values(expr, p64: np.ndarray, y64: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    p = torch.tensor(p64, dtype=dtype, requires_grad=True)
    y = torch.tensor(y64, dtype=dtype)
    out = expr.compile()(p, y)
    out.sum().backward()
    return out.detach().numpy(), p.grad.numpy()


def export_values(expr, p64: np.ndarray, y64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``elementwise(p, y)`` of the standalone export's whole file, run as written."""
    from lossforge.losses.export_torch import module_source

    code = module_source("bit_identical", expr, "regression", title="t", comments=[], version="0")
    namespace: dict = {"__name__": "exported_bit_identical"}
    exec(compile(code, "<export>", "exec"), namespace)  # noqa: S102 - lossforge's own generated code
    p = torch.tensor(p64, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(y64, dtype=torch.float32)
    out = namespace["elementwise"](p, y)
    out.sum().backward()
    return out.detach().numpy(), p.grad.numpy()


def population_values(exprs, p64: np.ndarray, y64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from lossforge.tasks.program import PopulationProgram

    program = PopulationProgram([e.compile() for e in exprs])
    k = len(exprs)
    p = torch.tensor(p64, dtype=torch.float32).expand(k, -1).contiguous()
    y = torch.tensor(y64, dtype=torch.float32)
    values, derivatives = program.evaluate(p, y)
    return values.numpy(), derivatives.numpy()


def catalogue_records(names: list[str]) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(HERE.parent.parent))
    from tests.losses.helpers import make_batch

    from lossforge.losses import get

    arrays: dict[str, np.ndarray] = {}
    for name in names:
        loss = get(name)
        batch = make_batch(loss, seed=0)
        args = [a.clone() for a in batch.args]
        args[0].requires_grad_(True)
        out = catalogue_module(name)(*args)
        out.sum().backward()
        for i, a in enumerate(args):
            arrays[f"cat/{name}/arg{i}"] = a.detach().numpy()
        arrays[f"cat/{name}/value"] = out.detach().numpy()
        arrays[f"cat/{name}/grad"] = args[0].grad.numpy()
    return arrays


def catalogue_values(name: str, recorded: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue module's output on its recorded arguments, and the gradient of its sum with
    respect to the first."""
    args, i = [], 0
    while f"cat/{name}/arg{i}" in recorded:
        args.append(torch.from_numpy(recorded[f"cat/{name}/arg{i}"].copy()))
        i += 1
    args[0].requires_grad_(True)
    out = catalogue_module(name)(*args)
    out.sum().backward()
    return out.detach().numpy(), args[0].grad.numpy()


def catalogue_module(name: str):
    """The module the test builds: ``build`` of the loss helpers (class counts where needed)."""
    from lossforge.losses import get

    loss = get(name)
    params = {"class_counts": [500, 120, 40, 9, 3]} if "class_counts" in loss.extra_args else {}
    return loss.module(**params)


def current_arrays(meta: dict, recorded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every recorded value and gradient, computed now on the recorded inputs."""
    from lossforge.primitives import parse

    arrays: dict[str, np.ndarray] = {}
    for name in meta["catalogue"]:
        arrays[f"cat/{name}/value"], arrays[f"cat/{name}/grad"] = catalogue_values(name, recorded)
    p64, y64 = recorded["probe/p"], recorded["probe/y"]
    exprs = [parse(text) for _, text in meta["expressions"]]
    for (label, _), e in zip(meta["expressions"], exprs):
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            v, g = compile_values(e, p64, y64, dtype)
            arrays[f"expr/{label}/compile_{tag}_value"] = v
            arrays[f"expr/{label}/compile_{tag}_grad"] = g
        arrays[f"expr/{label}/export_value"], arrays[f"expr/{label}/export_grad"] = export_values(e, p64, y64)
    arrays["population/value"], arrays["population/derivative"] = population_values(exprs, p64, y64)
    return arrays


def record_kernel_set() -> None:
    """Write ``bit_identical.<CAPABILITY>.npz``: the arrays that differ from the full record on
    this machine's kernel set (run with the code the full record was made with)."""
    torch.set_num_threads(1)
    meta = json.loads(META.read_text())
    capability = kernel_set()
    if meta.get("kernel_set") == capability:
        raise SystemExit(f"the full record was made on {capability}: nothing to add")
    with np.load(ARRAYS, allow_pickle=False) as data:
        recorded = {k: data[k] for k in data.files}
    differ = {k: a for k, a in current_arrays(meta, recorded).items()
              if not np.array_equal(a, recorded[k], equal_nan=True)}
    np.savez_compressed(kernel_set_arrays(capability), **differ)
    print(f"wrote {len(differ)} arrays that differ on {capability} to {kernel_set_arrays(capability)}")


def main() -> None:
    if sys.argv[1:] == ["--kernel-set"]:
        return record_kernel_set()
    from lossforge.losses import names
    from lossforge.losses.export import plain_sympy
    from lossforge.primitives import parse

    torch.set_num_threads(1)
    DATA.mkdir(exist_ok=True)
    p64, y64 = probe_inputs()
    arrays: dict[str, np.ndarray] = {"probe/p": p64, "probe/y": y64}
    catalogue = list(names())
    arrays.update(catalogue_records(catalogue))
    entries = expression_texts()
    exprs = [parse(text) for _, text in entries]
    sympy_text = {}
    for (label, text), e in zip(entries, exprs):
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            v, g = compile_values(e, p64, y64, dtype)
            arrays[f"expr/{label}/compile_{tag}_value"] = v
            arrays[f"expr/{label}/compile_{tag}_grad"] = g
        v, g = export_values(e, p64, y64)
        arrays[f"expr/{label}/export_value"] = v
        arrays[f"expr/{label}/export_grad"] = g
        sympy_text[label] = {space: str(plain_sympy(e, space)) for space in ("probability", "real")}
    values, derivatives = population_values(exprs, p64, y64)
    arrays["population/value"] = values
    arrays["population/derivative"] = derivatives
    np.savez_compressed(ARRAYS, **arrays)
    META.write_text(json.dumps({"catalogue": catalogue, "expressions": entries, "plain_sympy": sympy_text,
                                "torch": torch.__version__, "kernel_set": kernel_set()}, indent=1) + "\n")
    print(f"wrote {len(arrays)} arrays to {ARRAYS} and {len(entries)} expressions to {META}")


if __name__ == "__main__":
    main()
