"""Multi-task fitness: per-task scores normalised against the task's baseline loss.

A task's error is ``1 - metric`` for metrics to maximise (accuracy, balanced
accuracy, F1, IoU: all at most 1) and the metric itself for metrics to
minimise (MSE, MAE, pinball).  The per-task score is ``log(e_baseline / e)``:
0 means as good as cross-entropy / MSE on that task at the same budget and
seeds, +0.1 means about 10% less error.  Scores are aggregated over tasks
(mean by default, or median, or the worst task).
"""
from __future__ import annotations

import math
import statistics
from typing import Mapping

FAILED_SCORE = -5.0        # a task where training diverged or failed
REJECTED_FITNESS = -100.0  # a candidate rejected before training
_MAX_ERROR_FLOOR = 0.01    # an accuracy of 1.0 counts as error 0.01 (no infinite ratios)
_MIN_ERROR_FLOOR = 1e-12


def task_error(metric: float, direction: str) -> float:
    if direction == "max":
        return max(1.0 - metric, _MAX_ERROR_FLOOR)
    return max(metric, _MIN_ERROR_FLOOR)


def task_score(metric: float | None, baseline: float, direction: str) -> float:
    if metric is None or not math.isfinite(metric):
        return FAILED_SCORE
    return math.log(task_error(baseline, direction) / task_error(metric, direction))


def fitness_name(how: str = "mean") -> str:
    """What a fitness of aggregate ``how`` is, in words (for reports and the CLI)."""
    return {"mean": "mean log error ratio vs the baseline over the tasks",
            "median": "median log error ratio vs the baseline over the tasks",
            "min": "worst task's log error ratio vs the baseline"}.get(how, f"{how} of the log error ratios")


def aggregate(scores: Mapping[str, float], how: str = "mean") -> float:
    values = list(scores.values())
    if not values:
        return REJECTED_FITNESS
    if how == "mean":
        return float(sum(values) / len(values))
    if how == "median":
        return float(statistics.median(values))
    if how == "min":
        return float(min(values))
    raise ValueError(f"unknown aggregate '{how}'")
