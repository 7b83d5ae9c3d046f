"""Epsilon-lexicase parent selection over cases (task, evaluation seed).

Lexicase selection (Spector 2012; Helmuth, Spector & Matheson, "Solving
uncompromising problems with lexicase selection", IEEE TEC 2015) picks each
parent by filtering the whole population through the cases in a fresh random
order, keeping at every case only the candidates best on it; epsilon-lexicase
(La Cava, Spector & Danai, GECCO 2016) keeps those within epsilon of the best,
epsilon being the median absolute deviation of the population's scores on that
case.  A specialist that is best on one task survives whenever that task comes
first, although its mean over all tasks may be poor -- which a tournament on the
mean never lets through -- so specialists on different tasks survive and
recombine.

Case scores are the per-(task, seed) log error ratios against the baseline
(:func:`lossforge.search.fitness.task_score`, higher is better); a candidate
without a score on a case (rejected, failed) counts as worst there.  All draws
use the ``random`` module, which the strategies swap to their own RNG state.
"""
from __future__ import annotations

import math
import random
import statistics
from typing import Mapping, Sequence

_WORST = -math.inf


def case_matrix(cases: Sequence[Mapping[str, float] | None]) -> tuple[list[str], list[list[float]]]:
    """The sorted case names and each candidate's score per case (worst where missing or not finite)."""
    names = sorted({k for c in cases if c for k in c})
    rows = []
    for c in cases:
        c = c or {}
        rows.append([float(c[k]) if k in c and math.isfinite(c[k]) else _WORST for k in names])
    return names, rows


def epsilons(rows: list[list[float]]) -> list[float]:
    """Median absolute deviation of the finite scores on each case (0 when fewer than two)."""
    out = []
    for j in range(len(rows[0]) if rows else 0):
        vals = [r[j] for r in rows if r[j] != _WORST]
        if len(vals) < 2:
            out.append(0.0)
            continue
        med = statistics.median(vals)
        out.append(statistics.median(abs(v - med) for v in vals))
    return out


def select(cases: Sequence[Mapping[str, float] | None], k: int, *, epsilon: bool = True,
           rng: random.Random | None = None) -> list[int]:
    """Indices of ``k`` parents chosen by (epsilon-)lexicase selection."""
    rng = rng or random
    n = len(cases)
    if n == 0:
        return []
    names, rows = case_matrix(cases)
    if not names:
        return [rng.randrange(n) for _ in range(k)]
    eps = epsilons(rows) if epsilon else [0.0] * len(names)
    order = list(range(len(names)))
    chosen = []
    for _ in range(k):
        pool = list(range(n))
        rng.shuffle(order)
        for j in order:
            best = max(rows[i][j] for i in pool)
            if best == _WORST:
                continue
            pool = [i for i in pool if rows[i][j] >= best - eps[j]]
            if len(pool) == 1:
                break
        chosen.append(pool[0] if len(pool) == 1 else rng.choice(pool))
    return chosen
