"""The layers import one way, and no module is too long to read.

The import graph is read from the source with :mod:`ast` (every ``import`` and
``from ... import`` anywhere in a module, inside functions too, relative
imports resolved, plus ``importlib.import_module("...")`` / ``__import__``
with a literal name), not with a grep, so a lazy import inside a function that
hides a back-edge is found as well.  Allowed:

    primitives  <-  losses  <-  tasks  <-  search
    (primitives imports none of the others; losses imports primitives;
    tasks imports primitives and losses; search imports any of them)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("primitives", "losses", "tasks", "search")
ALLOWED = {
    "primitives": set(),
    "losses": {"primitives"},
    "tasks": {"primitives", "losses"},
    "search": {"primitives", "losses", "tasks"},
}
MAX_LINES = 500


def _modules() -> list[tuple[str, Path]]:
    out = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            out.append((layer, path))
    return out


def _package_of(layer: str, path: Path, root: Path) -> list[str]:
    """The dotted package of a module file: ['lossforge', 'losses'] for losses/store.py and losses/__init__.py."""
    rel = path.relative_to(root / layer).with_suffix("").parts
    return ["lossforge", layer, *rel[:-1]]


def imported_names(layer: str, path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the module at ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(layer, path, root)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                name = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import x: x may be a submodule
                    found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
                    continue
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "lossforge" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if parts[0] in LAYERS:  # a bare folder name (never allowed: code imports lossforge.<part>)
        return parts[0]
    return None


def back_edges() -> list[str]:
    problems = []
    for layer, path in _modules():
        for line, module in imported_names(layer, path):
            target = _layer_of(module)
            if module.split(".")[0] in LAYERS:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports the bare folder name '{module}' "
                                "(import lossforge.<part>)")
            elif target is not None and target != layer and target not in ALLOWED[layer]:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({layer} -> {target})")
    return problems


def test_the_scanner_sees_lazy_and_relative_imports(tmp_path):
    layer_dir = tmp_path / "losses"
    layer_dir.mkdir()
    module = layer_dir / "sneaky.py"
    module.write_text("import math\n"
                      "from .errors import StoreError\n"
                      "def f():\n"
                      "    from lossforge.tasks import get\n"
                      "    import importlib\n"
                      "    return importlib.import_module('lossforge.search.cli')\n")
    names = sorted(m for _, m in imported_names("losses", module, tmp_path))
    assert names == ["importlib", "lossforge.losses.errors", "lossforge.search.cli", "lossforge.tasks", "math"]
    assert {_layer_of(m) for m in names} == {None, "losses", "tasks", "search"}


def test_every_layer_is_scanned():
    counts = {layer: sum(1 for lay, _ in _modules() if lay == layer) for layer in LAYERS}
    assert all(n > 0 for n in counts.values()), counts


def test_imports_point_one_way():
    problems = back_edges()
    assert not problems, "back-edges in the layer graph:\n" + "\n".join(problems)


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_over_500_lines(layer):
    long = []
    for lay, path in _modules():
        if lay != layer:
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them): " + ", ".join(long)
