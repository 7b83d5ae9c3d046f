"""The store of discovered losses: files, names, atomic saves, hostile files, module conventions."""
from __future__ import annotations

import os
import pickle
import re
import tomllib
import warnings

import pytest
import torch
import torch.nn.functional as F

from lossforge.losses import StoreError, StoreWarning, get, names, save, use_store
from lossforge.losses import store as store_module
from lossforge.losses.store import default_name, save_discovered
from lossforge.losses.storefile import to_toml
from lossforge.primitives import parse


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    monkeypatch.setenv("LOSSFORGE_STORE", str(path))
    return path


def _write(directory, name, text, mode="w"):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _valid(name, expression="-y*log(p)", task_kind="multiclass"):
    return f'format = 1\nname = "{name}"\nexpression = "{expression}"\ntask_kind = "{task_kind}"\n'


# ----------------------------------------------------------------------------- saving and finding
def test_save_then_get_and_names(store):
    name = save("-y*(1 - p)*log(p)", task_kind="multiclass", provenance={"run_id": "r1", "generation": 3},
                scores={"digits": {"metric": "accuracy", "mean": 0.9, "seeds": [7, 8]}})
    assert re.fullmatch(r"lf_[0-9a-f]{8}", name)
    assert name == default_name(parse("-y*(1 - p)*log(p)").canonical, "multiclass")
    assert (store / f"{name}.toml").is_file()
    loss = get(name)
    assert loss.kind == "discovered" and loss.name == name
    assert loss.expr == parse("-y*(1 - p)*log(p)")
    assert loss.provenance["run_id"] == "r1" and loss.provenance["generation"] == 3
    assert loss.provenance["scores"]["digits"]["seeds"] == [7, 8]
    assert name in names(kind="discovered")
    assert name not in names(kind="reference")
    assert name in names()
    record = tomllib.loads((store / f"{name}.toml").read_text())
    assert record["expression"] == "-y*(1 - p)*log(p)" and record["complexity"] == parse(record["expression"]).complexity


def test_two_saves_of_the_same_loss_make_one_file(store):
    first = save("-y*(1 - p)*log(p)", task_kind="multiclass", provenance={"run_id": "first"})
    before = (store / f"{first}.toml").read_bytes()
    # the same loss, written differently: same canonical form, same name, nothing rewritten
    second = save("-(1 - p)*y*log(p)", task_kind="multiclass", provenance={"run_id": "second"})
    assert second == first
    assert sorted(p.name for p in store.iterdir() if p.suffix == ".toml") == [f"{first}.toml"]
    assert (store / f"{first}.toml").read_bytes() == before


def test_the_module_convention_is_part_of_the_name(store):
    multi = save("-y*log(p)", task_kind="multiclass")
    binary = save("-y*log(p)", task_kind="binary")
    assert multi != binary
    assert get(binary).target == "binary" and get(multi).target == "index"


def test_a_name_holding_a_different_loss_is_not_overwritten(store):
    save("(p - y)**2", task_kind="regression", name="mine")
    before = (store / "mine.toml").read_bytes()
    with pytest.raises(StoreError, match="mine.toml already holds a different loss"):
        save("abs(p - y)", task_kind="regression", name="mine")
    assert (store / "mine.toml").read_bytes() == before
    assert save("(p - y)**2", task_kind="regression", name="mine") == "mine"  # same loss: fine
    save("abs(p - y)", task_kind="regression", name="mine", overwrite=True)
    assert get("mine").expr == parse("abs(p - y)")


def test_an_automatic_name_taken_by_another_loss_gets_a_longer_one(store):
    canonical = parse("abs(p - y)").canonical
    taken = default_name(canonical, "regression")
    # a hand-edited file sits where this loss would go
    path = _write(store, taken, _valid(taken, "(p - y)**2", "regression"))
    before = path.read_bytes()
    name = save("abs(p - y)", task_kind="regression")
    assert name == default_name(canonical, "regression", 12) and name != taken
    assert path.read_bytes() == before
    assert get(name).expr == parse("abs(p - y)") and get(taken).expr == parse("(p - y)**2")


def test_a_crash_during_save_leaves_no_partial_file(store, monkeypatch):
    kept = save("(p - y)**2", task_kind="regression", name="kept")
    before = (store / "kept.toml").read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash)
        with pytest.raises(StoreError, match="nothing was changed"):
            save("abs(p - y)", task_kind="regression")
        with pytest.raises(StoreError):
            save("abs(p - y)", task_kind="regression", name="kept", overwrite=True)
    assert sorted(p.name for p in store.iterdir() if p.name != ".lock") == [f"{kept}.toml"]  # no temp files
    assert (store / "kept.toml").read_bytes() == before
    assert get("kept").expr == parse("(p - y)**2")


