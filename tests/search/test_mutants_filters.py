"""Candidate filters: every rejection reason with its message, the non-finite
gradient check, the dedup switches and caches, and the direct check pinned on
its first steps (so the optimiser it writes out is the one documented)."""
import pytest
import torch

from lossforge.primitives import parse
from lossforge.search.filters import (REASONS, CandidateFilter, Verdict, _non_finite, count_reasons,
                                      direct_optimisation_fails)


@pytest.mark.parametrize("kinds, text, status, detail", [
    # value finite in float32 (3.09e38 < 3.4e38) but dL/dp = 6 * 3.09e38 / p overflows
    ({"multiclass"}, "-y*log(p) + (2.6*1e6*p)**6", "non_finite",
     "non-finite gradient on the probability domain (float32)"),
    ({"binary"}, "-y*log(p) + (2.6*1e6*p)**6", "non_finite", "non-finite gradient on the probability domain (float32)"),
    ({"regression"}, "(p-y)**2 + (1e6*p)**6", "non_finite", "non-finite value on the real domain (float32)"),
    ({"multiclass"}, "c0*(p-y)**2", "invalid", "unbound constants c0"),
    ({"multiclass"}, "max(p, 2) * y", "constant", "zero gradient everywhere on the probability domain"),
    ({"multiclass"}, "y + 1", "constant", "does not depend on the prediction p"),
    ({"multiclass"}, "p + 2", "no_target", "does not depend on the target y"),
    ({"binary"}, "y*p", "wrong_gradient", "dL/dp is not lower for the true class than for the others"),
    ({"regression"}, "-(p-y)**2", "wrong_gradient", "dL/dp does not point away from the target"),
    ({"regression"}, "-y*p", "direct_check",
     "its minimum over the prediction lies at the edge of [-6, 6] (unbounded below or flat on one side)"),
    ({"regression"}, "(p-2*y)**2", "direct_check",
     "its minimisers over the prediction miss the targets (MSE 1.5 vs 1.5 at p = 0)"),
    ({"regression"}, "(p-y)**2*1e6*1e6", "ok", ""),
    ({"regression"}, "(p-y)**2 + p", "ok", ""),
    ({"segmentation"}, "-y*log(p)", "ok", ""),
    ({"multiclass", "regression"}, "(p-y)**2", "ok", ""),
    ({"multiclass", "regression"}, "-y*log(p)", "wrong_gradient", "dL/dp does not point away from the target"),
])
def test_verdicts_and_their_messages(kinds, text, status, detail):
    v = CandidateFilter(kinds).check(parse(text), {})
    assert (v.status, v.detail, v.duplicate_of) == (status, detail, None)


def test_spaces_follow_the_kinds():
    assert CandidateFilter({"segmentation"}).spaces == ["probability"]
    assert CandidateFilter({"binary", "multiclass"}).spaces == ["probability"]
    assert CandidateFilter({"regression", "multiclass"}).spaces == ["probability", "real"]
    assert CandidateFilter({"regression"}).spaces == ["real"]


def test_none_is_invalid_and_seen_is_optional():
    f = CandidateFilter({"multiclass"})
    assert f.check(None) == Verdict("invalid", "not a valid expression")
    assert f.check(parse("-y*log(p)")) == Verdict("ok")
    assert f.check(parse("-y*log(p)"), {"other": "other"}) == Verdict("ok")


def test_switches_turn_the_dedup_and_the_direct_check_off():
    f = CandidateFilter({"multiclass"}, fingerprint_dedup=False)
    assert f.check(parse("-y*log(p)"), {}).status == "ok"
    assert f.check(parse("-y*log(p**2)/2"), {}).status == "ok"
    assert f.fingerprints == {}
    assert CandidateFilter({"regression"}, direct_check=False).check(parse("-y*p"), {}).status == "ok"
    # the steps reach the direct check: one Adam step is not enough for cross-entropy
    assert CandidateFilter({"multiclass"}, direct_check_steps=1).check(parse("-y*log(p)"), {}).status == "direct_check"


def test_fingerprint_cache_keeps_the_first_and_spans_spaces():
    f = CandidateFilter({"multiclass", "regression"})
    assert f.check(parse("(p-y)**2"), {}).status == "ok"
    (key,) = f.fingerprints
    assert key.count("|") == 1 and f.fingerprints[key] == parse("(p-y)**2").canonical
    v = f.check(parse("(y-p)**2"), {})  # the same canonical form is not its own duplicate
    assert v.status == "ok"
    assert f.state() == {"fingerprints": f.fingerprints} and f.state()["fingerprints"] is not f.fingerprints
    g = CandidateFilter({"multiclass", "regression"})
    g.load_state({})
    assert g.fingerprints == {}


