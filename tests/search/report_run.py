"""One small real search shared by the report tests (tests/search/test_report_cli.py and
test_html_report.py): 2 generations x 8 candidates on digits, a seed loss given as an expression
with a constant, and Optuna constant tuning of the best entry with constants (one batch of 8)."""
from __future__ import annotations

import torch

from lossforge.search import SearchConfig, run

SEED_EXPRESSION = "-y*log(p) + 0.5*p*(1 - y)"
_RUN: dict = {}


def shared_run(tmp_path_factory):
    """(SearchResult, SearchConfig, base directory); the search runs once per test session."""
    if not _RUN:
        base = tmp_path_factory.mktemp("report")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # module-scoped users: the per-test single-thread fixture is not active yet
        try:
            config = SearchConfig(tasks=["digits"], generations=2, population=8, steps=60, evaluator="local",
                                  loss_store=str(base / "store"), seed_losses=[SEED_EXPRESSION, "cross_entropy"],
                                  hall_of_fame=20, tune_top=1, tune_trials=8)
            result = run(config, run_dir=base / "run", quiet=True, progress=False)
        finally:
            torch.set_num_threads(threads)
        _RUN["run"] = (result, config, base)
    return _RUN["run"]
