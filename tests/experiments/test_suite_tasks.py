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
