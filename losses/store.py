"""The store of discovered losses: readable TOML files next to the reference catalogue.

Two directories are read: the losses this project ships
(``lossforge/losses/discovered/*.toml``, package data) and the user store,
where searches save new ones: the ``directory`` argument, else
:func:`use_store`, else the ``LOSSFORGE_STORE`` environment variable, else
``~/.lossforge/losses``.  Both are a source of the registry (kind
"discovered"), so ``get(name)`` and ``names(kind="discovered")`` find them,
with the same :class:`~lossforge.losses.Loss` interface as the references.
The file format is described in :mod:`lossforge.losses.storefile`.

Names: a saved loss is called ``lf_`` + the first 8 hex digits of
``sha256(f"{task_kind}:{canonical}")``, so the same expression saved for the
same module convention always gets the same name.  Saving it again is a no-op
that returns the existing name (one file; the first provenance is kept).  If
that name already holds a *different* loss (a hash prefix collision, or a
hand-edited file), the next longer prefix is used (12, 16, ... hex digits):
an automatic name never overwrites anything.  A name chosen by the caller
that holds a different loss is an error unless ``overwrite=True``.

Saving is atomic (a temporary file in the same directory, fsynced, then
``os.replace``), under a lock on the directory: a crash leaves the old file or
the new one, never half of one.

Loading never executes file content (see :mod:`~lossforge.losses.storefile`).
A bad file does not break the other losses: it is skipped with a
:class:`StoreWarning` naming it, and ``get`` of its name raises the
:class:`StoreError` that says what is wrong.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from filelock import FileLock

from lossforge.primitives import Expr, GrammarError, as_expr, did_you_mean
from lossforge.primitives.files import atomic_write_text
from lossforge.primitives.version import lossforge_version

from .errors import StoreError
from .loss import Loss
from .storefile import (FORMAT, NAME_PATTERN, CONVENTIONS, identity, load_file, module_kind, read_record,
                        record_to_loss, to_toml)

ENV_VAR = "LOSSFORGE_STORE"
DEFAULT_STORE = "~/.lossforge/losses"
SHIPPED_DIRECTORY = Path(__file__).resolve().parent / "discovered"
NAME_PREFIX = "lf_"
_PREFIX_LENGTHS = (8, 12, 16, 24, 32, 64)

_override: list[Path] = []


class StoreWarning(UserWarning):
    """A file in a loss store was skipped (invalid, or its name is taken)."""


# ----------------------------------------------------------------------------- where
def store_directory(directory: str | os.PathLike | None = None) -> Path:
    """The user store: ``directory``, else :func:`use_store`'s, else ``$LOSSFORGE_STORE``,
    else ``~/.lossforge/losses``.  It need not exist (it is created on the first save)."""
    if directory is not None and str(directory) != "":
        return Path(directory).expanduser()
    if _override:
        return _override[-1]
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_STORE).expanduser()


@contextlib.contextmanager
def use_store(directory: str | os.PathLike | None) -> Iterator[Path]:
    """Read and save discovered losses in ``directory`` inside the ``with`` block
    (``None``: leave the current store as it is)."""
    if directory is None:
        yield store_directory()
        return
    _override.append(Path(directory).expanduser())
    try:
        yield _override[-1]
    finally:
        _override.pop()


def store_directories() -> list[Path]:
    """The directories read, in lookup order: the shipped losses, then the user store."""
    dirs = [SHIPPED_DIRECTORY]
    user = store_directory()
    try:
        same = user.exists() and SHIPPED_DIRECTORY.exists() and user.resolve() == SHIPPED_DIRECTORY.resolve()
    except OSError:
        same = False
    if not same:
        dirs.append(user)
    return dirs


# ----------------------------------------------------------------------------- reading (the registry source)
class DiscoveredSource:
    """The registry source of discovered losses.

    Called on every ``get``/``names``: it lists the store directories (cached
    by each directory's mtime) and parses only files whose (mtime, size)
    changed.  Problems are warned about once per version of a file.

    File-system timestamps are coarse (a few milliseconds): a change made in
    the same tick as the cached read would keep the same mtime.  So, as git
    does for its index, a cache entry is trusted only if it was read more than
    a second after the mtime it recorded; younger entries are read again.
    """

    def __init__(self) -> None:
        self._listings: dict[Path, tuple[int, int, list[Path]]] = {}
        self._files: dict[Path, tuple[tuple[int, int], int, Loss | StoreError]] = {}
        self._bad: dict[str, StoreError] = {}
        self._warned: set[tuple[Path, tuple[int, int], str]] = set()

    def clear(self) -> None:
        """Forget every cached listing and file (the next lookup reads from disk)."""
        self.__init__()

    def _listing(self, directory: Path) -> list[Path]:
        try:
            stamp = directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._warn(directory, (0, 0), f"the store directory cannot be read ({exc}); its losses are skipped")
            return []
        cached = self._listings.get(directory)
        if cached is not None and cached[0] == stamp and _settled(stamp, cached[1]):
            return cached[2]
        read_at = time.time_ns()
        try:
            files = sorted(p for p in directory.glob("*.toml") if not p.name.startswith("."))
        except OSError as exc:
            self._warn(directory, (0, 0), f"the store directory cannot be listed ({exc}); its losses are skipped")
            return []
        self._listings[directory] = (stamp, read_at, files)
        return files

    def _load(self, path: Path) -> tuple[tuple[int, int], Loss | StoreError] | None:
        try:
            st = path.stat()
        except OSError:
            return None  # removed since the listing
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._files.get(path)
        if cached is not None and cached[0] == stamp and _settled(stamp[0], cached[1]):
            return stamp, cached[2]
        read_at = time.time_ns()
        try:
            result: Loss | StoreError = load_file(path)
        except StoreError as exc:
            result = exc
        self._files[path] = (stamp, read_at, result)
        return stamp, result

    def _warn(self, path: Path, stamp: tuple[int, int], message: str) -> None:
        key = (path, stamp, message)
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"lossforge: skipping {path}: {message}", StoreWarning, stacklevel=4)

    def __call__(self) -> list[Loss]:
        from .reference import reference_losses

        reserved = {loss.name for loss in reference_losses()}
        found: dict[str, Loss] = {}
        bad: dict[str, StoreError] = {}
        for directory in store_directories():
            for path in self._listing(directory):
                loaded = self._load(path)
                if loaded is None:
                    continue
                stamp, result = loaded
                if isinstance(result, StoreError):
                    self._warn(path, stamp, str(result).removeprefix(f"{path}: "))
                    if path.stem not in found:
                        bad.setdefault(path.stem, result)
                    continue
                name = result.name
                if name in reserved:
                    err = StoreError(f"{path}: the name '{name}' belongs to a reference loss; rename the file "
                                     f"and its name key (e.g. to {NAME_PREFIX}{name})")
                    self._warn(path, stamp, str(err).removeprefix(f"{path}: "))
                    continue
                if name in found:
                    if _same_loss(found[name], result):
                        continue  # the user store repeats a shipped loss
                    self._warn(path, stamp, f"a different loss named '{name}' is already stored in "
                                            f"{found[name].provenance.get('file')}; rename one of them")
                    continue
                found[name] = result
                bad.pop(name, None)
        self._bad = bad
        return list(found.values())

    def explain_missing(self, name: str) -> StoreError | None:
        """The error of the invalid file called ``name`` (for ``get(name)``), if there is one."""
        return self._bad.get(name)


def _settled(mtime_ns: int, read_at_ns: int) -> bool:
    """Whether a read taken at ``read_at_ns`` surely saw every change stamped ``mtime_ns``."""
    return read_at_ns - mtime_ns > 1_000_000_000


def _same_loss(a: Loss, b: Loss) -> bool:
    return a.task_kinds[0] == b.task_kinds[0] and a.expr.canonical == b.expr.canonical


_SOURCE = DiscoveredSource()


def discovered_losses() -> list[Loss]:
    """Every valid stored loss, shipped ones first (invalid files are skipped with a warning)."""
    return _SOURCE()


def load(path: str | os.PathLike) -> Loss:
    """Load one loss file wherever it is (validated; never executes its content)."""
    return load_file(Path(path))


# ----------------------------------------------------------------------------- saving
def default_name(canonical: str, task_kind: str, length: int = 8) -> str:
    """``lf_`` + the first ``length`` hex digits of ``sha256(f"{task_kind}:{canonical}")``."""
    digest = hashlib.sha256(f"{task_kind}:{canonical}".encode("utf-8")).hexdigest()
    return NAME_PREFIX + digest[:length]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer per store directory at a time (the check and the write are one step)."""
    with FileLock(directory / ".lock"):
        yield


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (afterwards the file is the old one or the new one,
    never partial); a failure is a :class:`StoreError` and changes nothing."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise StoreError(f"could not write {path}: {exc.strerror or exc}; nothing was changed") from None


def _iso(timestamp: float | None) -> str:
    moment = _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc) if timestamp is not None else \
        _dt.datetime.now(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def save(expr: Expr | str, *, task_kind: str, name: str | None = None, directory: str | os.PathLike | None = None,
         params: Mapping[str, float] | None = None, provenance: Mapping[str, Any] | None = None,
         scores: Mapping[str, Mapping[str, Any]] | None = None, description: str | None = None,
         overwrite: bool = False, created: float | None = None,
         confirmation: Mapping[str, Any] | None = None) -> str:
    """Save a loss expression to the store and return its name.

    ``task_kind`` ("multiclass", "binary" or "regression") sets the module
    convention.  ``params`` gives values of tunable constants c0..c9 that the
    expression leaves free.  Without ``name`` the stable automatic name is used
    (see the module docstring); saving the same loss again returns the same name
    and writes nothing.  A ``name`` that holds a different loss raises
    :class:`StoreError` unless ``overwrite=True``.
    """
    if task_kind not in CONVENTIONS:
        raise StoreError(f"task_kind {task_kind!r} is not one of {', '.join(CONVENTIONS)}")
    try:
        template = as_expr(expr)
    except GrammarError as exc:
        raise StoreError(f"cannot save {str(expr)[:60]!r}: {exc}") from None
    params = {k: float(v) for k, v in (params or {}).items()}
    try:
        bound = template.bind(params) if params else template
    except GrammarError as exc:
        raise StoreError(f"cannot save {template}: {exc}") from None
    if bound.constants:
        raise StoreError(f"cannot save {template}: constants {', '.join(bound.constants)} have no value; pass "
                         f"params={{'{bound.constants[0]}': ...}} or bind them first")
    if name is not None and not NAME_PATTERN.match(name):
        raise StoreError(f"name {name!r} is not a valid loss name (lower-case letters, digits and _, starting "
                         "with a letter, at most 64 characters)")
    from .reference import reference_losses

    if name is not None and name in {loss.name for loss in reference_losses()}:
        raise StoreError(f"name '{name}' belongs to a reference loss; choose another")
    canonical = bound.canonical
    space, _, _, task_kinds = CONVENTIONS[task_kind]
    record: dict[str, Any] = {
        "format": FORMAT,
        "name": None,  # set per candidate name below
        "expression": str(template),
        "canonical": canonical,
        "complexity": bound.complexity,
        "task_kind": task_kind,
        "space": space,
        "task_kinds": list(task_kinds),
        "created": _iso(created),
        "lossforge_version": lossforge_version(),
        "description": description,
        "params": dict(params),
        "provenance": dict(provenance or {}),
        "scores": {k: dict(v) for k, v in (scores or {}).items()},
        "confirmation": dict(confirmation) if confirmation else None,
    }
    directory = store_directory(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the loss store {directory}: {exc.strerror or exc}; choose another with "
                         f"--store or ${ENV_VAR}") from None
    wanted = (task_kind, canonical)
    candidates = [name] if name is not None else [default_name(canonical, task_kind, n) for n in _PREFIX_LENGTHS]
    with _locked(directory):
        for candidate in candidates:
            path = directory / f"{candidate}.toml"
            if path.exists():
                found = identity(path)
                if found == wanted:
                    return candidate  # already stored: idempotent
                if name is None:
                    continue  # a different loss holds this prefix: take a longer one
                if not overwrite:
                    what = "an unreadable file" if found is None else f"a different loss ({found[1]})"
                    raise StoreError(f"{path} already holds {what}; choose another name, or pass "
                                     "overwrite=True to replace it")
            record["name"] = candidate
            text = to_toml(record, header=_HEADER)
            record_to_loss(_reparse(text, path), path)  # what we write must load back
            atomic_write(path, text)
            return candidate
    raise StoreError(f"every automatic name for {canonical} is taken in {directory} by other losses; "
                     "pass name=... to choose one")


_HEADER = ("A loss stored by lossforge. This file is data: it is read with a TOML parser and its expression\n"
           "with lossforge's whitelist grammar parser; nothing in it is ever executed.")


def _reparse(text: str, path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug in to_toml
        raise StoreError(f"internal error: the record for {path} is not valid TOML ({exc})") from None


def save_discovered(entry, config, meta: Mapping[str, Any], tasks: Mapping[str, Any],
                    directory: str | os.PathLike | None = None, confirmation: Mapping[str, Any] | None = None) -> str:
    """Save a search's hall-of-fame ``entry`` to the store; returns its name.

    ``entry``: a :class:`lossforge.search.halloffame.Entry` (expr, canonical,
    complexity, fitness, scores per task, generation, origin); ``config``: the
    :class:`SearchConfig`; ``meta``: the run's metadata (run_id, config_digest,
    eval_seeds, version, created); ``tasks``: name -> Task.  The module
    convention comes from the tasks' kinds (:func:`storefile.module_kind`).
    """
    expr_text = getattr(entry, "expr", None)
    if not isinstance(expr_text, str):
        raise StoreError(f"save_discovered needs a hall-of-fame entry with an expression, got {entry!r}")
    order = [t for t in getattr(config, "tasks", None) or list(tasks) if t in tasks] or list(tasks)
    task_kind = module_kind([tasks[t].kind for t in order])
    seeds = [int(s) for s in meta.get("eval_seeds", [])]
    config_steps = getattr(config, "steps", None)
    split = getattr(config, "split", None)
    scores: dict[str, dict[str, Any]] = {}
    for t in order:
        task = tasks[t]
        value = (getattr(entry, "scores", None) or {}).get(t)
        scores[t] = {
            "kind": task.kind, "metric": getattr(task, "metric", None), "direction": getattr(task, "direction", None),
            "mean": float(value) if value is not None else None,
            "status": "ok" if value is not None else "failed",
            "seeds": seeds, "steps": int(config_steps if config_steps is not None else task.steps), "split": split,
        }
    digest = meta.get("config_digest")
    if digest is None and hasattr(config, "digest"):
        digest = config.digest()
    provenance = {
        "run_id": meta.get("run_id"), "config_name": getattr(config, "name", None), "config_digest": digest,
        "strategy": getattr(config, "strategy", None), "generation": int(getattr(entry, "generation", 0)),
        "origin": getattr(entry, "origin", None) or None, "fitness": float(getattr(entry, "fitness", float("nan"))),
        "complexity": int(getattr(entry, "complexity", 0)) or None, "tasks": order, "eval_seeds": seeds,
        "steps": config_steps, "split": split, "lossforge_version": meta.get("version"),
        "run_created": _iso(meta["created"]) if meta.get("created") is not None else None,
    }
    return save(expr_text, task_kind=task_kind, directory=directory, provenance=provenance, scores=scores,
                confirmation=confirmation)


def read(name: str) -> dict[str, Any]:
    """The raw record (the whole TOML table) of the stored loss ``name``."""
    from .registry import get

    loss = get(name)
    file = loss.provenance.get("file") if loss.kind == "discovered" else None
    if not file:
        raise StoreError(f"'{name}' is a {loss.kind} loss, not a stored one")
    return read_record(Path(file))


# ----------------------------------------------------------------------------- the user's own losses
def add(expr: str, *, kind: str, name: str | None = None, description: str | None = None,
        directory: str | os.PathLike | None = None) -> str:
    """Keep a user's expression in the user store (``lossforge store add``); returns its name.

    The text is parsed by the whitelist grammar parser (a hostile or mistyped
    expression is refused with the parser's message and nothing is written)
    and saved as a readable TOML file that is only ever read as data.  A name
    already used by a shipped loss is refused (the stored file would be hidden).
    """
    if kind not in CONVENTIONS:
        raise StoreError(f"kind {kind!r} is not one of {', '.join(CONVENTIONS)} (the module convention: "
                         "multiclass and binary take logits, regression takes predictions)")
    if not isinstance(expr, str):
        raise StoreError(f"store add takes expression text, got {type(expr).__name__}")
    parsed = as_expr(expr)  # GrammarError with the parser's message
    if name is not None:
        shipped = {p.stem for p in SHIPPED_DIRECTORY.glob("*.toml")}
        if name in shipped:
            raise StoreError(f"name '{name}' belongs to a loss lossforge ships; choose another")
    return save(parsed, task_kind=kind, name=name, directory=directory, description=description,
                provenance={"source": "lossforge store add"})


def stored(directory: str | os.PathLike | None = None) -> list[tuple[Path, Loss | StoreError]]:
    """Every ``*.toml`` file of the user store with its loss, or the error that makes it invalid."""
    directory = store_directory(directory)
    try:
        files = sorted(p for p in directory.glob("*.toml") if not p.name.startswith("."))
    except OSError as exc:
        raise StoreError(f"cannot list the loss store {directory}: {exc.strerror or exc}") from None
    out: list[tuple[Path, Loss | StoreError]] = []
    for path in files:
        try:
            out.append((path, load_file(path)))
        except StoreError as exc:
            out.append((path, exc))
    return out


def remove(name: str, directory: str | os.PathLike | None = None) -> Path:
    """Delete the stored loss ``name`` from the user store (never a shipped or reference loss)."""
    directory = store_directory(directory)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise StoreError(f"{name!r} is not a valid loss name (see `lossforge store list`)")
    path = directory / f"{name}.toml"
    if not path.is_file():
        here = [p.stem for p, _ in stored(directory)]
        where = "it is shipped with lossforge and cannot be removed" if (SHIPPED_DIRECTORY / path.name).exists() \
            else f"the store holds {', '.join(here) if here else 'nothing'}"
        raise StoreError(f"no stored loss '{name}' in {directory}{did_you_mean(name, here)}; {where}")
    with _locked(directory):
        try:
            path.unlink()
        except OSError as exc:
            raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from None
    _SOURCE.clear()
    return path
