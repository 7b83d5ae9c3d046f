import pytest

from lossforge.primitives import fingerprint, parse


def test_equivalent_forms_share_a_fingerprint_even_when_sympy_cannot_prove_it():
    # log(p**2) and 2*log(p) agree for p > 0 (sympy keeps them apart for real p)
    a, b = parse("log(p**2)*y"), parse("2*y*log(p)")
    assert a.canonical != b.canonical
    assert fingerprint(a) == fingerprint(b)


def test_different_behaviour_gives_different_fingerprints():
    assert fingerprint(parse("-y*log(p)")) != fingerprint(parse("-y*log(p) + p"))
    assert fingerprint(parse("(p-y)**2"), "real") != fingerprint(parse("abs(p-y)"), "real")


def test_spaces_are_separate_and_validated():
    e = parse("(p-y)**2")
    assert fingerprint(e, "probability") != fingerprint(e, "real")
    with pytest.raises(ValueError, match="prediction space"):
        fingerprint(e, "complex")
