"""Task references: built-in names, user task factories (``module:function``) and Task objects.

A search names its tasks as

* a built-in task name (``"digits"``, see ``lossforge tasks``);
* ``"module:function"`` or ``"package.module:function"``: a callable with no
  arguments that returns a :class:`~lossforge.tasks.Task`.  The module is
  imported (the user's own code, like a plugin) from the config file's folder,
  then the current directory, then installed packages.  Nothing else in a
  config is ever executed;
* in Python, a ``Task`` object itself.

A run records each task's reference and a fingerprint of its data and
settings (``run.json``), so ``--resume``, ``report`` and ``compare`` rebuild
the same tasks, and a task whose data changed since the run is refused.
User modules are shipped to Ray workers with the job (``runtime_env``
``py_modules``): they need not be installed on the cluster.
"""
from __future__ import annotations

import contextlib
import importlib
import re
import sys
import sysconfig
from pathlib import Path

from lossforge.primitives import did_you_mean
from lossforge.tasks import Task
from lossforge.tasks import get as get_task
from lossforge.tasks import names as task_names

from .errors import ConfigError

_FACTORY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def is_factory_ref(ref: str) -> bool:
    """True for text of the form ``module:function`` (``package.module:function``)."""
    return isinstance(ref, str) and bool(_FACTORY.fullmatch(ref.strip()))


@contextlib.contextmanager
def _import_path(base_dir):
    """Put the config's folder, then the current directory, at the front of ``sys.path`` while importing."""
    extra = [str(Path(p).resolve()) for p in (base_dir, Path.cwd()) if p is not None]
    added = [p for p in dict.fromkeys(extra) if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)


def resolve_task(ref, base_dir: str | Path | None = None) -> Task:
    """A Task from a built-in name, a ``module:function`` factory, or a Task (returned as is).

    Any problem is one :class:`ConfigError` line naming the reference and the fix.
    """
    if isinstance(ref, Task):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"a task must be a built-in task name, 'module:function' or a Task object, got {ref!r}")
    ref = ref.strip()
    if ":" not in ref:
        known = task_names()
        if ref not in known:
            raise ConfigError(f"unknown task '{ref}'{did_you_mean(ref, known)}; known tasks: {', '.join(known)}; "
                              "or name your own task factory as 'module:function'")
        return get_task(ref)
    if not is_factory_ref(ref):
        raise ConfigError(f"task '{ref}' is not of the form 'module:function' (e.g. 'my_tasks:make_task')")
    module_name, func_name = ref.split(":")
    with _import_path(base_dir):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            where = f"{Path(base_dir).resolve()}, " if base_dir is not None else ""
            raise ConfigError(f"task '{ref}': cannot import module '{module_name}' ({exc}); it is looked for in "
                              f"{where}the current directory and installed packages") from None
        except Exception as exc:  # the user's module fails on import
            raise ConfigError(f"task '{ref}': importing module '{module_name}' raised {type(exc).__name__}: "
                              f"{exc}") from None
    factory = getattr(module, func_name, None)
    if factory is None:
        public = [n for n in vars(module) if not n.startswith("_")]
        raise ConfigError(f"task '{ref}': module '{module_name}' has no attribute '{func_name}'"
                          f"{did_you_mean(func_name, public)}")
    if not callable(factory):
        raise ConfigError(f"task '{ref}': '{func_name}' is a {type(factory).__name__}, not a function returning a Task")
    try:
        task = factory()
    except Exception as exc:
        raise ConfigError(f"task '{ref}': calling {func_name}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(task, Task):
        raise ConfigError(f"task '{ref}': {func_name}() returned a {type(task).__name__}, not a "
                          "lossforge.tasks.Task; return Task.from_arrays(...)")
    task.reference = ref
    task.reference_dir = str(Path(base_dir).resolve()) if base_dir is not None else None
    return task


def task_name(entry) -> str:
    return entry.name if isinstance(entry, Task) else str(entry)


def reference_of(entry) -> str:
    """What a config file writes for a task: its name or ``module:function``, or its name for a Python object."""
    if isinstance(entry, Task):
        return entry.reference or entry.name
    return str(entry)


def is_builtin(task: Task) -> bool:
    return task.reference is None and task.name in task_names() and get_task(task.name) is task


def record(task: Task) -> dict:
    """How to rebuild ``task`` in another process, and how to tell that its data changed."""
    return {"name": task.name, "kind": task.kind, "builtin": is_builtin(task), "reference": task.reference,
            "reference_dir": getattr(task, "reference_dir", None), "fingerprint": task.fingerprint()}


def rebuild(rec: dict, given: dict[str, Task] | None = None) -> Task:
    """The task a run recorded, rebuilt (or taken from ``given`` by name), checked against its fingerprint."""
    name = rec["name"]
    if given and name in given:
        task = given[name]
    elif rec.get("builtin"):
        task = get_task(name)
    elif rec.get("reference"):
        task = resolve_task(rec["reference"], rec.get("reference_dir"))
    else:
        raise ConfigError(f"task '{name}' was given to the search as a Python object, so the run cannot rebuild it; "
                          f"pass it again (resume(run_dir, tasks=[task])) or define it as a 'module:function' "
                          "factory in a module")
    if task.fingerprint() != rec.get("fingerprint"):
        raise ConfigError(f"task '{name}' has changed since the run (its data, model or budget differ from what "
                          "the run recorded); restore the original task or start a new run")
    return task


def _is_installed(path: str) -> bool:
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}
    return any(str(Path(path).resolve()).startswith(str(Path(r).resolve())) for r in roots)


def shipped_modules(tasks) -> list[str]:
    """Local files or package folders of the user code the tasks need on Ray workers.

    The module of each ``module:function`` reference, and the module defining
    each task's model class or factory, unless it is installed (site-packages),
    part of lossforge, or ``__main__`` (pickled by value).
    """
    out: list[str] = []
    mods = set()
    for task in tasks:
        if task.reference:
            mods.add(task.reference.split(":")[0])
        source = task.model_source
        obj = type(source.obj) if source.kind == "template" else source.obj
        mod = getattr(obj, "__module__", None)
        if source.kind != "spec" and mod:
            mods.add(mod)
    for name in sorted(mods):
        top = name.split(".")[0]
        if top in ("__main__", "lossforge", "torch") or top not in sys.modules:
            continue
        module = sys.modules[top]
        path = getattr(module, "__file__", None)
        if not path or _is_installed(path):
            continue
        target = str(Path(path).parent) if Path(path).name == "__init__.py" else str(path)
        if target not in out:
            out.append(target)
    return out


def run_tasks(meta: dict, entries) -> list[tuple[str, str | None]]:
    """(name, kind) of each task of a run, from its records (no user code runs); ``entries`` are the
    config's task entries, used for runs recorded before task records (built-in tasks only)."""
    records = meta.get("tasks") if isinstance(meta, dict) else None
    if records:
        return [(r["name"], r.get("kind")) for r in records]
    return [(task_name(e), e.kind if isinstance(e, Task) else get_task(str(e)).kind) for e in entries]
