"""lossforge.tasks: Task definitions, built-in tasks, the population-batched trainer and metrics.

>>> from lossforge.tasks import get
>>> task = get("digits")
>>> results = task.evaluate(["-y*log(p)", "(p - y)**2"], seed=0)   # doctest: +SKIP
>>> [round(r.metric, 3) for r in results]                          # doctest: +SKIP
"""
from __future__ import annotations

from .builtin import get, names, tasks_table
from .errors import TaskError
from .metrics import Metric, get_metric
from .models import ModelSpec, parse_model
from .task import Result, Task

__all__ = ["Metric", "ModelSpec", "Result", "Task", "TaskError", "get", "get_metric", "names", "parse_model",
           "tasks_table"]