def test_save_refuses_unbound_constants_and_reference_names(store):
    with pytest.raises(StoreError, match="c0"):
        save("c0*(p - y)**2", task_kind="regression")
    with pytest.raises(StoreError, match="reference"):
        save("(p - y)**2", task_kind="regression", name="mse")
    with pytest.raises(StoreError, match="task_kind"):
        save("(p - y)**2", task_kind="classification")


def test_constants_are_stored_as_params(store):
    name = save("c0*(p - y)**2 + abs(p - y)", task_kind="regression", params={"c0": 0.5})
    loss = get(name)
    assert loss.params == {"c0": 0.5}
    assert loss.expr == parse("0.5*(p - y)**2 + abs(p - y)")
    assert loss.expression(c0=2.0) == parse("2*(p - y)**2 + abs(p - y)")
    x, t = torch.randn(6), torch.randn(6)
    assert torch.allclose(loss.module(c0=2.0, reduction="none")(x, t), 2 * (x - t) ** 2 + (x - t).abs())
    clone = pickle.loads(pickle.dumps(loss))  # Ray ships losses to workers
    assert clone.expr == loss.expr and clone.expression(c0=2.0) == loss.expression(c0=2.0)


# ----------------------------------------------------------------------------- where the store is
def test_the_environment_variable_and_use_store(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("LOSSFORGE_STORE", str(a))
    name = save("abs(p - y)**3", task_kind="regression")
    assert (a / f"{name}.toml").is_file()
    monkeypatch.setenv("LOSSFORGE_STORE", str(b))
    assert name not in names(kind="discovered")
    with use_store(a):
        assert name in names(kind="discovered")
        assert store_module.store_directory() == a
    assert store_module.store_directory() == b
    other = save("abs(p - y)**3", task_kind="regression", directory=tmp_path / "c")
    assert other == name and (tmp_path / "c" / f"{name}.toml").is_file()
    monkeypatch.delenv("LOSSFORGE_STORE")
    assert store_module.store_directory() == store_module.Path("~/.lossforge/losses").expanduser()


def test_shipped_losses_are_found_and_win_over_the_user_store(tmp_path, monkeypatch, store):
    shipped = tmp_path / "shipped"
    _write(shipped, "lf_shipped", _valid("lf_shipped", "-y*log(p)"))
    monkeypatch.setattr(store_module, "SHIPPED_DIRECTORY", shipped)
    _write(store, "lf_shipped", _valid("lf_shipped", "(1 - p)*y"))  # same name, different loss
    with pytest.warns(StoreWarning, match="lf_shipped.toml"):
        found = names(kind="discovered")
    assert found.count("lf_shipped") == 1
    assert get("lf_shipped").expr == parse("-y*log(p)")


def test_the_losses_this_project_ships_all_load():
    for path in sorted(store_module.SHIPPED_DIRECTORY.glob("*.toml")):
        loss = store_module.load(path)
        assert loss.kind == "discovered" and loss.name == path.stem


# ----------------------------------------------------------------------------- hostile and broken files
HOSTILE = {
    "code": "format = 1\nname = \"{name}\"\nexpression = \"__import__('os').system('touch {marker}')\"\n"
            "task_kind = \"multiclass\"\n",
    "code_in_name": "format = 1\nname = \"__import__('os').system('touch {marker}')\"\nexpression = \"p\"\n"
                    "task_kind = \"multiclass\"\n",
    "huge_expression": "format = 1\nname = \"{name}\"\nexpression = \"" + "p + " * 3000 + "p\"\ntask_kind = \"binary\"\n",
    "deep_expression": "format = 1\nname = \"{name}\"\nexpression = \"" + "exp(" * 200 + "p" + ")" * 200
                       + "\"\ntask_kind = \"binary\"\n",
    "expression_not_a_string": "format = 1\nname = \"{name}\"\nexpression = 5\ntask_kind = \"binary\"\n",
    "complexity_wrong_type": "format = 1\nname = \"{name}\"\nexpression = \"p\"\ntask_kind = \"binary\"\n"
                             "complexity = \"seven\"\n",
    "params_wrong_type": "format = 1\nname = \"{name}\"\nexpression = \"c0*p\"\ntask_kind = \"binary\"\n"
                         "[params]\nc0 = \"x\"\n",
    "unknown_param": "format = 1\nname = \"{name}\"\nexpression = \"p\"\ntask_kind = \"binary\"\n[params]\nevil = 1\n",
    "unbound_constant": "format = 1\nname = \"{name}\"\nexpression = \"c3*p\"\ntask_kind = \"binary\"\n",
    "missing_expression": "format = 1\nname = \"{name}\"\ntask_kind = \"binary\"\n",
    "missing_task_kind": "format = 1\nname = \"{name}\"\nexpression = \"p\"\n",
    "bad_task_kind": "format = 1\nname = \"{name}\"\nexpression = \"p\"\ntask_kind = \"pickle\"\n",
    "future_format": "format = 99\nname = \"{name}\"\nexpression = \"p\"\ntask_kind = \"binary\"\n",
    "format_is_bool": "format = true\nname = \"{name}\"\nexpression = \"p\"\ntask_kind = \"binary\"\n",
    "scores_not_tables": "format = 1\nname = \"{name}\"\nexpression = \"p\"\ntask_kind = \"binary\"\nscores = 3\n",
    "name_mismatch": "format = 1\nname = \"lf_other\"\nexpression = \"p\"\ntask_kind = \"binary\"\n",
    "truncated": "format = 1\nname = \"{name}\"\nexpression = \"-y*lo",
    "not_toml": "<?xml version='1.0'?><loss/>",
    "deep_toml": "format = 1\nx = " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_bad_file_is_skipped_with_a_clear_error_and_never_executed(store, tmp_path, case):
    marker = tmp_path / "PWNED"
    good = save("-y*(1 - p)**3*log(p)", task_kind="multiclass")
    name = f"lf_bad_{case}"
    path = _write(store, name, HOSTILE[case].format(name=name, marker=marker))
    with pytest.warns(StoreWarning, match=re.escape(str(path))):
        found = names(kind="discovered")
    assert good in found and name not in found       # the other losses are unaffected
    assert get(good).name == good
    with pytest.raises(StoreError) as info:          # and the bad one says what is wrong, naming the file
        get(name)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_binary_garbage_and_oversized_files(store):
    bad_bytes = _write(store, "lf_bytes", b"\xff\xfe\x00garbage\x80", mode="wb")
    big = _write(store, "lf_big", _valid("lf_big") + "# " + "x" * 300_000 + "\n")
    with pytest.warns(StoreWarning):
        found = names(kind="discovered")
    assert "lf_bytes" not in found and "lf_big" not in found
    with pytest.raises(StoreError, match="not UTF-8"):
        get("lf_bytes")
    with pytest.raises(StoreError, match="bytes"):
        get("lf_big")
    assert bad_bytes.exists() and big.exists()  # reading never deletes anything


def test_a_file_named_like_a_reference_does_not_shadow_it(store):
    _write(store, "focal", _valid("focal", "p"))
    with pytest.warns(StoreWarning, match="reference"):
        assert "focal" not in names(kind="discovered")
    assert get("focal").kind == "reference"


def test_a_file_fixed_on_disk_is_reloaded(store):
    path = _write(store, "lf_fixme", _valid("lf_fixme", "__import__('os')"))
    with pytest.warns(StoreWarning):
        names()
    with pytest.raises(StoreError):
        get("lf_fixme")
    path.write_text(_valid("lf_fixme", "(1 - p)*y*y") + "# fixed\n")
    assert get("lf_fixme").expr == parse("(1 - p)*y**2")


def test_files_are_parsed_once_and_reread_when_they_change(store, monkeypatch):
    name = save("abs(p - y)**3", task_kind="regression")
    path = store / f"{name}.toml"
    old = 1_600_000_000_000_000_000  # long settled: the cache is trusted
    os.utime(path, ns=(old, old))
    os.utime(store, ns=(old, old))
    calls = []
    real = store_module.load_file
    monkeypatch.setattr(store_module, "load_file", lambda p: calls.append(p) or real(p))
    for _ in range(5):
        assert name in names(kind="discovered")
    assert len(calls) == 1
    path.write_text(re.sub(r'(?m)^expression = .*$', 'expression = "abs(p - y)**4"', path.read_text()))
    assert get(name).expr == parse("abs(p - y)**4")
    assert len(calls) == 2


def test_a_file_added_in_the_same_clock_tick_is_seen(store):
    save("abs(p - y)**3", task_kind="regression")
    names()  # the listing is cached now
    stamp = store.stat().st_mtime_ns
    _write(store, "lf_quick", _valid("lf_quick", "(p - y)**4", "regression"))
    os.utime(store, ns=(stamp, stamp))  # a coarse clock: the directory's mtime did not change
    assert "lf_quick" in names(kind="discovered")


def test_unknown_names_still_suggest(store):
    from lossforge.losses import LossNotFound

    with pytest.raises(LossNotFound, match="did you mean 'focal'"):
        get("focall")


# ----------------------------------------------------------------------------- module conventions
def _logits_and_labels(n=7, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


def test_a_multiclass_loss_takes_logits_and_integer_labels(store):
    text = "-y*(1 - p)**2*log(p) + (1 - y)*p**2"
    name = save(text, task_kind="multiclass")
    loss = get(name)
    assert (loss.input, loss.target, loss.task_kinds[0], loss.space) == ("logits", "index", "multiclass", "probability")
    logits, labels = _logits_and_labels()
    module = loss.module(reduction="none")
    got = module(logits, labels)
    p = torch.softmax(logits, dim=1)
    y = F.one_hot(labels, 4).to(logits.dtype)
    want = parse(text).compile()(p, y).sum(dim=1)
    assert torch.allclose(got, want)
    assert torch.allclose(loss.module()(logits, labels), want.mean())
    ce = get(save("-y*log(p)", task_kind="multiclass"))
    assert torch.allclose(ce.module(reduction="none")(logits, labels), F.cross_entropy(logits, labels, reduction="none"))
    with pytest.raises(ValueError, match="integer class indices"):
        module(logits, labels.double())


def test_a_binary_loss_takes_logits_and_01_targets(store):
    loss = get(save("-y*log(p)", task_kind="binary"))
    assert (loss.input, loss.target, loss.task_kinds[0]) == ("logits", "binary", "binary")
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, generator=g, dtype=torch.float64)
    t = (torch.rand(9, generator=g) < 0.5).double()
    want = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    assert torch.allclose(loss.module(reduction="none")(z, t), want)
    assert torch.allclose(loss.module(reduction="sum")(z, t), want.sum())


def test_a_regression_loss_takes_predictions_and_targets(store):
    loss = get(save("(p - y)**2", task_kind="regression"))
    assert (loss.input, loss.target, loss.task_kinds) == ("prediction", "value", ("regression",))
    x, t = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(loss.module(reduction="none")(x, t), F.mse_loss(x, t, reduction="none"))
    with pytest.raises(ValueError, match="shape"):
        loss.module()(x, t[:, :2])


# ----------------------------------------------------------------------------- from a search
def test_save_discovered_takes_the_convention_from_the_tasks(store):
    from lossforge.search import SearchConfig
    from lossforge.search.halloffame import Entry
    from lossforge.tasks import get as get_task

    config = SearchConfig(tasks=["breast_cancer"], generations=1, population=4, steps=40, eval_seeds=2)
    tasks = {"breast_cancer": get_task("breast_cancer")}
    meta = {"run_id": "run-42", "config_digest": config.digest(), "eval_seeds": [11, 12], "version": "0.1.0",
            "created": 1_700_000_000.0}
    entry = Entry(expr="-y*(1 - p)*log(p)", canonical=parse("-y*(1 - p)*log(p)").canonical, complexity=11,
                  fitness=0.05, scores={"breast_cancer": 0.95}, generation=3, origin="crossover")
    name = save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=config.loss_store)
    assert save_discovered(entry, config=config, meta=meta, tasks=tasks, directory=None) == name
    loss = get(name)
    assert (loss.target, loss.task_kinds[0]) == ("binary", "binary")
    prov = loss.provenance
    assert prov["run_id"] == "run-42" and prov["config_digest"] == config.digest()
    assert prov["generation"] == 3 and prov["eval_seeds"] == [11, 12] and prov["origin"] == "crossover"
    score = prov["scores"]["breast_cancer"]
    assert score == {"kind": "binary", "metric": "accuracy", "direction": "max", "mean": 0.95, "status": "ok",
                     "seeds": [11, 12], "steps": 40, "split": "val"}


def test_module_kind_of_a_search():
    from lossforge.losses.storefile import module_kind

    assert module_kind(["multiclass", "binary"]) == "multiclass"
    assert module_kind(["binary", "multiclass"]) == "multiclass"  # logits and labels serve both
    assert module_kind(["binary", "segmentation"]) == "binary"
    assert module_kind(["regression"]) == "regression"
    with pytest.raises(StoreError):
        module_kind([])


# ----------------------------------------------------------------------------- the TOML writer
def test_to_toml_round_trips_awkward_text():
    record = {
        "format": 1, "name": "lf_x", "expression": "p", "none_is_dropped": None, "flag": True, "big": 2**40,
        "x": 0.1, "nan": float("nan"), "inf": float("-inf"), "list": [1, 2, 3],
        "provenance": {"run_id": 'quote " backslash \\ newline \n tab \t del \x7f unicode é ☃',
                       "key with spaces": "v", "nested": {"deeper": [0.5, 1.5]}},
        "scores": {"task.with.dots": {"mean": 0.5}},
    }
    back = tomllib.loads(to_toml(record, header="line one\nline two"))
    assert "none_is_dropped" not in back
    assert back["provenance"] == record["provenance"]
    assert back["scores"] == record["scores"]
    assert back["big"] == 2**40 and back["flag"] is True and back["x"] == 0.1 and back["list"] == [1, 2, 3]
    assert back["inf"] == float("-inf") and back["nan"] != back["nan"]


def test_no_warning_for_a_clean_store(store):
    save("-y*log(p)", task_kind="multiclass")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names()


# ----------------------------------------------------------------------------- the user's own losses (store add/list/remove)
def test_store_add_list_remove(store, capsys):
    from lossforge.search.cli import main

    assert main(["store", "add", "-y*(1 - p)**2*log(p)", "--kind", "multiclass", "--name", "my_focal"]) == 0
    path = store / "my_focal.toml"
    record = tomllib.loads(path.read_text(encoding="utf-8"))
    assert record["expression"] == "-y*(1 - p)**2*log(p)" and record["task_kind"] == "multiclass"
    assert "nothing in it is ever executed" in path.read_text(encoding="utf-8")
    loss = get("my_focal")  # usable by name afterwards
    assert loss.kind == "discovered" and loss.expr.canonical == parse("-y*(1 - p)**2*log(p)").canonical
    assert main(["store", "add", "-y*(1 - p)**2*log(p)", "--kind", "multiclass", "--name", "my_focal"]) == 0  # again
    assert main(["store", "add", "(p - y)**2", "--kind", "regression"]) == 0  # an automatic lf_ name
    auto = default_name(parse("(p - y)**2").canonical, "regression")
    capsys.readouterr()
    assert main(["store", "list"]) == 0
    out = capsys.readouterr().out
    assert "my_focal" in out and auto in out and "-y*(1 - p)**2*log(p)" in out
    assert main(["store", "remove", "my_focal"]) == 0
    assert not path.exists() and "my_focal" not in names()
    capsys.readouterr()
    assert main(["store", "remove", "my_focal"]) == 2
    err = capsys.readouterr().err
    assert "no stored loss 'my_focal'" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, needle", [
    (["store", "add", "(p - y", "--kind", "regression"], "'(' was never closed"),
    (["store", "add", "__import__('os').system('touch PWNED')", "--kind", "binary"], "is not allowed"),
    (["store", "add", "exec(p)", "--kind", "binary"], "unknown function 'exec'"),
    (["store", "add", "(p - y)**2", "--kind", "regression", "--name", "Bad-Name"], "not a valid loss name"),
    (["store", "add", "(p - y)**2", "--kind", "regression", "--name", "huber"], "belongs to a reference loss"),
    (["store", "remove", "focal"], "no stored loss 'focal'"),
])
def test_store_refuses_bad_input(store, capsys, tmp_path, monkeypatch, argv, needle):
    from lossforge.search.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(store.glob("*.toml")) if store.exists() else True
    assert not (tmp_path / "PWNED").exists()


def test_a_stored_file_is_data_never_executed(store, capsys, tmp_path, monkeypatch):
    """A hand-edited store file with a hostile expression is refused on load; nothing runs."""
    from lossforge.search.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["store", "add", "-y*log(p)", "--kind", "multiclass", "--name", "mine"]) == 0
    path = store / "mine.toml"
    text = path.read_text(encoding="utf-8").replace('expression = "-y*log(p)"',
                                                    'expression = "__import__(\'os\').system(\'touch PWNED\')"')
    path.write_text(text, encoding="utf-8")
    store_module._SOURCE.clear()
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        assert main(["store", "list"]) == 0
        assert "mine  INVALID (skipped)" in capsys.readouterr().out
        with pytest.raises(StoreError, match="expression"):
            get("mine")
        assert main(["compare", "--tasks", "digits", "--losses", "mine", "--seeds", "1"]) == 2
    assert "mine.toml" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()
