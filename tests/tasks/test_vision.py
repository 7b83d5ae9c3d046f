"""The structured tasks of tasks/vision.py: boxes (box regression) and embeddings (metric learning)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lossforge.losses import get as get_loss
from lossforge.tasks import get, names
from lossforge.tasks.vision import (ANCHOR, StructuredTask, boxes_to_deltas, deltas_to_boxes, make_box_images,
                                    mean_iou, recall_at_1)


def test_generated_box_images_hold_their_box():
    images, boxes = make_box_images(50, seed=3, noise=0.0)
    assert images.shape == (50, 1, 24, 24) and boxes.shape == (50, 4)
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= 1
    again, _ = make_box_images(50, seed=3, noise=0.0)
    assert np.array_equal(images, again)
    yy, xx = np.mgrid[0:24, 0:24] + 0.5
    for img, (x1, y1, x2, y2) in zip(images[:, 0], boxes * 24):
        inside = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
        # the object (intensity >= 0.6) fills a large part of its box and nothing outside it
        assert img[inside].mean() - img[~inside].mean() > 0.2  # an ellipse fills pi/4 of its box
        margin = (xx < x1 - 1) | (xx > x2 + 1) | (yy < y1 - 1) | (yy > y2 + 1)
        assert np.abs(img[margin] - np.median(img[margin])).max() < 0.75  # only the faint shading


def test_deltas_round_trip_and_the_anchor_is_zero():
    _, boxes = make_box_images(20, seed=1)
    b = torch.tensor(boxes, dtype=torch.float64)
    torch.testing.assert_close(deltas_to_boxes(boxes_to_deltas(b)), b)
    cx, cy, w, h = ANCHOR
    anchor = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], dtype=torch.float64)
    torch.testing.assert_close(boxes_to_deltas(anchor), torch.zeros(1, 4, dtype=torch.float64))


def test_metrics():
    b = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    assert mean_iou(b, b) == pytest.approx(1.0)
    assert mean_iou(torch.tensor([[1.0, 1, 3, 3], [2, 2, 1, 1]]), b) == pytest.approx((1 / 7 + 0) / 2)
    e = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]])
    assert recall_at_1(e, torch.tensor([0, 0, 1, 1])) == 1.0
    assert recall_at_1(e, torch.tensor([0, 1, 0, 1])) == 0.0


def test_tasks_are_registered_with_their_baselines():
    assert {"boxes", "embeddings"} <= set(names())
    boxes, emb = get("boxes"), get("embeddings")
    assert isinstance(boxes, StructuredTask) and boxes.baseline == "smooth_l1" and boxes.metric == "mean_iou"
    assert emb.baseline == "contrastive" and emb.metric == "recall@1" and emb.direction == "max"
    assert set(np.unique(emb.y_train)) == set(range(7)) and set(np.unique(emb.y_test)) == {7, 8, 9}
    assert boxes.fingerprint() == get("boxes").fingerprint()


def test_box_losses_and_expressions_train_the_boxes_task_and_others_do_not_apply():
    t = get("boxes")
    losses = [get_loss(n) for n in ("smooth_l1", "giou", "ciou", "siou", "cross_entropy", "contrastive")] + ["(p-y)**2"]
    res = t.evaluate(losses, seed=0, steps=60, split="test")
    ok = {r.loss: r.metric for r in res if r.ok}
    assert set(ok) == {"smooth_l1", "giou", "ciou", "siou", "(p-y)**2"}
    assert all(0.3 < v < 1 for v in ok.values()), ok
    errors = {r.loss: r.error for r in res if not r.ok}
    assert "not the boxes task" in errors["cross_entropy"] and "not the boxes task" in errors["contrastive"]


def test_results_do_not_depend_on_the_neighbours():
    t = get("boxes")
    alone = t.evaluate([get_loss("giou")], seed=1, steps=30)[0].metric
    together = t.evaluate([get_loss("diou"), get_loss("giou"), "(p-y)**2"], seed=1, steps=30)[1].metric
    assert together == pytest.approx(alone, abs=1e-4)
    other_seed = t.evaluate([get_loss("giou")], seed=2, steps=30)[0].metric
    assert other_seed != alone


def test_metric_losses_train_the_embeddings_task():
    t = get("embeddings")
    names_ = ["contrastive", "triplet", "cosine_embedding", "nt_xent", "info_nce", "arcface", "cosface", "center",
              "text_image_matching"]
    res = t.evaluate([get_loss(n) for n in names_] + [get_loss("mse"), "(p-y)**2"], seed=0, steps=60, split="test")
    ok = {r.loss: r.metric for r in res if r.ok}
    assert set(ok) == set(names_), res
    chance = 1 / 3
    assert all(v > chance + 0.2 for v in ok.values()), ok  # far better than chance on unseen digits
    assert not res[-1].ok and "does not apply" in res[-1].error
    assert "not the embeddings task" in res[-2].error


def test_a_diverging_loss_is_isolated():
    t = get("boxes")
    res = t.evaluate(["(1000000*p)**6*exp(30)*exp(30)", get_loss("giou")], seed=0, steps=5)
    assert res[0].status == "diverged" and res[1].ok and math.isfinite(res[1].metric)


def test_a_search_on_a_structured_task_is_one_clear_config_error():
    from lossforge.search import SearchConfig
    from lossforge.search.errors import ConfigError

    with pytest.raises(ConfigError, match="grammar cannot search it yet.*lossforge compare --tasks boxes"):
        SearchConfig(tasks=["boxes"])
