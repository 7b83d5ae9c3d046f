"""The rediscovery suite's added tasks (experiments/rediscovery/suite_tasks.py): the Poisson-count
metric and known loss are what they claim to be.  Fast: builds tasks, trains nothing."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "rediscovery"))
import suite_tasks  # noqa: E402


def test_mean_poisson_deviance_is_sklearns_on_floored_rates():
    from sklearn.metrics import mean_poisson_deviance

    rng = np.random.default_rng(0)
    y = rng.poisson(2.0, 200).astype(float)
    rate = rng.normal(2.0, 1.5, 200)  # some rates <= 0: floored at 1e-3
    assert (rate <= 0).any()
    expected = mean_poisson_deviance(y, np.maximum(rate, 1e-3))
    assert suite_tasks.mean_poisson_deviance(rate, y) == pytest.approx(expected, rel=1e-12)


def test_poisson_known_loss_is_the_deviance_of_the_rate_in_original_units():
    task = suite_tasks.poisson_deviance_counts()
    m, s = task.target_mean, task.target_std
    program = suite_tasks.poisson_known_expression(task).compile()
    rng = np.random.default_rng(1)
    counts = rng.poisson(3.0, 100).astype(float)
    rates = rng.uniform(0.05, 9.0, 100)
    p = torch.tensor((rates - m) / s, dtype=torch.float64)  # the prediction as the loss sees it
    y = torch.tensor((counts - m) / s, dtype=torch.float64)
    loss = program(p, y).numpy()
    ylogy = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1) / rates), 0.0)
    deviance = 2 * (ylogy - counts + rates)
    np.testing.assert_allclose(s * loss, deviance, rtol=1e-4, atol=1e-4)  # c is printed to 6 digits
    # below the floor the loss is flat in p (no fall past the rate-0 pole)
    low = program(torch.tensor([-m / s - 1.0, -m / s - 5.0], dtype=torch.float64),
                  torch.tensor([(2 - m) / s] * 2, dtype=torch.float64))
    assert float(low[0]) == pytest.approx(float(low[1]))


def test_added_tasks_build():
    poisson = suite_tasks.poisson_deviance_counts()
    assert poisson.kind == "regression" and poisson.direction == "min"
    assert set(np.unique(poisson.y_train)) <= set(range(200))
    longtail = suite_tasks.longtail()
    assert longtail.kind == "multiclass" and longtail.num_classes == 6 and longtail.metric == "balanced_accuracy"
    counts = np.bincount(longtail.y_train.astype(int), minlength=6)
    assert counts[0] > 15 * counts[5] > 0


def test_poisson_deviance_long_is_the_same_data_trained_longer():
    short, long = suite_tasks.poisson_deviance_counts(), suite_tasks.poisson_deviance_long()
    np.testing.assert_array_equal(short.y_train, long.y_train)
    np.testing.assert_array_equal(short.y_val, long.y_val)
    assert (short.steps, long.steps) == (150, 400) and long.grad_clip == 1.0 and short.grad_clip is None


def test_heavy_tailed_noise_corrupts_training_targets_only_upwards():
    task = suite_tasks.heavy_tailed_noise()
    assert task.kind == "regression" and task.metric == "mse"
    # rebuild the clean targets of the training split: the corruption is >= 0 on about 35 % of them
    X, y = suite_tasks.smooth_data(17)
    _, y_tr, _, y_va, _, _ = suite_tasks._split(X, y, 7)
    np.testing.assert_array_equal(task.y_val, y_va)          # validation targets are clean
    err = task.y_train - y_tr
    assert (err >= 0).all() and (err <= 100).all()
    assert 0.30 < (err > 0).mean() < 0.40
    assert np.median(err[err > 0]) > 1.0                      # heavy: half-Cauchy of scale 2


def test_poisson_wide_spans_a_wide_range_of_rates():
    task = suite_tasks.poisson_wide()
    assert task.steps == 500 and task.grad_clip == 1.0 and task.direction == "min"
    counts = np.concatenate([task.y_train, task.y_val])
    assert counts.max() > 150 and (counts <= 2).mean() > 0.05


def test_new_suite_entries_resolve():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import rediscovery

    for name in ("heavy_tailed_noise", "poisson_deviance_long", "poisson_wide"):
        task = rediscovery.suite_task(name)
        assert task.name == name
        assert rediscovery.known_expression(name, task) is not None


def test_pool_summarises_records_of_earlier_invocations(tmp_path):
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import rediscovery

    def rec(task, strategy, seed, found):
        return {"task": task, "strategy": strategy, "seed": seed, "reference": "quantile", "params": {"q": 0.25},
                "reference_error": 1.0, "eval_seeds": 2, "found_at": 10 if found else None, "candidates": 80,
                "found_expr": "x" if found else None, "best_error": 1.0 if found else 1.1, "best_expr": "x",
                "gen0_share": 0.0, "wall_s": 1.0}

    a = [rec("t1", s, seed, s == "gp") for s in ("gp", "random") for seed in (0, 1)]
    b = [rec("t2", s, seed, s == "gp" or seed == 0) for s in ("gp", "random") for seed in (0, 1)]
    b.append(rec("t2", "gp", 2, True))          # no random run for seed 2: left out
    b.append(rec("t3", "gp", 0, True))          # a task not asked for: left out
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b + a[:1]))   # a duplicate record counts once
    out = tmp_path / "pooled"
    rediscovery.main(["--pool", f"{tmp_path / 'a.json'},{tmp_path / 'b.json'}", "--tasks", "t1,t2",
                      "--strategies", "gp,random", "--seeds", "3", "--out", str(out)])
    md = (tmp_path / "pooled.md").read_text()
    assert "gp 4/4, random 1/4" in md
    assert len(json.loads((tmp_path / "pooled.json").read_text())) == 8
    with pytest.raises(SystemExit, match="missing.json"):
        rediscovery.main(["--pool", str(tmp_path / "missing.json"), "--out", str(out)])


def test_heavy_tailed_symmetric_errors_are_symmetric_on_half_the_targets():
    task = suite_tasks.heavy_tailed_symmetric()
    X, y = suite_tasks.smooth_data(17)
    _, y_tr, _, y_va, _, _ = suite_tasks._split(X, y, 7)
    np.testing.assert_array_equal(task.y_val, y_va)
    err = task.y_train - y_tr
    assert 0.45 < (err != 0).mean() < 0.55
    assert 0.4 < (err[err != 0] > 0).mean() < 0.6
