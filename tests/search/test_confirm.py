"""Confirmation gates saving: a loss is saved (and claimed) only when it beats the
baseline again on fresh seeds; confirmation is recorded in the run store and resumes."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest

from lossforge.search import resume, run
from lossforge.search.confirm import CONFIRM_GENERATION, CONFIRM_SALT
from lossforge.search.engine import derive_seeds
from lossforge.search.evaluators import LOSS_PREFIX, JobReport, Outcome

from .search_checks import check_finished_run, open_store, small_config
from .test_determinism import Counting, _local, _same_results


class Scripted:
    """A fake evaluator: every candidate scores ``search`` on the search's own seeds and
    ``fresh`` on any other seed; the baseline scores 0.80.  A little per-seed jitter
    keeps the paired test honest (no constant differences)."""

    parallelism = 1

    def __init__(self, search_seeds, search: float, fresh: float):
        self.search_seeds, self.search, self.fresh = set(search_seeds), search, fresh

    def map(self, jobs):
        for job in jobs:
            out = []
            for text in job.entries:
                jitter = int(hashlib.sha256(f"{text}|{job.seed}".encode()).hexdigest()[:6], 16) / 16**6 * 0.01
                if text.startswith(LOSS_PREFIX):
                    value = 0.80
                else:
                    value = self.search if job.seed in self.search_seeds else self.fresh
                out.append(Outcome(value + jitter, "ok"))
            yield JobReport(job, out, worker="scripted")

    def close(self):
        pass


def _config(tmp_path, **kw):
    return small_config(generations=1, confirm_top=2, confirm_seeds=3, save_best=1,
                        loss_store=str(tmp_path / "losses"), **kw)


def _csv(run_dir):
    with open(run_dir / "hall_of_fame.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_loss_that_wins_on_the_search_seed_but_loses_on_fresh_seeds_is_not_saved(tmp_path):
    config = _config(tmp_path)
    ev = Scripted(derive_seeds(config.seed, config.eval_seeds, 1), search=0.95, fresh=0.70)
    result = run(config, tmp_path / "run", quiet=True, evaluator=ev)
    assert result.best.fitness > 0                      # the search says it beats the baseline ...
    assert result.saved == []                           # ... confirmation says no: nothing saved
    assert not (tmp_path / "losses").exists() or not list((tmp_path / "losses").glob("*.toml"))
    verdicts = json.loads((result.run_dir / "confirmation.json").read_text())
    assert len(verdicts) == 2 and not any(v["confirmed"] for v in verdicts)
    assert "significantly worse" in verdicts[0]["reason"]
    digits = verdicts[0]["tasks"]["digits"]
    assert digits["delta"] < 0 and digits["p_value"] < 0.05
    rows = _csv(result.run_dir)
    assert [r["confirmed"] for r in rows[:2]] == ["no", "no"] and rows[2]["confirmed"] == ""
    assert float(rows[0]["confirmed_digits"]) == pytest.approx(digits["mean"], abs=1e-6)
    # the confirmation's trainings are in the run store, on the fresh seeds, next to the baseline
    store, run_id = open_store(result.run_dir)
    rows = [r for r in store.evaluations(run_id) if r["generation"] == CONFIRM_GENERATION]
    store.close()
    fresh = derive_seeds(config.seed, config.confirm_seeds, CONFIRM_SALT)
    assert {r["seed"] for r in rows} == set(fresh)
    assert len(rows) == 3 * len(fresh) and sum(r["canonical"].startswith(LOSS_PREFIX) for r in rows) == 3


def test_a_confirmed_loss_is_saved_with_its_confirmation_table(tmp_path):
    from lossforge.losses.store import load

    config = _config(tmp_path)
    ev = Scripted(derive_seeds(config.seed, config.eval_seeds, 1), search=0.95, fresh=0.90)
    result = run(config, tmp_path / "run", quiet=True, evaluator=ev)
    assert len(result.saved) == 1
    path = tmp_path / "losses" / f"{result.saved[0]}.toml"
    text = path.read_text()
    assert "[confirmation]" in text and "[confirmation.tasks.digits]" in text
    conf = load(path).provenance["confirmation"]
    assert conf["baseline"] == "cross_entropy" and conf["seeds"] == derive_seeds(config.seed, 3, CONFIRM_SALT)
    assert set(conf["tasks"]["digits"]) >= {"mean", "baseline_mean", "delta", "p_value"}
    assert conf["tasks"]["digits"]["delta"] > 0


def test_no_confirmation_means_nothing_is_saved(tmp_path):
    config = _config(tmp_path).replace(confirm_top=0)
    ev = Scripted(derive_seeds(config.seed, config.eval_seeds, 1), search=0.95, fresh=0.90)
    result = run(config, tmp_path / "run", quiet=True, evaluator=ev)
    assert result.best.fitness > 0 and result.saved == []
    assert not (result.run_dir / "confirmation.json").exists()


def test_confirmation_interrupted_resumes_to_the_uninterrupted_result(tmp_path):
    config = small_config(generations=1, confirm_top=2, confirm_seeds=2, chunk_size=1)
    ref_ev = Counting(_local(config))
    ref = run(config, tmp_path / "ref", quiet=True, evaluator=ref_ev)
    check_finished_run(ref, config)
    first = Counting(_local(config), stop_after=ref_ev.reports - 2)   # inside the confirmation
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "run", quiet=True, evaluator=first)
    second = Counting(_local(config))
    resumed = resume(tmp_path / "run", quiet=True, evaluator=second)
    _same_results(ref, resumed)
    assert first.trained + second.trained == ref_ev.trained             # nothing trained twice
    assert (ref.run_dir / "confirmation.json").read_text() == (resumed.run_dir / "confirmation.json").read_text()
