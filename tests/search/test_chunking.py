"""Jobs of a generation: as few as chunk_size allows, of equal sizes, the same whatever the workers."""
from __future__ import annotations

import types

from lossforge.search.evaluators import JobReport, Outcome
from lossforge.search.filters import CandidateFilter
from lossforge.search.runstore import RunStore
from lossforge.search.scoring import Scorer

from .search_checks import small_config


class Recording:
    parallelism = 2

    def __init__(self):
        self.jobs = []
        self.batches = []

    def map(self, jobs):
        self.batches.append([(j.task, j.steps) for j in jobs])
        for job in jobs:
            self.jobs.append(job)
            yield JobReport(job, [Outcome(0.5, "ok") for _ in job.entries], wall_time=0.0, worker="w")

    def close(self):
        pass


def _sizes(tmp_path, n: int, chunk_size: int, seeds=(1,)):
    store = RunStore(f"sqlite:///{tmp_path / f'runs{n}-{chunk_size}.db'}")
    config = small_config(chunk_size=chunk_size)
    store.open_run("r", "t", config.to_dict(), config.digest(), "0")
    ev = Recording()
    scorer = Scorer(config=config, tasks={"digits": None}, evaluator=ev, store=store, run_id="r", seeds=list(seeds),
                    candidate_filter=CandidateFilter({"multiclass"}))
    items = [(f"c{i}", f"p*{i + 2}") for i in range(n)]
    scorer._evaluate([(items, "digits", 60)], generation=0)
    store.close()
    return [len(j.entries) for j in ev.jobs], [e for j in ev.jobs for e in j.entries]


def test_chunks_are_balanced_and_keep_the_proposal_order(tmp_path):
    sizes, order = _sizes(tmp_path, 27, 8)
    assert sizes == [6, 7, 7, 7]   # not 8, 8, 8, 3: a short last job would leave a worker idle
    assert order == [f"p*{i + 2}" for i in range(27)]
    assert _sizes(tmp_path, 16, 8)[0] == [8, 8]
    assert _sizes(tmp_path, 5, 8)[0] == [5]
    assert _sizes(tmp_path, 0, 8)[0] == []
    sizes, _ = _sizes(tmp_path, 9, 4, seeds=(1, 2))
    assert sizes == [3, 3, 3, 3, 3, 3]    # per seed, as many jobs as ceil(9 / 4)


def test_every_task_of_a_stage_and_every_baseline_run_in_one_batch_of_jobs(tmp_path):
    """A stage over several tasks (and the baselines of every task at both budgets) is one
    ``map`` call: a worker done with one task's jobs goes on to the next task's, with no
    barrier per task; the chunks, and so the results, are those of one call per task."""
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    config = small_config(chunk_size=4, short_steps=20, steps=60)
    store.open_run("r", "t", config.to_dict(), config.digest(), "0")
    ev = Recording()
    tasks = {"digits": types.SimpleNamespace(baseline="cross_entropy", direction="max"),
             "wine": types.SimpleNamespace(baseline="cross_entropy", direction="max")}
    scorer = Scorer(config=config, tasks=tasks, evaluator=ev, store=store, run_id="r", seeds=[1, 2],
                    candidate_filter=CandidateFilter({"multiclass"}))
    baselines = scorer.compute_baselines()
    assert ev.batches == [[("digits", 60)] * 2 + [("wine", 60)] * 2 + [("digits", 20)] * 2 + [("wine", 20)] * 2]
    assert baselines == {"digits@60": 0.5, "wine@60": 0.5, "digits@20": 0.5, "wine@20": 0.5}
    items = [(f"c{i}", f"p*{i + 2}") for i in range(6)]
    out = scorer._stage(items, scorer.full_steps, generation=0)
    assert ev.batches[1] == [("digits", 60)] * 4 + [("wine", 60)] * 4    # 2 chunks x 2 seeds, per task
    assert sorted(out) == sorted(c for c, _ in items)
    assert all(fit == 0.0 and set(metrics) == {"digits", "wine"} for fit, metrics, _cases in out.values())
    store.close()
