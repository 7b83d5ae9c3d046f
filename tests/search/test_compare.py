"""compare(): real training over seeds, statistics checked against scipy on the raw CSV, files, CLI."""
from __future__ import annotations

import csv
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from lossforge.losses import CompareError, Loss
from lossforge.search.compare import compare, interval, paired_tests, rank
from lossforge.primitives import parse

SEEDS = 3
STEPS = 30


class _DivergesOnSeedOne(nn.Module):
    """Cross-entropy that turns NaN after a few steps in every third model built (seed 1 of 0, 1, 2):
    a real loss module that diverges on some seeds only."""

    built = 0

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction
        self.poisoned = type(self).built % 3 == 1
        type(self).built += 1
        self.calls = 0

    def forward(self, input, target):
        self.calls += 1
        out = F.cross_entropy(input, target, reduction="none")
        return out * float("nan") if self.poisoned and self.calls > 3 else out


DIVERGING = Loss(name="diverges_on_seed_1", kind="discovered", family="test", formula="CE, NaN on seed 1", params={},
                 reference="test", expr=None, space=None, input="logits", target="index",
                 task_kinds=("multiclass",), module_factory=_DivergesOnSeedOne)
UNBOUND = parse("c0*(p - y)**2")  # cannot compile: an error on every seed


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: the per-test single-thread fixture is not active yet
    _DivergesOnSeedOne.built = 0
    try:
        cmp = compare(["digits", "breast_cancer"], ["focal", "mse", DIVERGING, UNBOUND, "cross_entropy"],
                      seeds=SEEDS, steps=STEPS, out=out)
    finally:
        torch.set_num_threads(threads)
    return cmp, out


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _f(text):
    return math.nan if text == "" else float(text)


def _close(a, b):
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_cells_not_applicable_are_na_not_crashes(result):
    cmp, out = result
    assert not cmp.cell("digits", "mse").applicable
    assert not cmp.cell("breast_cancer", "cross_entropy").applicable
    assert not cmp.cell("breast_cancer", "focal").applicable
    assert cmp.cell("breast_cancer", str(UNBOUND)).applicable  # an expression trains every kind
    table = cmp.table()
    assert "n/a" in table
    md = (out / "compare.md").read_text()
    assert "| mse | n/a |" in md
    raw = _read(out / "compare.csv")
    assert not [r for r in raw if r["loss"] == "mse"]  # n/a cells are not trained


def test_the_baseline_is_trained_even_if_not_listed(result):
    cmp, _ = result
    assert cmp.baselines == {"digits": "cross_entropy", "breast_cancer": "bce_with_logits"}
    base = cmp.cell("breast_cancer", "bce_with_logits")
    assert base.is_baseline and base.added and base.n_ok == SEEDS
    assert cmp.cell("digits", "cross_entropy").is_baseline and not cmp.cell("digits", "cross_entropy").added
    assert "bce_with_logits" not in cmp.losses


def test_failures_are_counted_and_shown(result):
    cmp, out = result
    div = cmp.cell("digits", "diverges_on_seed_1")
    assert (div.n_ok, div.n_diverged, div.n_error) == (SEEDS - 1, 1, 0)
    assert div.seeds_ok == [0, 2]
    bad = cmp.cell("digits", str(UNBOUND))
    assert (bad.n_ok, bad.n_error) == (0, SEEDS) and math.isnan(bad.mean) and bad.rank is None
    assert any("unbound" in e for e in bad.errors)
    assert "1 diverged" in cmp.table() and f"{SEEDS} error" in cmp.table()
    statuses = {(r["loss"], r["seed"]): r["status"] for r in _read(out / "compare.csv") if r["task"] == "digits"}
    assert statuses[("diverges_on_seed_1", "1")] == "diverged"
    assert statuses[("diverges_on_seed_1", "0")] == "ok"


def test_statistics_agree_with_scipy_on_the_raw_csv(result):
    _, out = result
    raw = _read(out / "compare.csv")
    summary = {(r["task"], r["loss"]): r for r in _read(out / "compare_summary.csv")}
    assert {r["seed"] for r in raw} == {str(s) for s in range(SEEDS)}  # seeds are 0..N-1
    by_cell: dict = {}
    for r in raw:
        by_cell.setdefault((r["task"], r["loss"]), {})[int(r["seed"])] = r
    checked = tested = 0
    for (task, loss), rows in by_cell.items():
        s = summary[(task, loss)]
        ok = {seed: float(r["metric"]) for seed, r in rows.items() if r["status"] == "ok"}
        values = [ok[k] for k in sorted(ok)]
        assert int(s["n_ok"]) == len(values) and int(s["n_seeds"]) == len(rows)
        if len(values) >= 2:
            mean = statistics.fmean(values)
            sd = statistics.stdev(values)
            lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sd / math.sqrt(len(values)))
            for key, want in (("mean", mean), ("sd", sd), ("ci_low", lo), ("ci_high", hi)):
                assert _close(_f(s[key]), want), (task, loss, key)
            checked += 1
        if s["baseline"] == "true" or not values:
            continue
        base_name = next(k[1] for k, v in summary.items() if k[0] == task and v["baseline"] == "true")
        base = {seed: float(r["metric"]) for seed, r in by_cell[(task, base_name)].items() if r["status"] == "ok"}
        common = sorted(set(ok) & set(base))
        a, b = [ok[k] for k in common], [base[k] for k in common]
        assert int(s["n_pairs"]) == len(common)
        assert _close(_f(s["delta"]), statistics.fmean(x - z for x, z in zip(a, b)))
        if len(common) >= 2 and any(x != z for x, z in zip(a, b)):
            assert _close(_f(s["p_ttest"]), stats.ttest_rel(a, b).pvalue)
            assert _close(_f(s["p_wilcoxon"]), stats.wilcoxon([x - z for x, z in zip(a, b)]).pvalue)
            tested += 1
        elif len(common) >= 2:  # identical results on every seed
            assert _f(s["p_ttest"]) == 1.0 and _f(s["p_wilcoxon"]) == 1.0
    assert checked >= 4 and tested >= 1