def test_verdict_cache_is_shared_by_viable_and_check(monkeypatch):
    f = CandidateFilter({"multiclass"})
    calls = []
    real = f._reject
    monkeypatch.setattr(f, "_reject", lambda e: calls.append(e.canonical) or real(e))
    assert f.viable(parse("-y*log(p)")) is True
    assert f.viable(parse("y*p")) is False
    assert f.check(parse("-log(p)*y"), {}).status == "ok"
    assert f.check(parse("y*p"), {}).status == "wrong_gradient"
    assert calls == [parse("-y*log(p)").canonical, parse("y*p").canonical]


def test_non_finite_check_grids_and_a_program_that_raises():
    def boom(p, y):
        raise RuntimeError("boom")

    assert _non_finite(boom, "probability") == "raises on the probability domain: boom"
    assert _non_finite(lambda p, y: (p - y) ** 2, "real") == ""

    def inf_where(mask):
        return lambda p, y: (p - y) ** 2 + torch.where(mask(p, y), torch.tensor(float("inf")), torch.tensor(0.0))

    bad_value = "non-finite value on the {} domain (float32)"
    # probability grid: sigmoid of 65 points from -16 to 16 (0.5 apart, so p = 0.5 is on it), y in {0, 1}
    assert _non_finite(inf_where(lambda p, y: p < 1.2e-7), "probability") == bad_value.format("probability")
    assert _non_finite(inf_where(lambda p, y: p < 1.1e-7), "probability") == ""
    assert _non_finite(inf_where(lambda p, y: p == 0.5), "probability") == bad_value.format("probability")
    assert _non_finite(inf_where(lambda p, y: (y == 1) & (p < 1.2e-7)), "probability") == \
        bad_value.format("probability")
    # real grid: 41 points from -20 to 20 for p, every 4th of them (-20, -16, ..., 20) for y
    assert _non_finite(inf_where(lambda p, y: p.abs() > 19.5), "real") == bad_value.format("real")
    assert _non_finite(inf_where(lambda p, y: p.abs() > 20.5), "real") == ""
    assert _non_finite(inf_where(lambda p, y: (y == -16) & (p == 19)), "real") == bad_value.format("real")
    assert _non_finite(inf_where(lambda p, y: (y == -15) | (y == 1)), "real") == ""
    assert _non_finite(lambda p, y: p.detach() * y, "real").startswith("raises on the real domain: ")


def test_direct_check_is_pinned_on_its_first_steps():
    ce = parse("-y*log(p)").compile()
    assert direct_optimisation_fails(ce, "multiclass", 1) == \
        "minimising it over free predictions reached accuracy 0.39 (from 0.20)"
    assert direct_optimisation_fails(ce, "multiclass", 3) == \
        "minimising it over free predictions reached accuracy 0.72 (from 0.20)"
    assert direct_optimisation_fails(ce, "multiclass", 10) == ""
    assert direct_optimisation_fails(ce, "binary", 1) == \
        "minimising it over free predictions reached accuracy 0.59 (from 0.47)"
    assert direct_optimisation_fails(ce, "binary", 3) == ""
    assert direct_optimisation_fails(ce, "segmentation", 3) == ""
    bad = parse("y*p").compile()
    assert direct_optimisation_fails(bad, "multiclass", 3) == \
        "minimising it over free predictions reached accuracy 0.01 (from 0.20)"
    assert direct_optimisation_fails(bad, "binary") == \
        "minimising it over free predictions reached accuracy 0.00 (from 0.47)"
    assert direct_optimisation_fails(parse("(p-y)**2 + (1e6*p)**6").compile(), "regression") == \
        "non-finite on the regression grid"
    assert direct_optimisation_fails(parse("(p-y)**2").compile(), "regression") == ""


def test_count_reasons_lists_every_reason_in_order():
    counts = count_reasons([Verdict("ok"), Verdict("duplicate"), Verdict("duplicate"), Verdict("non_finite")])
    assert list(counts) == list(REASONS)
    assert counts == {"invalid": 0, "duplicate": 2, "fingerprint_duplicate": 0, "constant": 0, "no_target": 0,
                      "non_finite": 1, "wrong_gradient": 0, "direct_check": 0}


