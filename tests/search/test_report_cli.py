"""`lossforge report` and the search -> store -> export path, on one small real run."""
from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from lossforge.losses import get, use_store
from lossforge.losses.store import save_discovered
from lossforge.search.report import loss_curves, report, shapes_plot

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    from .report_run import shared_run

    return shared_run(tmp_path_factory)


def test_report_writes_figures_and_markdown(search, tmp_path):
    result, config, _ = search
    rep = report(result.run_dir, out=tmp_path / "rep")
    names = {p.name for p in rep.files}
    assert names == {"fitness.png", "filters.png", "pareto.png", "shapes.png", "report.md", "report.html"}
    for path in rep.figures:
        assert path.read_bytes()[:8] == PNG
    md = rep.markdown.read_text()
    assert result.run_id in md
    for image in ("fitness.png", "filters.png", "pareto.png", "shapes.png"):
        assert f"]({image})" in md
    assert f"`{result.hall_of_fame[0].expr}`" in md  # the best loss is listed
    assert "cross_entropy" in md                     # with the baseline it was measured against
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \| ", line)]
    # one row per generation, and one per batch of constant tuning
    assert len([r for r in rows if r.count("|") > 10]) == config.generations + 1
    best = f"{result.generations[-1]['best']:.4f}"
    assert best in md


def test_report_defaults_to_the_run_directory(search, capsys):
    from lossforge.search.cli import main

    result, _, _ = search
    assert main(["report", str(result.run_dir)]) == 0
    out = capsys.readouterr().out
    assert (result.run_dir / "report" / "report.md").exists()
    assert "report.md" in out and result.run_id in out


def test_report_errors_are_one_line(tmp_path, capsys):
    from lossforge.search.cli import main

    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    for argv, needle in ((["report", str(tmp_path / "nope")], "does not exist"),
                         (["report", str(tmp_path / "empty")], "not a lossforge run directory"),
                         (["report", str(broken)], "corrupt")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_report_of_a_moved_run_directory(search, tmp_path):
    import shutil

    result, _, _ = search
    moved = tmp_path / "moved"
    shutil.copytree(result.run_dir, moved, ignore=shutil.ignore_patterns("report", ".lock"))
    meta = json.loads((moved / "run.json").read_text())
    meta["store"] = "sqlite:///" + str(tmp_path / "gone" / "runs.db")  # the recorded path no longer exists
    (moved / "run.json").write_text(json.dumps(meta))
    rep = report(moved)
    assert rep.out == moved / "report" and rep.markdown.exists()


def test_loss_shapes():
    x, curves = loss_curves("-y*log(p)", "probability")
    assert set(curves) == {"y=1", "y=0"}
    assert torch.allclose(torch.tensor(curves["y=1"]), -torch.log(torch.tensor(x)))
    assert all(v == 0 for v in curves["y=0"])
    x, curves = loss_curves("(p - y)**2", "real")
    assert set(curves) == {"y=0"} and torch.allclose(torch.tensor(curves["y=0"]), torch.tensor(x) ** 2)


def test_regression_shapes_plot(tmp_path):
    path = shapes_plot(["abs(p - y)", "log(1 + (p - y)**2)"], "real", tmp_path / "shapes.png")
    assert path.read_bytes()[:8] == PNG


def test_the_best_loss_goes_to_the_store_and_exports(search, tmp_path, capsys):
    from lossforge.search.cli import main
    from lossforge.tasks import get as get_task

    result, config, base = search
    store = base / "store"
    meta = json.loads((result.run_dir / "run.json").read_text())
    tasks = {t: get_task(t) for t in config.tasks}
    entry = result.hall_of_fame[0]
    name = save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=config.loss_store)
    assert save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=config.loss_store) == name
    assert len(list(store.glob("*.toml"))) == len(set(result.saved) | {name})
    with use_store(store):
        loss = get(name)
        for saved in result.saved:  # what the search saved itself (entries that beat the baseline)
            assert get(saved).provenance["run_id"] == result.run_id
    assert loss.kind == "discovered" and loss.expr.canonical == entry.canonical
    assert loss.provenance["run_id"] == result.run_id
    assert loss.provenance["config_digest"] == meta["config_digest"]
    assert loss.provenance["scores"]["digits"]["seeds"] == meta["eval_seeds"]
    assert (loss.input, loss.target) == ("logits", "index")
    target = tmp_path / "best_loss.py"
    assert main(["export", name, "--store", str(store), "-o", str(target)]) == 0
    capsys.readouterr()
    spec = importlib.util.spec_from_file_location("best_loss_export", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logits, labels = torch.randn(5, 10, dtype=torch.float64), torch.randint(0, 10, (5,))
    want = loss.module(reduction="none")(logits, labels)
    assert torch.allclose(getattr(module, f"{name}_loss")(logits, labels, reduction="none"), want)
    if result.saved:
        with use_store(store):
            rep = report(result.run_dir, out=tmp_path / "with_store")
        assert result.saved[0] in rep.markdown.read_text()


def test_export_an_expression(tmp_path, capsys):
    from lossforge.search.cli import main

    target = tmp_path / "sq.py"
    assert main(["export", "(p - y)**2", "--kind", "regression", "-o", str(target)]) == 0
    spec = importlib.util.spec_from_file_location("sq_export", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    p, y = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    assert torch.allclose(module.custom_loss(p, y, reduction="none"), (p - y) ** 2)
    assert main(["export", "-y*log(p)", "--kind", "binary", "--format", "latex"]) == 0  # a leading '-' is a value
    assert "\\log" in capsys.readouterr().out
    for argv, needle in ((["export", "(p - y", "--kind", "regression"], "'(' was never closed"),
                         (["export", "(p - y)**2"], "needs --kind"),
                         (["export", "hubr"], "unknown loss 'hubr' (did you mean 'huber'?)")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err
