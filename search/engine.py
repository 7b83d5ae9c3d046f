"""Runs: a search from a config to a hall of fame, resumable from its directory.

A run directory holds ``config.toml`` (the effective configuration),
``run.json`` (run id, seeds, store URL), ``checkpoint.json`` (written
atomically after every generation), the run store ``runs.db`` (unless
``store`` names another database) and the readable results
``hall_of_fame.csv`` and ``pareto.csv``.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from lossforge.primitives.version import lossforge_version

from .checkpoint import atomic_write_text, read_checkpoint, write_checkpoint
from .config import SearchConfig
from .errors import ConfigError, StorageError
from .evaluators import InfraError, make_evaluator
from .filters import CandidateFilter
from .halloffame import Entry, HallOfFame
from .progress import Progress
from .runstore import LOCAL_STORE, RunStore, run_store_url
from .scoring import Scorer
from .screening import Screener
from .taskref import rebuild as rebuild_task
from .taskref import record as task_record
from .taskref import resolve_task, shipped_modules, task_name
from .strategies import make_strategy

RUN_FILE = "run.json"
CONFIG_FILE = "config.toml"
CHECKPOINT_FILE = "checkpoint.json"


@dataclass
class SearchResult:
    run_dir: Path
    run_id: str
    hall_of_fame: list[Entry]
    pareto: list[Entry]
    baselines: dict[str, float]
    generations: list[dict] = field(default_factory=list)
    evaluations: int = 0
    wall_time: float = 0.0
    saved: list[str] = field(default_factory=list)
    aggregate: str = "mean"   # how the fitness combines the tasks (search.fitness.fitness_name)

    @property
    def best(self) -> Entry | None:
        return self.hall_of_fame[0] if self.hall_of_fame else None


def resolve_tasks(config: SearchConfig) -> dict:
    """The config's tasks as Task objects, by name, in the config's order."""
    return {task_name(t): resolve_task(t) for t in config.tasks}


def derive_seeds(seed: int, n: int, salt: int) -> list[int]:
    """Seeds drawn once in the driver (never per worker)."""
    ss = np.random.SeedSequence([seed, salt])
    return [int(x) for x in ss.generate_state(n, dtype=np.uint32)]


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """One process per run directory (released by the OS if the process dies)."""
    lock = FileLock(run_dir / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StorageError(f"run directory {run_dir} is in use by another lossforge process") from None
    try:
        (run_dir / ".lock").write_text(str(os.getpid()))
        yield
    finally:
        lock.release()


def _new_run_dir(config: SearchConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.name}-{stamp}-{secrets.token_hex(2)}"


def run(config: SearchConfig, run_dir: str | Path | None = None, *, quiet: bool = False,
        progress: bool | None = None, evaluator=None) -> SearchResult:
    """Run a search to completion and return its hall of fame."""
    if not isinstance(config, SearchConfig):
        raise ConfigError(f"run() takes a SearchConfig, got {type(config).__name__}")
    run_dir = Path(run_dir) if run_dir is not None else _new_run_dir(config)
    if (run_dir / RUN_FILE).exists():
        raise StorageError(f"{run_dir} already holds a run; resume it with `lossforge search --resume {run_dir}` "
                           "or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{config.name}-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    tasks = resolve_tasks(config)
    meta = {
        "run_id": run_id,
        "created": time.time(),
        "version": lossforge_version(),
        "store": config.store or LOCAL_STORE,  # a run-local store: relative to the run directory
        "config_digest": config.digest(),
        "eval_seeds": derive_seeds(config.seed, config.eval_seeds, 1),
        "strategy_seed": derive_seeds(config.seed, 1, 2)[0],
        "tasks": [task_record(t) for t in tasks.values()],  # how to rebuild each task, and its data fingerprint
    }
    atomic_write_text(run_dir / CONFIG_FILE, config.to_toml())
    atomic_write_text(run_dir / RUN_FILE, json.dumps(meta, indent=2))
    return _execute(config, run_dir, meta, quiet=quiet, progress=progress, evaluator=evaluator)


def resume(run_dir: str | Path, *, quiet: bool = False, progress: bool | None = None, evaluator=None,
           tasks=None, **overrides: Any) -> SearchResult:
    """Continue a run from its last checkpoint; the results equal an uninterrupted run's.

    ``overrides`` may change only where the work runs (workers, evaluator, address).
    ``tasks``: Task objects the run was given in Python (its built-in and
    ``module:function`` tasks are rebuilt from the run directory); each is
    checked against the fingerprint the run recorded.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).exists():
        raise StorageError(f"{run_dir} is not a lossforge run directory (no {RUN_FILE}); check the path")
    try:
        meta = json.loads((run_dir / RUN_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StorageError(f"{run_dir / RUN_FILE} is corrupt ({exc}); the run cannot be resumed") from None
    missing = sorted(_META_KEYS - set(meta)) if isinstance(meta, dict) else sorted(_META_KEYS)
    if missing:
        raise StorageError(f"{run_dir / RUN_FILE} is not a lossforge run record (missing {', '.join(missing)}); "
                           "restore it from a backup or start a new run")
    config = read_run_config(run_dir, meta, tasks)
    allowed = {"workers", "evaluator", "address", "time_limit", "max_retries"}
    bad = set(overrides) - allowed
    if bad:
        raise ConfigError(f"cannot change {', '.join(sorted(bad))} when resuming; only {', '.join(sorted(allowed))}")
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    if config.digest() != meta["config_digest"]:
        raise StorageError(f"{run_dir / CONFIG_FILE} was edited since the run started (its settings no longer match "
                           "the run); restore it or start a new run")
    _check_resumable(run_dir, meta, config)
    return _execute(config, run_dir, meta, quiet=quiet, progress=progress, evaluator=evaluator)


_META_KEYS = {"run_id", "version", "store", "config_digest", "eval_seeds", "strategy_seed"}


def read_run_config(run_dir: str | Path, meta: dict | None = None, tasks=None) -> SearchConfig:
    """A run's config with its tasks rebuilt from the run's records (and checked against their
    fingerprints); ``tasks`` gives Task objects the run was given in Python."""
    run_dir = Path(run_dir)
    if meta is None:
        try:
            meta = json.loads((run_dir / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StorageError(f"{run_dir / RUN_FILE} cannot be read ({exc}); check the run directory") from None
    given = {t.name: t for t in (tasks or [])}
    records = meta.get("tasks") if isinstance(meta, dict) else None
    if not records:  # a run written before task records: built-in tasks only
        return SearchConfig.from_toml(run_dir / CONFIG_FILE, tasks=given or None)
    rebuilt = {}
    for rec in records:
        task = rebuild_task(rec, given)
        rebuilt[rec["name"]] = task
        if rec.get("reference"):
            rebuilt[rec["reference"]] = task
    return SearchConfig.from_toml(run_dir / CONFIG_FILE, tasks=rebuilt)


def _check_resumable(run_dir: Path, meta: dict, config: SearchConfig) -> None:
    """Refuse, before anything is written, to resume from a damaged or missing
    checkpoint or run store: carrying on would silently restart the search and
    overwrite the run's results."""
    ckpt = run_dir / CHECKPOINT_FILE
    prev = ckpt.with_name(ckpt.stem + ".prev.json")
    if not ckpt.exists():
        if prev.exists():
            raise StorageError(f"checkpoint {ckpt} is missing but {prev.name} is there; copy {prev.name} to "
                               f"{ckpt.name} to resume from one generation earlier. lossforge will not start the "
                               "run again from scratch")
        return  # interrupted before its first checkpoint: starting again loses nothing
    payload = read_checkpoint(ckpt)  # a StorageError naming the file when corrupt
    if not isinstance(payload, dict):
        raise StorageError(f"checkpoint {ckpt} passes its checksum but holds no run state; restore it or start a "
                           "new run")
    if payload.get("run_id") != meta["run_id"]:
        raise StorageError(f"checkpoint {ckpt} belongs to run {payload.get('run_id')}, not {meta['run_id']}; it was "
                           f"copied from another run. Restore this run's checkpoint (or {prev.name})")
    db = run_dir / "runs.db"
    if config.store is None and (not db.exists() or db.stat().st_size == 0):
        raise StorageError(f"run store {db} is missing or empty but checkpoint {ckpt.name} records "
                           f"{payload.get('next_generation')} finished generations; restore runs.db from a backup "
                           "(resuming without it would lose the run's results)")


def _execute(config: SearchConfig, run_dir: Path, meta: dict, *, quiet: bool, progress: bool | None,
             evaluator) -> SearchResult:
    t_start = time.perf_counter()
    with _run_lock(run_dir):
        # the run's own runs.db is the one in run_dir, wherever the directory now is (copied or moved)
        meta = dict(meta, store=run_store_url(run_dir, meta["store"], config.store))
        store = RunStore(meta["store"])
        store.open_run(meta["run_id"], config.name, config.to_dict(), meta["config_digest"], meta["version"])
        tasks = resolve_tasks(config)
        own_evaluator = evaluator is None
        if evaluator is None:
            evaluator = make_evaluator(config.evaluator, tasks, workers=config.workers, address=config.address,
                                       cpus_per_eval=config.cpus_per_eval, gpus_per_eval=config.gpus_per_eval,
                                       time_limit=config.time_limit, max_retries=config.max_retries,
                                       py_modules=shipped_modules(tasks.values()))
        try:
            return _loop(config, run_dir, meta, store, tasks, evaluator, quiet, progress, t_start)
        except InfraError as exc:  # a clean stop: the last checkpoint is intact and resumable
            store.set_status(meta["run_id"], "stopped")
            raise InfraError(f"{exc}. The run stopped; its checkpoint is intact: continue it with `lossforge search "
                             f"--resume {run_dir}` once the cluster is healthy (those evaluations are re-run)",
                             exc.generation, exc.lost) from None
        except BaseException:
            store.set_status(meta["run_id"], "interrupted")
            raise
        finally:
            if own_evaluator:
                evaluator.close()
            store.close()


def _loop(config, run_dir, meta, store, tasks, evaluator, quiet, progress, t_start) -> SearchResult:
    kinds = {t.kind for t in tasks.values()}
    cfilter = CandidateFilter(kinds, fingerprint_dedup=config.fingerprint_dedup, direct_check=config.direct_check,
                              direct_check_steps=config.direct_check_steps)
    strategy = make_strategy(config, meta["strategy_seed"], run_id=meta["run_id"], storage_url=meta["store"])
    if config.screen:  # batched, on the evaluator's workers where it has them (search.screening)
        strategy.set_viability(Screener(cfilter, config, evaluator))
    hof = HallOfFame(config.hall_of_fame)
    bar = Progress(config, quiet=quiet, enabled=progress)
    bar.watch(evaluator)  # workers busy on the progress line; where the Ray dashboard is
    scorer = Scorer(config=config, tasks=tasks, evaluator=evaluator, store=store, run_id=meta["run_id"],
                    seeds=meta["eval_seeds"], candidate_filter=cfilter, on_progress=bar.evaluated)
    start = 0
    ckpt_path = run_dir / CHECKPOINT_FILE
    if ckpt_path.exists():
        payload = read_checkpoint(ckpt_path)
        if payload.get("run_id") != meta["run_id"]:
            raise StorageError(f"checkpoint {ckpt_path} belongs to run {payload.get('run_id')}, not "
                               f"{meta['run_id']}; it was copied from another run")
        try:
            strategy.load_state(payload["strategy"])
            hof.load_state(payload["hall_of_fame"])
            cfilter.load_state(payload["filter"])
            start = int(payload["next_generation"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise StorageError(f"checkpoint {ckpt_path} passes its checksum but does not fit this run "
                               f"({type(exc).__name__}: {exc}); it was edited or written by another version. "
                               "Restore the checkpoint or start a new run") from None
    bar.start(start)
    baselines = scorer.compute_baselines()
    for gen in range(start, config.generations):
        t0 = time.perf_counter()
        proposals = strategy.ask()
        if config.constant_variants:
            from .tuning import tune_in_loop

            proposals = tune_in_loop(config=config, scorer=scorer, strategy=strategy, proposals=proposals,
                                     generation=gen, seed=meta["strategy_seed"])
        scored, stats = scorer.score(proposals, gen)
        strategy.tell([(s.fitness, s.complexity) for s in scored], [s.cases for s in scored])
        # Only candidates trained under their own canonical form: a fingerprint
        # duplicate borrows its representative's metrics and is not a new entry.
        hof.update([Entry(str(s.expr), s.expr.canonical, s.expr.complexity, s.fitness,
                          dict(s.metrics), gen, s.origin)
                    for s in scored if s.fidelity == 2 and s.expr is not None and s.status == "ok"])
        trained = [s.fitness for s in scored if s.fidelity > 0]
        summary = {
            "best": max(trained) if trained else None,
            "median": statistics.median(trained) if trained else None,
            "n_candidates": len(scored),
            "n_evaluations": stats["evaluated"],
            "filters": stats,
            "wall_time": time.perf_counter() - t0,
        }
        rows = [s.candidate_row(i) for i, s in enumerate(scored)]
        store.record_generation(meta["run_id"], gen, rows, summary)
        write_checkpoint(run_dir / CHECKPOINT_FILE, {
            "run_id": meta["run_id"], "next_generation": gen + 1, "strategy": strategy.state(),
            "hall_of_fame": hof.state(), "filter": cfilter.state(),
        })
        _write_results(run_dir, hof, list(tasks))
        bar.generation_done(gen, summary, hof.entries[0] if hof.entries else None)
    if config.tune_top and strategy.tunable:
        from .tuning import tune_hall_of_fame

        tune_hall_of_fame(config=config, scorer=scorer, hof=hof, store=store, run_id=meta["run_id"],
                          study_url=meta["store"], progress=bar)
        _write_results(run_dir, hof, list(tasks))
    if config.confirm_top:
        from .confirm import CONFIRM_SALT, confirm_hall_of_fame

        seeds = derive_seeds(config.seed, config.confirm_seeds, CONFIRM_SALT)
        verdicts = confirm_hall_of_fame(config=config, scorer=scorer, hof=hof, seeds=seeds, progress=bar)
        atomic_write_text(run_dir / "confirmation.json", json.dumps(verdicts, indent=2))
        _write_results(run_dir, hof, list(tasks))
    bar.close()
    store.set_status(meta["run_id"], "finished")
    saved = _save_best(config, hof, meta, tasks)
    return SearchResult(run_dir=run_dir, run_id=meta["run_id"], hall_of_fame=list(hof.entries), pareto=list(hof.front),
                        baselines=baselines, generations=store.generations(meta["run_id"]),
                        evaluations=store.count_evaluations(meta["run_id"]),
                        wall_time=time.perf_counter() - t_start, saved=saved, aggregate=config.aggregate)


def _write_results(run_dir: Path, hof: HallOfFame, tasks: list[str]) -> None:
    atomic_write_text(run_dir / "hall_of_fame.csv", hof.to_csv(tasks))
    atomic_write_text(run_dir / "pareto.csv", hof.to_csv(tasks, which="front"))


def _save_best(config, hof: HallOfFame, meta: dict, tasks: dict) -> list[str]:
    """Save the best ``save_best`` confirmed hall-of-fame entries (see
    :mod:`lossforge.search.confirm`) to the loss store; returns their names.
    Nothing is saved without confirmation (``confirm_top = 0``)."""
    if not config.save_best or not config.confirm_top or not hof.entries:
        return []
    try:
        from lossforge.losses.store import save_discovered
    except ImportError:  # the loss store is optional for a search
        return []
    from .confirm import storefile_table

    confirmed = [e for e in hof.entries if e.confirmation and e.confirmation["confirmed"]]
    return [save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=config.loss_store,
                            confirmation=storefile_table(entry.confirmation))
            for entry in confirmed[: config.save_best]]