def test_duplicate_verdicts_name_what_they_duplicate_and_the_fingerprint_key():
    from lossforge.primitives import fingerprint

    f = CandidateFilter({"multiclass", "regression"})
    first = parse("(p-y)**2")
    seen = {first.canonical: first.canonical}
    assert f.check(parse("(y-p)**2"), seen) == Verdict("duplicate", duplicate_of=first.canonical)
    assert f.check(first, {}).status == "ok"
    assert list(f.fingerprints) == [fingerprint(first, "probability") + "|" + fingerprint(first, "real")]
    twin = parse("(p-y)**2 + 0*p")  # same canonical form: not a fingerprint duplicate of itself
    assert f.check(twin, {}).status == "ok"
    g = CandidateFilter({"multiclass"})
    assert g.check(parse("-y*log(p)"), {}).status == "ok"
    v = g.check(parse("-y*log(p**2)/2"), {})
    assert v == Verdict("fingerprint_duplicate", f"behaves like {parse('-y*log(p)').canonical}",
                        duplicate_of=parse("-y*log(p)").canonical)


def test_more_rejections_and_their_messages(monkeypatch):
    f = CandidateFilter({"multiclass"})
    assert f.check(parse("c0*p + c1*y"), {}) == Verdict("invalid", "unbound constants c0, c1")
    # a gradient of exactly 1e-12 is still "zero" (the threshold is strict)
    assert f.check(parse("1e-12*p*y"), {}) == Verdict("constant", "zero gradient everywhere on the probability domain")
    # the same mean gradient for the true and the other classes is the wrong way
    assert f.check(parse("p + y"), {}).status == "wrong_gradient"
    e = parse("-y*log(p)*3")

    def broken(self):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(type(e), "compile", broken)
    assert CandidateFilter({"multiclass"}).check(e, {}) == Verdict("invalid", "does not compile: no kernel")


def test_regression_grid_edges_targets_and_constant_programs():
    from lossforge.search.filters import _regression_argmin_fails

    edge = "its minimum over the prediction lies at the edge of [-6, 6] (unbounded below or flat on one side)"
    assert _regression_argmin_fails(lambda p, y: p) == edge
    assert _regression_argmin_fails(lambda p, y: -p) == edge
    assert _regression_argmin_fails(lambda p, y: torch.tensor(1.0)) == edge  # a constant is flat: broadcast first
    assert _regression_argmin_fails(lambda p, y: (y[0] - 1.0) ** 2) == edge  # flat in p: broadcast over p
    miss = "its minimisers over the prediction miss the targets (MSE 37.3 vs 1.5 at p = 0)"
    assert _regression_argmin_fails(lambda p, y: (p + 5.98) ** 2) == miss  # one grid step inside the edge
    assert _regression_argmin_fails(lambda p, y: (p - 5.98) ** 2) == miss
    # minimisers at 1.5 y: squared error 0.25 * mean(y^2), under half the targets' own
    assert direct_optimisation_fails(parse("(p-1.5*y)**2").compile(), "regression") == ""


def test_direct_check_with_gradients_near_adams_epsilon():
    # Gradients of ~1e-9 are where Adam's epsilon (1e-8) matters: the pinned accuracies
    # change if epsilon, the moments or the step size are computed differently.
    tiny = parse("-y*log(p)*1e-8").compile()
    assert direct_optimisation_fails(tiny, "multiclass", 20) == \
        "minimising it over free predictions reached accuracy 0.22 (from 0.20)"
    assert direct_optimisation_fails(tiny, "multiclass") == \
        "minimising it over free predictions reached accuracy 0.29 (from 0.20)"
    assert direct_optimisation_fails(tiny, "binary") == \
        "minimising it over free predictions reached accuracy 0.52 (from 0.47)"


def test_pass_thresholds_of_the_direct_check():
    from lossforge.search.filters import _passes

    assert _passes("binary", 0.5, 0.75) and not _passes("binary", 0.5, 0.7499)
    assert _passes("multiclass", 0.6, 0.85) and not _passes("multiclass", 0.6, 0.8499)
    assert not _passes("binary", 0.8, 0.9)  # must gain 0.25 even above 0.75
    assert _passes("regression", -1.0, -0.49) and not _passes("regression", -1.0, -0.5)
    assert _passes("regression", -2.0, -0.9) and not _passes("regression", -2.0, -1.0)