def test_ranks_follow_the_metric_direction(result):
    cmp, _ = result
    cells = [c for c in cmp.task_cells("digits") if c.rank is not None]
    best = min(cells, key=lambda c: c.rank)
    assert best.mean == max(c.mean for c in cells)  # accuracy: higher is better
    assert sorted(c.rank for c in cells) == sorted(stats.rankdata([-c.mean for c in cells], method="min"))


def test_files_are_written(result):
    _, out = result
    names = {p.name for p in out.iterdir()}
    assert {"compare.md", "compare.csv", "compare_summary.csv", "compare_digits.png",
            "compare_breast_cancer.png"} <= names
    for png in ("compare_digits.png", "compare_breast_cancer.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "compare.md").read_text()
    assert "![digits](compare_digits.png)" in md and "95%" in md and "Wilcoxon" in md
    raw = _read(out / "compare.csv")
    cells = {(r["task"], r["loss"]) for r in raw}
    assert cells == {("digits", "focal"), ("digits", "diverges_on_seed_1"), ("digits", str(UNBOUND)),
                     ("digits", "cross_entropy"), ("breast_cancer", str(UNBOUND)), ("breast_cancer", "bce_with_logits")}
    assert len(raw) == SEEDS * len(cells)  # one row per task, loss and seed


# ----------------------------------------------------------------------------- the statistics themselves
def test_interval_matches_scipy():
    values = [0.91, 0.93, 0.9, 0.95, 0.92]
    mean, sd, lo, hi = interval(values)
    want = stats.t.interval(0.95, 4, loc=statistics.fmean(values), scale=statistics.stdev(values) / math.sqrt(5))
    assert math.isclose(lo, want[0]) and math.isclose(hi, want[1]) and math.isclose(sd, statistics.stdev(values))
    assert interval([0.5])[0] == 0.5 and math.isnan(interval([0.5])[1])
    assert all(math.isnan(v) for v in interval([]))


def test_paired_tests_handle_degenerate_samples():
    assert paired_tests([0.9, 0.8, 0.7], [0.9, 0.8, 0.7]) == (0.0, 1.0, 1.0)   # identical: no difference
    delta, p_t, p_w = paired_tests([0.9, 0.8, 0.7, 0.6], [0.8, 0.7, 0.6, 0.5])  # constant difference
    assert math.isclose(delta, 0.1) and p_t < 0.001 and 0 < p_w <= 1
    delta, p_t, p_w = paired_tests([0.5, 0.5, 0.6, 0.6], [0.5, 0.6, 0.5, 0.6])  # ties and zeros
    assert delta == 0 and 0 < p_t <= 1 and (math.isnan(p_w) or 0 < p_w <= 1)
    assert all(math.isnan(v) for v in paired_tests([0.5], [0.4])[1:])
    assert all(math.isnan(v) for v in paired_tests([], []))
    assert rank({"a": 1.0, "b": 3.0, "c": 3.0, "d": math.nan}, "max") == {"b": 1.0, "c": 1.0, "a": 3.0}
    assert rank({"a": 1.0, "b": 3.0}, "min") == {"a": 1.0, "b": 2.0}


# ----------------------------------------------------------------------------- errors and the CLI
@pytest.mark.parametrize("tasks, losses, kw, needle", [
    (["digts"], ["mse"], {}, "did you mean 'digits'"),
    (["digits"], ["focall"], {}, "did you mean 'focal'"),
    (["digits"], ["focal", "focal"], {}, "twice"),
    (["digits"], ["focal"], {"seeds": 0}, "at least 1 seed"),
    (["digits"], ["focal"], {"split": "tst"}, "did you mean 'test'"),
    (["digits"], ["focal"], {"steps": -3}, "positive"),
    ([], ["focal"], {}, "no tasks"),
])
def test_bad_arguments_are_clear_errors(tasks, losses, kw, needle):
    with pytest.raises(CompareError, match=needle):
        compare(tasks, losses, **kw)


def test_cli_compare(capsys, tmp_path):
    from lossforge.search.cli import main

    from lossforge.losses import save

    store = tmp_path / "store"
    found = save("-y*(1 - p)*log(p)", task_kind="binary", directory=store)  # a discovered loss, by name
    code = main(["compare", "--tasks", "breast_cancer", "--losses", f"balanced_bce,{found}", "--seeds", "2",
                 "--steps", "20", "--out", str(tmp_path / "out"), "--store", str(store), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "balanced_bce" in captured.out and "bce_with_logits (baseline)" in captured.out and found in captured.out
    rows = _read(tmp_path / "out" / "compare.csv")
    assert {r["status"] for r in rows if r["loss"] == found} == {"ok"} and len(rows) == 3 * 2
    for argv, needle in ((["compare", "--tasks", "digts", "--losses", "mse"], "did you mean 'digits'"),
                         (["compare", "--tasks", "digits", "--losses", "crossentropy"], "did you mean 'cross_entropy'"),
                         (["compare", "--tasks", "digits", "--losses", "mse", "--split", "tset"], "did you mean 'test'")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- a loss is a name or an expression
def test_expressions_are_losses_in_compare(capsys, tmp_path):
    from lossforge.search.cli import main

    cmp = compare(["breast_cancer"], ["mse, max(p, y) - y*log(p)"], seeds=1, steps=10)  # commas inside (): one loss
    assert [c.loss for c in cmp.task_cells("breast_cancer")] == ["mse", "-y*log(p) + Max(p, y)", "bce_with_logits"]
    code = main(["compare", "--tasks", "breast_cancer", "--loss", "-y*(1 - p)*log(p)", "--loss", "(p - y)**2",
                 "--seeds", "2", "--steps", "10", "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = _read(tmp_path / "out" / "compare.csv")
    assert {r["loss"] for r in rows} == {"-y*(1 - p)*log(p)", "(p - y)**2", "bce_with_logits"}
    assert {r["status"] for r in rows} == {"ok"}


def test_a_mistyped_expression_is_the_parsers_error(capsys):
    from lossforge.primitives import GrammarError
    from lossforge.search.cli import main

    with pytest.raises(GrammarError, match=r"'\(' was never closed"):
        compare(["digits"], ["-y*log(p"], seeds=1, steps=1)
    with pytest.raises(CompareError, match="unknown loss 'focall' \\(did you mean 'focal'\\?\\)"):
        compare(["digits"], ["focall"], seeds=1, steps=1)
    assert main(["compare", "--tasks", "digits", "--loss", "-y*log(p", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "syntax error at column 7 in '-y*log(p': '(' was never closed" in err and err.count("\n") == 1
    assert main(["compare", "--tasks", "digits", "--seeds", "1"]) == 2
    assert "no losses to compare" in capsys.readouterr().err


def test_store_add_then_compare_by_name(capsys, tmp_path):
    from lossforge.search.cli import main

    store = str(tmp_path / "store")
    assert main(["store", "add", "-y*(1 - p)**2*log(p)", "--kind", "binary", "--name", "my_focal",
                 "--store", store]) == 0
    assert "stored 'my_focal'" in capsys.readouterr().out
    code = main(["compare", "--tasks", "breast_cancer", "--losses", "my_focal", "--seeds", "1", "--steps", "10",
                 "--store", store, "--quiet", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    rows = _read(tmp_path / "out" / "compare.csv")
    assert {(r["loss"], r["status"]) for r in rows} == {("my_focal", "ok"), ("bce_with_logits", "ok")}


def test_delta_interval_and_rebuilding_from_the_raw_csv(result):
    from lossforge.search.compare import from_csv

    cmp, out = result
    focal, base = cmp.cell("digits", "focal"), cmp.cell("digits", "cross_entropy")
    by_seed = dict(zip(base.seeds_ok, base.values))
    diffs = [v - by_seed[s] for s, v in zip(focal.seeds_ok, focal.values)]
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert _close(focal.delta_low, statistics.fmean(diffs) - half)
    assert _close(focal.delta_high, statistics.fmean(diffs) + half)
    again = from_csv(out / "compare.csv")
    assert again.tasks == cmp.tasks and again.seeds == cmp.seeds
    for key, cell in cmp.cells.items():
        other = again.cells.get(key)
        if other is None:  # a loss that trains no task in the file (mse here) leaves no rows
            assert not cell.applicable and key[1] == "mse"
            continue
        assert (other.applicable, other.n_ok, other.n_failed, other.rank) == \
            (cell.applicable, cell.n_ok, cell.n_failed, cell.rank)
        for name in ("mean", "ci_low", "delta", "delta_low", "p_ttest"):
            assert _close(getattr(other, name), getattr(cell, name)), (key, name)
    with pytest.raises(CompareError, match="not a compare.csv"):
        from_csv(out / "compare.md")
