"""Searching a user's own task: a `module:function` factory in TOML, on Ray workers that do not have the
module, then --resume, report and compare on it; Task objects from Python; every bad reference."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn

from lossforge.search import SearchConfig, resume, run
from lossforge.search.errors import ConfigError, EvaluationError
from lossforge.tasks import Task

MODULE = '''
import numpy as np
import torch.nn as nn
from lossforge.tasks import Task

SHIFT = {shift}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                                  nn.Linear(16, 3))

    def forward(self, x):
        return self.body(x)


def make_task():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)) + SHIFT
    y = (X[:, 0] + 0.5 * X[:, 1] > 2 * SHIFT).astype(int) + (X[:, 2] > 0.8 + SHIFT)
    return Task.from_arrays(X[:200], y[:200], X[200:250], y[200:250], X[250:], y[250:], kind="multiclass",
                            model=Net, steps=20, batch_size=32, name="noisy3")


def not_a_task():
    return 42
'''

CONFIG = '''
name = "usertask"
tasks = ["my_tasks:make_task", "wine"]
generations = 2
population = 4
seed = 3
save_best = 0
confirm_top = 0
[evaluation]
steps = 15
chunk_size = 2
'''


def _lossforge(*args, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH="")  # the user's module is NOT importable from the environment
    return subprocess.run([sys.executable, "-m", "lossforge.search.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def user_dir(tmp_path):
    cfg = tmp_path / "project"
    cfg.mkdir()
    (cfg / "my_tasks.py").write_text(MODULE.format(shift=0.0))
    (cfg / "search.toml").write_text(CONFIG)
    return cfg


def test_a_toml_search_on_a_user_task_with_two_ray_workers_then_resume_report_and_compare(user_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # the driver runs from another folder: the module is found via the config
    elsewhere.mkdir()
    run_dir = tmp_path / "run"
    done = _lossforge("search", str(user_dir / "search.toml"), "--workers", "2", "--run-dir", str(run_dir),
                      "--quiet", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads((run_dir / "run.json").read_text())
    records = {r["name"]: r for r in meta["tasks"]}
    assert records["noisy3"]["reference"] == "my_tasks:make_task" and not records["noisy3"]["builtin"]
    assert records["wine"]["builtin"] and len(records["noisy3"]["fingerprint"]) == 64
    hof = (run_dir / "hall_of_fame.csv").read_text()
    assert "noisy3" in hof and "wine" in hof

    local = _lossforge("search", str(user_dir / "search.toml"), "--local", "--run-dir", str(tmp_path / "local"),
                       "--quiet", cwd=elsewhere)
    assert local.returncode == 0, local.stderr[-2000:]
    assert (tmp_path / "local" / "hall_of_fame.csv").read_text() == hof  # 2 Ray workers == in-process

    again = _lossforge("search", "--resume", str(run_dir), "--workers", "2", "--quiet", cwd=elsewhere)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run_dir / "hall_of_fame.csv").read_text() == hof  # a finished run resumes to the same result

    rep = _lossforge("report", str(run_dir), cwd=elsewhere)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "noisy3" in (run_dir / "report" / "report.md").read_text()

    cmp = _lossforge("compare", "--tasks", "my_tasks:make_task", "--losses", "cross_entropy", "--loss",
                     "(p - y)**2", "--seeds", "2", "--quiet", cwd=user_dir)
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    assert "noisy3" in cmp.stdout and "(p - y)**2" in cmp.stdout

    # The user's data changed since the run: resume refuses with one line, exit status 2.
    (user_dir / "my_tasks.py").write_text(MODULE.format(shift=0.5))
    changed = _lossforge("search", "--resume", str(run_dir), "--quiet", cwd=elsewhere)
    assert changed.returncode == 2
    assert "task 'noisy3' has changed since the run" in changed.stderr
    assert "Traceback" not in changed.stderr


@pytest.mark.parametrize("ref, message", [
    ("no_such_module:make_task", "cannot import module 'no_such_module'"),
    ("my_tasks:make_tsk", "has no attribute 'make_tsk' (did you mean 'make_task'?)"),
    ("my_tasks:not_a_task", "not_a_task() returned a int, not a lossforge.tasks.Task"),
    ("my_tasks:SHIFT", "'SHIFT' is a float, not a function returning a Task"),
    ("my-tasks:make", "is not of the form 'module:function'"),
])
def test_a_bad_task_reference_is_one_error_line_with_exit_status_2(user_dir, ref, message):
    (user_dir / "bad.toml").write_text(CONFIG.replace('"my_tasks:make_task"', json.dumps(ref)))
    done = _lossforge("search", str(user_dir / "bad.toml"), "--local", cwd=user_dir.parent, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def _python_task(**kw):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    return Task.from_arrays(X[:120], y[:120], X[120:160], y[120:160], X[160:], y[160:], kind="binary",
                            model=lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), steps=15,
                            batch_size=16, name="mine", **kw)


def test_task_objects_in_python_search_and_resume(tmp_path):
    task = _python_task()
    config = SearchConfig(tasks=[task, "breast_cancer"], generations=2, population=4, steps=10, evaluator="local",
                          save_best=0, confirm_top=0, chunk_size=4)
    assert config.to_dict()["tasks"] == ["mine", "breast_cancer"]
    result = run(config, run_dir=tmp_path / "r", quiet=True)
    assert set(result.best.scores) == {"mine", "breast_cancer"}
    with pytest.raises(ConfigError, match="given to the search as a Python object.*resume\\(run_dir, tasks=\\[task\\]\\)"):
        resume(tmp_path / "r", quiet=True)
    again = resume(tmp_path / "r", quiet=True, tasks=[task])
    assert [e.canonical for e in again.hall_of_fame] == [e.canonical for e in result.hall_of_fame]
    with pytest.raises(ConfigError, match="has changed since the run"):
        resume(tmp_path / "r", quiet=True, tasks=[_python_task(lr=3e-3)])


def test_config_rejects_two_tasks_with_one_name_and_keeps_references():
    with pytest.raises(ConfigError, match="lists a task name twice"):
        SearchConfig(tasks=[_python_task(), _python_task()])
    with pytest.raises(ConfigError, match="unknown task 'digitz' \\(did you mean 'digits'\\?\\)"):
        SearchConfig(tasks=["digitz"])


def test_a_model_that_cannot_be_pickled_for_ray_gets_a_clear_error():
    import threading

    lock = threading.Lock()

    def factory():  # holds a lock: cloudpickle cannot send it to a worker
        with lock:
            return nn.Sequential(nn.Linear(4, 1))

    from lossforge.search.evaluators import RayEvaluator

    with pytest.raises(EvaluationError, match="cannot be sent to Ray workers.*module-level nn.Module class or factory"):
        RayEvaluator({"mine": Task.from_arrays(np.eye(4), np.array([0, 1, 0, 1]), np.eye(4), np.array([0, 1, 0, 1]),
                                               kind="binary", model=factory, name="mine")}, workers=1, warm=False)
    import ray

    assert not ray.is_initialized()  # the instance it started is shut down again