# ----------------------------------------------------------------------------- learned results
def test_a_learned_verdict_is_used_instead_of_checking_again(monkeypatch):
    # verdicts computed elsewhere (a screening worker) are taken as they are, the first one wins
    f = CandidateFilter({"multiclass"})
    monkeypatch.setattr(f, "_reject", lambda e: pytest.fail(f"checked {e.canonical} again"))
    good, bad = parse("-y*log(p)"), parse("y*p")
    rejected = Verdict("wrong_gradient", "learned elsewhere")
    f.learn(good.canonical, None, None)
    f.learn(bad.canonical, rejected, None)
    f.learn(bad.canonical, None, None)  # a later result for the same form is ignored
    f.learn(good.canonical, Verdict("constant", "later"), None)
    assert f.viable(good) is True
    assert f.viable(bad) is False
    assert f.check(bad, {}) is rejected
    assert f.check(good, {}).status == "ok"


def test_a_learned_fingerprint_key_is_used_instead_of_computing_it(monkeypatch):
    import lossforge.search.filters as filters

    f = CandidateFilter({"multiclass"})
    a, b = parse("-y*log(p)"), parse("-y*log(p**2)/2")
    f.learn(a.canonical, None, "key-a")
    f.learn(a.canonical, None, "key-later")  # the first key wins
    f.learn(b.canonical, None, "key-a")      # learned as behaving like a
    f.learn(parse("(p-y)**2").canonical, None, None)  # no key: computed here when needed
    monkeypatch.setattr(filters, "fingerprint", lambda *a: pytest.fail("fingerprint computed"))
    assert f.fingerprint_key(a) == "key-a" and f.fingerprint_key(b) == "key-a"
    assert f.check(a, {}).status == "ok"
    assert f.check(b, {}) == Verdict("fingerprint_duplicate", f"behaves like {a.canonical}",
                                     duplicate_of=a.canonical)
    monkeypatch.undo()
    g = CandidateFilter({"multiclass"})
    assert f.fingerprint_key(parse("(p-y)**2")) == g.fingerprint_key(parse("(p-y)**2")) != "key-a"


def test_the_default_number_of_direct_check_steps_is_the_search_configs():
    # a filter built without the search's config (a test, a script) checks as a search does
    import inspect

    from lossforge.search.config import SearchConfig

    steps = SearchConfig().direct_check_steps
    assert CandidateFilter({"binary"}).direct_check_steps == steps
    assert inspect.signature(direct_optimisation_fails).parameters["steps"].default == steps


# ----------------------------------------------------------------------------- the direct check's schedule
def _counting_losses(monkeypatch):
    import lossforge.search.filters as filters

    calls = []
    real = filters.per_sample_loss
    monkeypatch.setattr(filters, "per_sample_loss", lambda *a: calls.append(1) or real(*a))
    return calls


def test_the_direct_check_runs_60_steps_by_default_and_stops_early_every_10th(monkeypatch):
    calls = _counting_losses(monkeypatch)
    # a loss that never passes runs every step of the default
    assert direct_optimisation_fails(parse("y*p").compile(), "multiclass").startswith("minimising it")
    assert len(calls) == 60
    # cross-entropy passes between steps 4 and 10 (pinned above): it stops at the 10th,
    # where the first early check is made
    calls.clear()
    assert direct_optimisation_fails(parse("-y*log(p)").compile(), "multiclass") == ""
    assert len(calls) == 10
    calls.clear()
    assert direct_optimisation_fails(parse("-y*log(p)").compile(), "multiclass", 9) == ""
    assert len(calls) == 9  # no early check before the 10th step: judged at the end


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_the_direct_check_steps_are_torchs_adam(monkeypatch, kind):
    # Adam written out on one tensor: after 5 steps the logits are torch.optim.Adam's (lr 0.1)
    import lossforge.search.filters as filters
    from lossforge.losses.spaces import per_sample_loss
    from lossforge.search.filters import _direct_problem

    program = parse("y*p").compile()  # never passes, so no early exit
    seen = []
    real = filters._direct_metric
    monkeypatch.setattr(filters, "_direct_metric", lambda k, z, t: seen.append(z.detach().clone()) or real(k, z, t))
    direct_optimisation_fails(program, kind, 5)
    z0, target = _direct_problem(kind, torch.Generator().manual_seed(1234))
    torch.testing.assert_close(seen[0], z0)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        per_sample_loss(program, z, target, kind).mean().backward()
        opt.step()
    torch.testing.assert_close(seen[-1], z.detach(), rtol=1e-5, atol=1e-6)
