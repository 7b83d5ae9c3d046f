import math

import pytest

from lossforge.primitives import parse
from lossforge.search.filters import CandidateFilter, direct_optimisation_fails
from lossforge.search.fitness import FAILED_SCORE, aggregate, task_score
from lossforge.search.halloffame import Entry, HallOfFame, pareto_front


@pytest.fixture
def clf():
    return CandidateFilter({"multiclass"})


@pytest.mark.parametrize("text, status", [
    ("-y*log(p)", "ok"),
    ("(p-y)**2", "ok"),
    ("p**2", "no_target"),
    ("y**2 + y", "constant"),
    ("y*p", "wrong_gradient"),
    ("y/p", "ok"),  # like 1/p: pushes the true class up
    ("-y/p", "wrong_gradient"),
])
def test_classification_filter_verdicts(clf, text, status):
    assert clf.check(parse(text), {}).status == status


def test_regression_filter_rejects_what_does_not_fit_targets():
    f = CandidateFilter({"regression"})
    assert f.check(parse("(p-y)**2"), {}).status == "ok"
    assert f.check(parse("abs(p-y)"), {}).status == "ok"
    assert f.check(parse("-y*log(p)"), {}).status == "wrong_gradient"
    assert f.check(parse("-y*p"), {}).status == "direct_check"


def test_non_finite_candidates_are_rejected():
    f = CandidateFilter({"regression"})
    # (exp(30) + 1)**6 overflows float32 even though exp itself is clamped.
    assert f.check(parse("(exp(p - y) + 1)**6"), {}).status == "non_finite"


def test_duplicates_by_canonical_form_and_by_behaviour(clf):
    seen = {}
    first = parse("-y*log(p)")
    assert clf.check(first, seen).status == "ok"
    seen[first.canonical] = first.canonical
    assert clf.check(parse("-log(p)*y"), seen).status == "duplicate"
    v = clf.check(parse("-y*log(p**2)/2"), seen)
    assert v.status == "fingerprint_duplicate" and v.duplicate_of == first.canonical
    state = clf.state()
    again = CandidateFilter({"multiclass"})
    again.load_state(state)
    assert again.check(parse("-y*log(p**2)/2"), {}).status == "fingerprint_duplicate"


def test_direct_check_passes_real_losses_and_fails_useless_ones():
    assert direct_optimisation_fails(parse("-y*log(p)").compile(), "multiclass") == ""
    assert direct_optimisation_fails(parse("-y*log(p)").compile(), "binary") == ""
    assert direct_optimisation_fails(parse("abs(p-y)").compile(), "regression") == ""
    assert "accuracy" in direct_optimisation_fails(parse("y*p").compile(), "multiclass")


def test_task_scores_are_log_error_ratios_against_the_baseline():
    assert task_score(0.95, 0.95, "max") == 0.0
    assert task_score(0.96, 0.95, "max") == pytest.approx(math.log(0.05 / 0.04))
    assert task_score(2.0, 4.0, "min") == pytest.approx(math.log(2.0))
    assert task_score(1.0, 0.99, "max") == pytest.approx(0.0)  # error floored at 0.01
    assert task_score(None, 0.9, "max") == FAILED_SCORE
    assert aggregate({"a": 1.0, "b": -1.0, "c": 0.5}, "mean") == pytest.approx(0.5 / 3)
    assert aggregate({"a": 1.0, "b": -1.0, "c": 0.5}, "min") == -1.0
    assert aggregate({"a": 1.0, "b": -1.0, "c": 0.5}, "median") == 0.5


def _e(c, f, k):
    return Entry(expr=c, canonical=c, complexity=k, fitness=f)


def test_pareto_front_and_hall_of_fame():
    entries = [_e("a", 0.1, 3), _e("b", 0.3, 5), _e("c", 0.2, 6), _e("d", 0.5, 9), _e("e", 0.05, 2)]
    front = pareto_front(entries)
    assert [e.canonical for e in front] == ["e", "a", "b", "d"]
    hof = HallOfFame(3)
    hof.update(entries)
    assert [e.canonical for e in hof.entries] == ["d", "b", "c"]
    hof.update([_e("d", 0.5, 9)])  # a duplicate does not take two places
    assert [e.canonical for e in hof.entries] == ["d", "b", "c"]
    csv_text = hof.to_csv(["digits"])
    assert csv_text.splitlines()[0].startswith("rank,expr,complexity,fitness,digits")
