"""The catalogue base (losses/loss.py): reductions, input and parameter checks,
parameter resolution, expression-text numbers and Loss entry validation, with
their messages."""
import pickle

import pytest
import torch

from lossforge.losses.errors import LossInputError, LossParameterError
from lossforge.losses.loss import (CatalogueLoss, Loss, check_class_target, check_reduction, check_same_shape,
                                   check_signed_target, focal_factor, gather_class, in_range, non_negative, num,
                                   one_hot_like, positive, reduce, resolve_params, switch)
from lossforge.primitives import parse


def test_reductions():
    x = torch.tensor([1.0, 2.0, 6.0])
    assert reduce(x, "none") is x
    assert reduce(x, "mean").item() == 3.0 and reduce(x, "sum").item() == 9.0
    for r in ("none", "mean", "sum"):
        assert check_reduction(r) == r
    with pytest.raises(LossInputError, match=r"reduction must be one of 'none', 'mean', 'sum', got 'avg'"):
        reduce(x, "avg")
    with pytest.raises(LossInputError, match="got None"):
        check_reduction(None)


def test_input_checks_and_their_messages():
    check_same_shape(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(LossInputError, match=r"input shape \(3, 1\) and target shape \(3,\) differ; they must be "
                                             r"equal \(reshape one of them, e.g. input.squeeze\(-1\)\)"):
        check_same_shape(torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(LossInputError, match=r"and weight shape \(2,\) differ"):
        check_same_shape(torch.zeros(3), torch.zeros(2), "weight")
    check_class_target(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    check_class_target(torch.zeros(4, 3, 5), torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(LossInputError, match=r"input must be \[N, C\] or \[N, C, d1, ...\] class scores, got shape \(4,\)"):
        check_class_target(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(LossInputError, match="integer class indices \\(torch.long\\), got dtype torch.float32"):
        check_class_target(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(LossInputError, match="got dtype torch.bool"):
        check_class_target(torch.zeros(4, 3), torch.zeros(4, dtype=torch.bool))
    with pytest.raises(LossInputError, match=r"input shape \(4, 3, 5\) needs target shape \(4, 5\) \(class dimension "
                                             r"1 removed\), got \(4, 3\)"):
        check_class_target(torch.zeros(4, 3, 5), torch.zeros(4, 3, dtype=torch.long))
    check_signed_target(torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(LossInputError, match="target must hold -1 and \\+1 labels; map 0/1 labels with 2\\*t - 1"):
        check_signed_target(torch.tensor([1.0, 0.0]))


def test_one_hot_gather_and_focal_factor():
    logits = torch.zeros(2, 3, 4, dtype=torch.float64)
    t = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    oh = one_hot_like(logits, t)
    assert oh.shape == (2, 3, 4) and oh.dtype == torch.float64
    assert oh[0, :, 2].tolist() == [0.0, 0.0, 1.0] and oh.sum().item() == 8
    values = torch.arange(24.0).reshape(2, 3, 4)
    assert gather_class(values, t).tolist() == [[0.0, 5.0, 10.0, 7.0], [20.0, 21.0, 14.0, 15.0]]
    base = torch.tensor([0.0, 0.25, 1.0], requires_grad=True)
    f = focal_factor(base, 0.5)
    assert f.tolist() == [0.0, 0.5, 1.0]
    f.sum().backward()
    assert base.grad.tolist() == [0.0, 1.0, 0.5]  # zero, not NaN, where base is exactly 0


def test_parameter_checks_and_their_messages():
    positive("a", 1e-9)
    non_negative("a", 0.0)
    in_range("q", 0.5, 0.0, 1.0)
    in_range("q", 1.0, 0.0, 1.0, closed=True)
    in_range("q", 0.0, 0.0, 1.0, closed=True)
    switch("s", 0.0)
    switch("s", 1.0)
    for call, message in [
        (lambda: positive("alpha", 0.0), "alpha must be > 0, got 0.0"),
        (lambda: positive("alpha", float("nan")), "alpha must be > 0, got nan"),
        (lambda: non_negative("gamma", -0.5), "gamma must be >= 0, got -0.5"),
        (lambda: in_range("q", 1.0, 0.0, 1.0), "q must be in (0.0, 1.0), got 1.0"),
        (lambda: in_range("q", 0.0, 0.0, 1.0), "q must be in (0.0, 1.0), got 0.0"),
        (lambda: in_range("q", 1.5, 0.0, 1.0, closed=True), "q must be in [0.0, 1.0], got 1.5"),
        (lambda: switch("s", 0.5), "s is a switch: 0 (off) or 1 (on), got 0.5"),
    ]:
        with pytest.raises(LossParameterError) as info:
            call()
        assert str(info.value) == message


def test_resolve_params():
    assert resolve_params("L", {"a": 1.0, "b": 2}, {"b": 3}) == {"a": 1.0, "b": 3.0}
    assert resolve_params("L", {"on": 0.0}, {"on": True}) == {"on": 1.0}
    assert resolve_params("L", {"a": 1.0}, {"w": object()}, extra=("w",)) == {"a": 1.0}
    with pytest.raises(LossParameterError) as info:
        resolve_params("focal", {"gamma": 2.0, "alpha": 0.25}, {"gama": 1.0})
    assert str(info.value) == ("focal got an unknown parameter 'gama' (did you mean 'gamma'?); "
                               "it takes gamma, alpha")
    with pytest.raises(LossParameterError, match="mse got an unknown parameter 'x'; it takes no parameters"):
        resolve_params("mse", {}, {"x": 1})
    with pytest.raises(LossParameterError, match=r"^L: parameter 'a' must be a number, got 'big'$"):
        resolve_params("L", {"a": 1.0}, {"a": "big"})
    with pytest.raises(LossParameterError, match=r"^L: parameter 'a' must be a number, got None$"):
        resolve_params("L", {"a": 1.0}, {"a": None})
    with pytest.raises(LossParameterError, match=r"^L: parameter 'a' is NaN$"):
        resolve_params("L", {"a": 1.0}, {"a": float("nan")})


@pytest.mark.parametrize("value, text", [
    (2.0, "(2)"), (-3.0, "(-3)"), (0.0, "(0)"), (1.5, "(3/2)"), (-0.25, "(-1/4)"), (0.001, "(1/1000)"),
    (1 / 3, "(1/3)"), (0.1234, "(0.1234)"), (3.141592653589793, "(3.141592653589793)"), (1e-4, "(0.0001)"),
    (True, "(1)"),
])
def test_num_writes_exact_fractions_and_full_floats(value, text):
    assert num(value) == text
    parse(f"p*{text}")  # expression text the grammar reads


class _Scaled(CatalogueLoss):
    defaults = {"scale": 2.0, "on": 1.0}

    @staticmethod
    def functional(input, target, scale, on, reduction):
        return reduce(scale * on * (input - target) ** 2, reduction)

    @classmethod
    def check_params(cls, scale, on):
        positive("scale", scale)
        switch("on", on)


def test_catalogue_module_calls_its_functional_with_params_and_reduction():
    m = _Scaled(reduction="sum", scale=3)
    assert m.params == {"scale": 3.0, "on": 1.0} and m.reduction == "sum"
    assert m(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])).item() == 15.0
    assert _Scaled()(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])).item() == 10.0
    assert _Scaled(reduction="none")(torch.tensor([1.0]), torch.tensor([0.0])).tolist() == [2.0]
    assert repr(_Scaled(scale=0.5)) == "_Scaled(scale=0.5, on=1, reduction='mean')"
    with pytest.raises(LossParameterError, match="scale must be > 0"):
        _Scaled(scale=-1)
    with pytest.raises(LossInputError, match="reduction must be one of"):
        _Scaled(reduction="avg")
    with pytest.raises(LossParameterError, match="_Scaled got an unknown parameter 'scal'"):
        _Scaled(scal=1.0)


def _entry(**kw):
    base = dict(name="sq", kind="discovered", family="regression", formula="(p-y)^2", params={}, reference="",
                expr=parse("(p-y)**2"), space="real", input="prediction", target="value",
                task_kinds=("regression",))
    base.update(kw)
    return Loss(**base)


def test_loss_entry_validation_lists_every_problem():
    with pytest.raises(LossParameterError) as info:
        _entry(kind="mine", input="pixels", target="labels", task_kinds=("regression", "dance"), space="complex")
    msg = str(info.value)
    assert msg.startswith("invalid catalogue entry 'sq': kind 'mine' is not one of ('reference', 'discovered'); ")
    for part in ["input 'pixels' is not one of", "target 'labels' is not one of",
                 "task kinds ['dance'] are not among", "space 'complex' is not one of ('probability', 'real')"]:
        assert part in msg
    with pytest.raises(LossParameterError, match="space must be given exactly when expr is"):
        _entry(space=None)
    with pytest.raises(LossParameterError, match="a loss without an expression needs a module_factory"):
        _entry(expr=None, space=None)
    e = _entry(params={"a": 1}, task_kinds=["regression"], extra_args=["w"])
    assert dict(e.params) == {"a": 1.0} and type(e.params["a"]) is float
    assert e.task_kinds == ("regression",) and e.extra_args == ("w",)
    with pytest.raises(TypeError):
        e.params["a"] = 2.0  # read-only


def test_loss_entry_builds_modules_and_expressions():
    e = _entry(params={"k": 2.0}, expression_builder=lambda k: f"(p-y)**2*{num(k)}")
    assert e.expression().canonical == parse("2*(p-y)**2").canonical
    assert e.expression(k=3).canonical == parse("3*(p-y)**2").canonical
    assert _entry(params={"k": 2.0}, expression_builder=lambda k: None).expression() is None
    assert _entry(params={"k": 2.0}, expression_builder=lambda k: "p**9*y").expression() is None  # grammar bound
    assert _entry().expression() == parse("(p-y)**2")
    m = e.module(k=3, reduction="sum")
    assert m(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(15.0)
    assert e.module()(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(2.0)
    with pytest.raises(LossParameterError, match="loss 'sq' got an unknown parameter 'kk'"):
        e.module(kk=1)
    with pytest.raises(LossParameterError, match="loss 'sq' has no module and no task kind an expression can train"):
        _entry(task_kinds=("segmentation",)).module()
    seen = {}
    f = _entry(params={"a": 1.0}, expr=None, space=None, extra_args=("w",),
               module_factory=lambda reduction, a, **extra: seen.update(reduction=reduction, a=a, **extra) or "m")
    assert f.module(a=2, w="weights") == "m"
    assert seen == {"reduction": "mean", "a": 2.0, "w": "weights"}
    assert f.convention == "p, y" and _entry(input="boxes").convention == "boxes"


def test_loss_entry_repr_and_pickling():
    e = _entry(params={"a": 0.5, "b": 2})
    assert repr(e) == "Loss('sq', kind='discovered', family='regression', params={a=0.5, b=2})"
    again = pickle.loads(pickle.dumps(e))
    assert again.name == "sq" and dict(again.params) == {"a": 0.5, "b": 2.0} and again.expr == e.expr


def test_exact_messages_and_inferred_sizes():
    with pytest.raises(LossInputError) as info:
        check_signed_target(torch.tensor([0.0]))
    assert str(info.value) == "target must hold -1 and +1 labels; map 0/1 labels with 2*t - 1"
    with pytest.raises(LossParameterError) as info:
        _entry(space=None)
    assert str(info.value) == "invalid catalogue entry 'sq': space must be given exactly when expr is"
    with pytest.raises(LossParameterError) as info:
        _entry(expr=None, space=None)
    assert str(info.value) == "invalid catalogue entry 'sq': a loss without an expression needs a module_factory"
    # the class count comes from the input, not from the largest target present
    assert one_hot_like(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)).shape == (2, 3)
    assert focal_factor(torch.tensor([0.0, 0.5]), 0.0).tolist() == [1.0, 1.0]  # x**0 is 1, also at 0
    with pytest.raises(LossParameterError, match=r"got an unknown parameter 'reductio' \(did you mean 'reduction'\?\)"):
        resolve_params("L", {"a": 1.0}, {"reductio": "sum"})
    assert num(1 / 1001) == "(0.000999000999000999)"  # denominators above 1000 are not kept exact
    with pytest.raises(LossParameterError, match="^loss 'sq' got an unknown parameter 'kk'"):
        _entry().expression(kk=1)


@pytest.mark.parametrize("kinds", [("multiclass",), ("segmentation", "binary")])
def test_expression_modules_train_the_first_kind_an_expression_can(kinds):
    e = _entry(expr=parse("-y*log(p)"), space="probability", task_kinds=kinds, target="index" if
               kinds == ("multiclass",) else "binary", input="logits")
    m = e.module()
    x = torch.zeros(4, 3) if kinds == ("multiclass",) else torch.zeros(4)
    t = torch.zeros(4, dtype=torch.long) if kinds == ("multiclass",) else torch.zeros(4)
    assert torch.isfinite(m(x, t))


class _Huberish(CatalogueLoss):
    defaults = {"delta": 1.0}

    @staticmethod
    def functional(input, target, delta, reduction):
        return reduce(delta * (input - target).abs(), reduction)


def test_reference_entries_from_text_builders_or_nothing():
    from lossforge.losses.loss import reference_loss

    common = dict(family="regression", formula="d|p-y|", reference="ref", module=_Huberish, input="prediction",
                  target="value", task_kinds=("regression",))
    a = reference_loss("a", **common, space="real", expression="abs(p-y)")
    assert a.kind == "reference" and dict(a.params) == {"delta": 1.0} and a.space == "real"
    assert a.expr == parse("abs(p-y)") and a.expression_builder is None and a.module_factory is _Huberish
    b = reference_loss("b", **common, space="real", expression=lambda delta: f"{num(delta)}*abs(p-y)",
                       params={"delta": 2.0}, extra_args=("w",), notes="n")
    assert b.expr == parse("2*abs(p-y)") and b.expression(delta=3).canonical == parse("3*abs(p-y)").canonical
    assert b.extra_args == ("w",) and b.notes == "n" and b.formula == "d|p-y|" and b.reference == "ref"
    c = reference_loss("c", **common, space="real", expression=lambda delta: None)
    assert c.expr is None and c.space is None
    d = reference_loss("d", **common)
    assert d.expr is None and d.space is None and d.family == "regression" and d.task_kinds == ("regression",)
    assert (a.name, d.name, d.notes) == ("a", "d", "")
    # a factory function (no ``defaults``) makes an entry without parameters
    f = reference_loss("f", **{**common, "module": lambda reduction: _Huberish(reduction=reduction)})
    assert dict(f.params) == {} and f.module()(torch.tensor([2.0]), torch.tensor([0.0])).item() == 2.0
    assert d.module(delta=2.0, reduction="sum")(torch.tensor([1.0]), torch.tensor([0.0])).item() == 2.0


def test_reference_entries_pickle_by_name():
    from lossforge.losses.reference import reference_losses

    quantile = next(loss for loss in reference_losses() if loss.name == "quantile")
    assert quantile.expression_builder.__name__ == "<lambda>"  # it could not be pickled field by field
    again = pickle.loads(pickle.dumps(quantile))
    assert again.name == "quantile" and again.kind == "reference" and again.expr == quantile.expr
