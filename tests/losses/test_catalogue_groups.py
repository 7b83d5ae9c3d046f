"""`lossforge catalogue` grouped by input convention and family, and the entries of the new
conventions (boxes, embeddings, images, generative) in the code that iterates the catalogue."""
from __future__ import annotations

import numpy as np
import pytest

from lossforge.losses import CatalogueError, catalogue_table, get, names
from lossforge.losses.loss import CONVENTIONS, INPUTS

NEW = {
    "boxes": ["iou", "giou", "diou", "ciou", "eiou", "siou", "alpha_iou"],
    "metric": ["contrastive", "cosine_embedding", "triplet", "nt_xent", "info_nce", "arcface", "cosface", "center",
               "text_image_matching"],
    "image": ["ssim", "ms_ssim", "psnr", "gradient_difference", "style", "perceptual"],
    "generative": ["gan_bce", "lsgan", "wgan", "hinge_gan", "vae_kl", "cycle_consistency", "noise_prediction"],
    "classification": ["gini_impurity", "weighted_ce", "label_smoothing_ce", "ghm_c", "zero_one",
                       "sensitivity_specificity"],
}
ALL_NEW = [n for group in NEW.values() for n in group]


def test_at_least_thirty_new_entries_with_citations():
    reference = names(kind="reference")
    assert len(ALL_NEW) >= 30 and not set(ALL_NEW) - set(reference)
    for name in ALL_NEW:
        loss = get(name)
        assert loss.reference and loss.formula and loss.notes or loss.expr is not None
    assert set(CONVENTIONS) == set(INPUTS)


def test_table_groups_by_convention_and_family_and_fits_100_columns():
    table = catalogue_table()
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "params" in lines[0] and "formula" in lines[0] and "search" in lines[0]
    sections = [line for line in lines if line.startswith("== ")]
    assert [s.split(":")[0][3:] for s in sections] == ["p, y", "boxes", "embeddings", "images", "generative"]
    for name in names():
        assert f"\n{name} " in table
    # the convention sections hold their entries, and each entry says whether the grammar can search it
    boxes = table[table.index("== boxes"):table.index("== embeddings")]
    assert all(f"\n{n} " in boxes for n in NEW["boxes"]) and "\nmse " not in boxes
    row = {line.split()[0]: line for line in lines if line and not line.startswith((" ", "=", "-"))}
    assert row["mse"].split()[2] == "grammar" and row["giou"].split()[2] == "ref-only"
    assert row["dice"].split()[2] == "ref-only" and row["label_smoothing_ce"].split()[2] == "ref-only"
    assert "-- metric (9) --" in table
    searchable = sum(get(n).expr is not None for n in names())
    assert f"{len(names())} losses: {searchable} searchable by the grammar" in table


def test_family_and_convention_filters():
    boxes = catalogue_table(family="boxes")
    assert "\ngiou " in boxes and "\nmse " not in boxes and "7 losses: 0 searchable" in boxes
    images = catalogue_table(convention="images")
    assert "\nssim " in images and "\nstyle " in images and "\ngan_bce " not in images
    assert "no reference boxes losses" in catalogue_table(kind="reference", convention="boxes", family="multiclass")
    with pytest.raises(CatalogueError, match="did you mean 'images'"):
        catalogue_table(convention="image")


def test_cli_family_and_convention(capsys):
    from lossforge.search.cli import main

    assert main(["catalogue", "--family", "metric"]) == 0
    out = capsys.readouterr().out
    assert "\ntriplet " in out and "\nhuber " not in out and max(map(len, out.splitlines())) <= 100
    assert main(["catalogue", "--convention", "generative"]) == 0
    out = capsys.readouterr().out
    assert "\nvae_kl " in out and "\ncycle_consistency " in out and "\nssim " not in out
    assert main(["catalogue", "--convention", "nope"]) == 2
    assert "unknown input convention" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_tasks():
    from lossforge.tasks import Task

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    return {
        "multiclass": Task.from_arrays(X, np.arange(60) % 3, X, np.arange(60) % 3, kind="multiclass"),
        "binary": Task.from_arrays(X, np.arange(60) % 2, X, np.arange(60) % 2, kind="binary"),
        "regression": Task.from_arrays(X, X[:, 0], X, X[:, 0], kind="regression"),
    }


@pytest.mark.parametrize("name", [n for n in ALL_NEW if get(n).convention != "p, y" or n == "gini_impurity"])
def test_new_conventions_do_not_apply_to_the_p_y_tasks(name, small_tasks):
    loss = get(name)
    for kind, task in small_tasks.items():
        (result,) = task.evaluate([loss], steps=2)
        assert result.status == "error", (name, kind, result)
        assert ("tasks, not a" in result.error and kind in result.error) or "expected input in" in result.error, \
            result.error


@pytest.mark.parametrize("name", ["weighted_ce", "label_smoothing_ce", "ghm_c", "zero_one"])
def test_new_p_y_entries_train_on_their_task_kind(name, small_tasks):
    loss = get(name)
    task = small_tasks[loss.task_kinds[0]]
    (result,) = task.evaluate([loss], steps=3)
    assert result.status == "ok", result
