"""Shared Optuna plumbing: samplers seeded per round, studies in the run's database.

Optuna samplers keep their random state in memory, not in the storage, so a
sampler is re-created with a seed derived from the run seed and the round
number before every batch of asks: a resumed run then asks exactly what an
uninterrupted run asks.  A batch that an interrupted process asked but never
told is still RUNNING in the storage: :func:`take_running` hands those trials
out again (asking anew would change the trial numbers, which CMA-ES mixes into
its seeds); leftovers that are not a whole batch are marked FAIL (TPE and
CMA-ES ignore failed trials).
"""
from __future__ import annotations

import logging
import warnings

import optuna

from .fitness import REJECTED_FITNESS

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)


def make_sampler(kind: str, seed: int, n_startup: int = 8):
    if kind == "tpe":
        # warn_independent_sampling silences a per-trial warning on older Optuna; Optuna >= 4.9
        # deprecates the argument itself (a FutureWarning at construction), which is muted here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True,
                                              warn_independent_sampling=False)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=1, warn_independent_sampling=False)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler '{kind}'")


def open_study(name: str, storage_url: str, sampler) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage_url, direction="maximize", sampler=sampler,
                               load_if_exists=True)


def take_running(study: optuna.Study, n: int) -> list:
    """The ``n`` trials an interrupted process asked for this batch and never
    told (the asks an uninterrupted run makes), or [] after failing any
    leftovers that are not a whole batch.  A WAITING (enqueued) trial is left
    for the next ask."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if len(running) == n:
        return list(running)
    for t in running:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return []


def completed(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def tell_fitness(study: optuna.Study, trial, fitness: float) -> None:
    if isinstance(trial, optuna.trial.FrozenTrial):  # handed out again by take_running
        trial = trial.number
    study.tell(trial, max(float(fitness), REJECTED_FITNESS))
