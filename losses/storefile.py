"""The file format of stored losses: one readable TOML file per loss.

A file holds data only, and loading it never executes anything: the TOML is
read with :mod:`tomllib` (no eval, no pickle) and the expression with the
grammar's whitelist parser (:func:`lossforge.primitives.parse`).  Every field
is type-checked; a file that is too big, truncated, not UTF-8, not TOML, has a
missing or mistyped key, or an expression outside the grammar gives a
:class:`StoreError` that names the file and the key.

Format 1::

    format = 1
    name = "lf_3f2a9c1e"              # equals the file name without .toml
    expression = "-y*(1 - p)*log(p)"  # the loss L(p, y) in the grammar
    canonical = "..."                 # informational: recomputed on load
    complexity = 9                    # informational
    task_kind = "multiclass"          # the module's convention (see below)
    space = "probability"             # what p and y are: "probability" or "real"
    task_kinds = ["multiclass", "binary", "segmentation"]
    created = "2024-05-01T12:00:00Z"

    [params]                          # values of tunable constants c0..c9 (optional)
    [provenance]                      # run_id, config_digest, generation, eval_seeds, ...
    [scores.digits]                   # per task: metric, direction, mean, seeds, steps, split

Module conventions follow the prediction space (:mod:`lossforge.losses.spaces`):
``multiclass`` modules take logits ``[N, C, *]`` and integer labels like
``cross_entropy``; ``binary`` ones one logit per element and 0/1 targets like
``bce_with_logits``; ``regression`` ones predictions and targets like ``mse``.
"""
from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from lossforge.primitives import CompileError, Expr, GrammarError, LossforgeError, parse
from lossforge.primitives.symbols import TUNABLE

from .errors import StoreError
from .loss import Loss

FORMAT = 1
MAX_FILE_BYTES = 256 * 1024
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TASK_KINDS = ("multiclass", "binary", "regression")

# task_kind -> (space, module input, module target, task kinds the loss applies to; the first is the module's)
CONVENTIONS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "multiclass": ("probability", "logits", "index", ("multiclass", "binary", "segmentation")),
    "binary": ("probability", "logits", "binary", ("binary", "segmentation", "multiclass")),
    "regression": ("real", "prediction", "value", ("regression",)),
}

_FORMULA = {
    "multiclass": "sum_c L(p_c, y_c), p = softmax(z), y = one-hot target; L(p, y) = {expr}",
    "binary": "L(1 - s, 1 - t) + L(s, t), s = sigmoid(z), t = 0/1 target; L(p, y) = {expr}",
    "regression": "L(p, y) = {expr}, p = prediction, y = target",
}


def module_kind(task_kinds: list[str] | tuple[str, ...]) -> str:
    """The module convention of a loss found on tasks of these kinds (in config order).

    The first task decides the space (one search shares one expression space);
    within the probability space a multiclass task makes a multiclass module
    (logits and class indices), otherwise a binary one (logits and 0/1 targets).
    """
    kinds = list(task_kinds)
    if not kinds:
        raise StoreError("a discovered loss needs the kinds of the tasks it was found on; got none")
    if kinds[0] == "regression":
        return "regression"
    return "multiclass" if "multiclass" in kinds else "binary"


# ----------------------------------------------------------------------------- writing
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _toml_ready(value: Any) -> Any:
    """``value`` as tomli-w writes it: ``None`` left out (TOML has no null) and a lone
    surrogate, which cannot be written as UTF-8, replaced by U+FFFD."""
    if isinstance(value, Mapping):
        return {_LONE_SURROGATE.sub("\ufffd", str(k)): _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value if v is not None]
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, (bool, int, float)):
        return value
    raise StoreError(f"cannot write a {type(value).__name__} ({value!r}) to a loss file")


def to_toml(record: Mapping[str, Any], header: str = "") -> str:
    """TOML text of a record (written by tomli-w), after a ``#`` comment block of ``header``.
    ``None`` values are left out (TOML has no null)."""
    lines = [f"# {line}".rstrip() + "\n" for line in header.splitlines()] if header else []
    return "".join(lines) + tomli_w.dumps(_toml_ready(record))


