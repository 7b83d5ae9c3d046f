"""End-to-end invariants every search strategy must keep (used by test_aging.py and
test_lexicase.py): deterministic, identical for local / 1 / 2 Ray workers, and a run
killed with SIGKILL resumes to the uninterrupted result without training anything twice."""
from __future__ import annotations

from lossforge.search import run

from .search_checks import check_finished_run, open_store, small_config
from .test_determinism import _same_results, sigkill_and_resume


def check_workers(tmp_path, **changes) -> None:
    config = small_config(generations=3, chunk_size=2, steps=30, **changes)
    local = run(config, tmp_path / "local", quiet=True)
    check_finished_run(local, config)
    _same_results(local, run(config, tmp_path / "again", quiet=True))
    for workers in (1, 2):
        remote = run(config.replace(evaluator="ray", workers=workers), tmp_path / f"ray{workers}", quiet=True)
        _same_results(local, remote)
    store, run_id = open_store(tmp_path / "ray2")
    assert len({r["worker"] for r in store.evaluations(run_id)}) == 2
    store.close()


def check_sigkill(tmp_path, toml_lines: str) -> None:
    sigkill_and_resume(tmp_path, "tasks = [\"digits\"]\ngenerations = 3\npopulation = 8\nsteps = 30\nchunk_size = 2\n"
                                 "save_best = 0\nconfirm_top = 0\nseed = 11\n" + toml_lines)
