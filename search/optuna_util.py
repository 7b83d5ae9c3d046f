"""Shared Optuna plumbing: samplers seeded per round, studies in the run's database.

Optuna samplers keep their random state in memory, not in the storage, so a
sampler is re-created with a seed derived from the run seed and the round
number before every batch of asks: a resumed run then asks exactly what an
uninterrupted run asks.  Trials left RUNNING by an interrupted process are
marked FAIL before continuing (TPE and CMA-ES ignore failed trials).
"""
from __future__ import annotations

import logging

import optuna

from .fitness import REJECTED_FITNESS

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").setLevel(logging.WARNING)


def make_sampler(kind: str, seed: int, n_startup: int = 8):
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True,
                                          warn_independent_sampling=False)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=1, warn_independent_sampling=False)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler '{kind}'")


def open_study(name: str, storage_url: str, sampler) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage_url, direction="maximize", sampler=sampler,
                                load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,
                                                      optuna.trial.TrialState.WAITING)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return study


def completed(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def tell_fitness(study: optuna.Study, trial, fitness: float) -> None:
    study.tell(trial, max(float(fitness), REJECTED_FITNESS))