# ----------------------------------------------------------------------------- reading
def read_record(path: Path) -> dict[str, Any]:
    """The TOML table of a loss file, with no interpretation yet."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StoreError(f"{path}: the file is {size} bytes; a loss file is at most {MAX_FILE_BYTES} bytes "
                             "(is it really a lossforge loss?)")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StoreError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(f"{path}: not UTF-8 text (byte {exc.start}); a loss file is TOML") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StoreError(f"{path}: not valid TOML ({exc}); the file is corrupt or truncated. "
                         "Restore it or delete it") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise StoreError(f"{path}: cannot be parsed as TOML ({type(exc).__name__}); the file is malformed") from None


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "a table",
               list: "an array"}


def _field(record: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, *,
           required: bool = True, what: str = "") -> Any:
    if key not in record:
        if required:
            raise StoreError(f"{path}: missing key '{key}'{what}; a loss file needs format, name, expression "
                             "and task_kind")
        return None
    value = record[key]
    bad = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if bad or not isinstance(value, kind):
        wanted = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        got = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise StoreError(f"{path}: key '{key}' must be {wanted}, got {got} {shown}")
    return value


def _params(record: Mapping[str, Any], path: Path) -> dict[str, float]:
    raw = _field(record, "params", dict, path, required=False) or {}
    params: dict[str, float] = {}
    for key, value in raw.items():
        if key not in TUNABLE:
            raise StoreError(f"{path}: [params] key '{key}' is not a tunable constant; use c0..c9")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StoreError(f"{path}: [params] {key} must be a finite number, got {value!r}")
        params[key] = float(value)
    return params


class ExpressionBinder:
    """``expression_builder`` of a stored loss with constants: binds c0..c9 by name.
    A class rather than a closure so the :class:`Loss` pickles (Ray)."""

    def __init__(self, template: str):
        self.template = template

    def __call__(self, **values: float) -> Expr:
        return parse(self.template).bind(values)


def record_to_loss(record: Mapping[str, Any], path: Path) -> Loss:
    """Validate a record read from ``path`` and build its :class:`Loss` (kind "discovered")."""
    path = Path(path)
    if not isinstance(record, Mapping):
        raise StoreError(f"{path}: not a TOML table")
    fmt = _field(record, "format", int, path)
    if fmt != FORMAT:
        newer = " (written by a newer lossforge: upgrade it)" if fmt > FORMAT else ""
        raise StoreError(f"{path}: format {fmt} is not supported; this lossforge reads format {FORMAT}{newer}")
    name = _field(record, "name", str, path)
    if not NAME_PATTERN.match(name):
        raise StoreError(f"{path}: name {name[:70]!r} is not a valid loss name (lower-case letters, digits and _, "
                         "starting with a letter, at most 64 characters)")
    if name != path.stem:
        raise StoreError(f"{path}: declares name '{name}' but the file is called '{path.name}'; rename the file "
                         f"to {name}.toml or fix the name")
    text = _field(record, "expression", str, path)
    task_kind = _field(record, "task_kind", str, path)
    if task_kind not in CONVENTIONS:
        raise StoreError(f"{path}: task_kind {task_kind[:40]!r} is not one of {', '.join(TASK_KINDS)}")
    space, input_, target, task_kinds = CONVENTIONS[task_kind]
    stated_space = _field(record, "space", str, path, required=False)
    if stated_space is not None and stated_space != space:
        raise StoreError(f"{path}: space {stated_space[:40]!r} contradicts task_kind '{task_kind}' "
                         f"(whose space is '{space}')")
    stated_kinds = _field(record, "task_kinds", list, path, required=False)
    if stated_kinds is not None:
        if not all(isinstance(k, str) for k in stated_kinds) or not stated_kinds or stated_kinds[0] != task_kind \
                or not set(stated_kinds) <= set(task_kinds):
            raise StoreError(f"{path}: task_kinds {stated_kinds!r} must start with task_kind '{task_kind}' and "
                             f"list only kinds of the {space} space ({', '.join(task_kinds)})")
        task_kinds = tuple(stated_kinds)
    for key, kind in (("canonical", str), ("complexity", int), ("created", str), ("description", str)):
        _field(record, key, kind, path, required=False)
    provenance = dict(_field(record, "provenance", dict, path, required=False) or {})
    scores = _field(record, "scores", dict, path, required=False) or {}
    for task, entry in scores.items():
        if not isinstance(entry, dict):
            raise StoreError(f"{path}: scores.{task} must be a table (metric, mean, seeds, ...), got "
                             f"{type(entry).__name__}")
    confirmation = _field(record, "confirmation", dict, path, required=False)
    if confirmation is not None:
        provenance["confirmation"] = confirmation   # seeds, baseline, per task mean/baseline_mean/delta/p_value
    params = _params(record, path)

    try:
        template = parse(text)
        unknown = sorted(set(template.constants) - set(params))
        if unknown:
            raise StoreError(f"{path}: the expression uses {', '.join(unknown)} but [params] gives no value for "
                             f"{'it' if len(unknown) == 1 else 'them'}")
        unused = sorted(set(params) - set(template.constants))
        if unused:
            raise StoreError(f"{path}: [params] sets {', '.join(unused)}, which the expression does not use")
        expr = template.bind(params) if params else template
        expr.compile()  # a CompileError now, naming the file, not at the first training step
    except (GrammarError, CompileError) as exc:
        raise StoreError(f"{path}: expression is invalid: {exc}") from None

    notes = f"stored in {path}"
    run_id = provenance.get("run_id")
    reference = (f"discovered by lossforge run {run_id}" + (f", generation {provenance['generation']}"
                                                            if "generation" in provenance else "")
                 if run_id else "stored loss (no provenance recorded)")
    try:
        return Loss(name=name, kind="discovered", family="discovered",
                    formula=_FORMULA[task_kind].format(expr=text), params=params, reference=reference,
                    expr=expr, space=space, input=input_, target=target, task_kinds=task_kinds,
                    expression_builder=ExpressionBinder(text) if params else None, notes=notes,
                    provenance={**provenance, "scores": scores, "file": str(path)})
    except LossforgeError as exc:
        raise StoreError(f"{path}: {exc}") from None


def load_file(path: str | Path) -> Loss:
    """Read and validate one loss file (no cache); :class:`StoreError` names the file on any problem."""
    path = Path(path)
    try:
        return record_to_loss(read_record(path), path)
    except StoreError:
        raise
    except RecursionError:
        raise StoreError(f"{path}: the expression is nested too deeply to load") from None
    except Exception as exc:  # anything unforeseen still names the file, and never executes its text
        raise StoreError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from None


def identity(path: Path) -> tuple[str, str] | None:
    """(task_kind, canonical form) of the loss in ``path``, or None if the file is unreadable."""
    try:
        loss = load_file(path)
    except StoreError:
        return None
    return loss.task_kinds[0], loss.expr.canonical
