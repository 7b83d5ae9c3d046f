"""Fuzzing the safe parser: no input executes code, hangs or crashes the process.

Every input either parses to an Expr or raises a GrammarError (a
LossforgeError); never RecursionError, MemoryError or anything else.  What is
accepted is checked against independent oracles: the text holds only grammar
syntax (Python's own AST of it has only whitelisted nodes), ``str(e)`` parses
back to the same canonical form, and that form is stable (re-parsing it again
changes nothing).  Hostile
inputs try to write a canary file; it must never appear.  Time bounds are
deliberately generous (the machine may be shared): they catch hangs, not
slowness.
"""
from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossforge.primitives import Expr, GrammarError, LossforgeError, parse

GENEROUS = 5.0  # seconds; a hang, not a slow machine, is what this catches

CANARY = Path(__file__).resolve().parent / ".fuzz-canary-must-not-exist"


def _shell(path: Path) -> str:
    return f"touch {path}"


def _attacks(canary: Path) -> list[str]:
    c = str(canary)
    return [
        f"__import__('os').system('{_shell(canary)}')",
        f"__import__(\"os\").system(\"{_shell(canary)}\")",
        f"open('{c}', 'w').write('x')",
        f"(lambda: __import__('os').system('{_shell(canary)}'))()",
        f"[__import__('os').system('{_shell(canary)}') for _ in [1]]",
        f"{{__import__('os').system('{_shell(canary)}')}}",
        f"f\"{{__import__('os').system('{_shell(canary)}')}}\"",
        f"p.__class__.__mro__[-1].__subclasses__()",
        f"p.__class__.__init__.__globals__['os'].system('{_shell(canary)}')",
        f"().__class__.__base__.__subclasses__()",
        f"eval(\"__import__('os').system('{_shell(canary)}')\")",
        f"exec(\"open('{c}','w')\")",
        f"compile('1', 'x', 'eval')",
        f"getattr(__builtins__, 'open')('{c}', 'w')",
        f"globals()",
        f"breakpoint()",
        f"log(p) if __import__('os').system('{_shell(canary)}') else p",
        f"(x := __import__('os'))",
        f"p; __import__('os').system('{_shell(canary)}')",
        f"p\n__import__('os').system('{_shell(canary)}')",
        f"log(p)#{_shell(canary)}",
        f"exp(p, __import__('os').system('{_shell(canary)}'))",
        f"log(*[__import__('os').system('{_shell(canary)}')])",
        f"log(p=__import__('os'))",
        "sympy.core.sympify('p')",
        "Symbol('p')",
        "Function('f')(p)",
        "Lambda(p, p)(y)",
        "__import__",
        "p.__class__",
        "p.real",
        "exp.__globals__",
        "import os",
        "await p",
        "yield p",
        "p[0]",
        "p[::-1]",
        "{p: y}",
        "{p, y}",
        "(p, y)",
        "b'p'",
        "'p'",
        "...",
        "None",
        "p @ y",
        "p // y",
        "p << y",
        "~p",
        "not p",
        "p and y",
        "p == y",
        "p is y",
        "9**9**9",
        "9**9**9**9",
        "2**2**2**2**2**2",
        "p**(10**100)",
        "(2**64)**64",
        "((((((((2**6)**6)**6)**6)**6)**6)**6)**6)",
        "1e308*1e308",
        "1e308+1e308",
        "-1e308*1e308",
        "1e-400/1e-400",
        "10**300/10**-300",
        "0**-1",
        "(-1)**0.5",
        "(-8)**(1/3)*p",
        "p/(p-p)",
        "log(0)*p",
        "exp(1e6)*p",
        "exp(exp(exp(exp(exp(exp(exp(p)))))))",
        "99999999999999999999999999999999999999999999999999",
        "1" * 3000,
        "0." + "0" * 3000 + "1",
        "1e" + "9" * 50,
        "p" * 3999,
        "p+" * 1999 + "p",
        "p*" * 1999 + "p",
        "p**" * 200 + "p",
        "(p+y)**" * 60 + "2",
        "-" * 3999 + "p",
        "+-" * 1999 + "p",
        "(" * 10000 + "p" + ")" * 10000,
        "(" * 1999 + "p" + ")" * 1999,
        "(" * 200 + "p" + ")" * 200,
        "log(" * 1000 + "p" + ")" * 1000,
        "log(" * 63 + "p" + ")" * 63,
        "max(" + ",".join(["p"] * 1500) + ")",
        "max(" + ",".join(["max(p,y)"] * 400) + ")",
        "((p+y)**8)**8",
        "(((p+y+1)**8)**8)**8",
        "(p+y+1)**8*(p-y+2)**8*(y-p+3)**8",
        "p" + "\x00" + "y",
        "\x00",
        "p\u0000+y",
        "\ufeffp",
        "p\u202e+y",
        "ｐ＋ｙ",          # fullwidth forms (NFKC-normalised by Python's own parser)
        "𝐩*𝐲",           # mathematical bold letters
        "\u0440*y",        # Cyrillic er, looks like p
        "é*p",
        "p\u2028y",
        "p\ty",
        "p\r\ny",
        "\\",
        "\"\"\"",
        "'''",
        "#",
        "",
        " ",
        "\n\n\n",
        "()",
        "(,)",
        "p,",
        "log()",
        "log(,)",
        "max(p,)",
        "p)(",
        "p(y)",
        "y(p)(p)",
        "1(p)",
        "log(p)(y)",
        "pow(p, y, 2)",
        "pow(p, 1e100)",
        "pow(1e6, 1e6)",
        "div(p, 0)",
        "1/0.0",
        "p/1e-400",
        "nan*p",
        "inf*p",
        "NaN",
        "oo*p",
        "zoo",
        "I*p",
        "E**1000*p",
        "pi**100",
        "c0**c1",
        "p**c0",
        "c99*p",
    ]


def _parse_safely(text: str) -> Expr | None:
    """parse(text) must return an Expr or raise GrammarError; anything else fails the test."""
    try:
        e = parse(text)
    except GrammarError:
        return None
    except LossforgeError as exc:  # any deliberate error is acceptable, but say which
        pytest.fail(f"parse({text[:80]!r}) raised {type(exc).__name__}, not GrammarError: {exc}")
    except BaseException as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"parse({text[:80]!r}) raised {type(exc).__name__}: {exc}")
    assert isinstance(e, Expr)
    _only_grammar_syntax(text)
    return e


# The loss grammar, as Python syntax: anything else in accepted text is the
# parser accepting more than it should.
_GRAMMAR_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load,
                  ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


def _only_grammar_syntax(text: str) -> None:
    tree = ast.parse(text.strip(), mode="eval")
    for node in ast.walk(tree):
        assert isinstance(node, _GRAMMAR_NODES), f"parse({text[:80]!r}) accepted a {type(node).__name__}"
        if isinstance(node, ast.Constant):
            assert type(node.value) in (int, float), f"parse({text[:80]!r}) accepted the literal {node.value!r}"
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and not node.keywords, f"parse({text[:80]!r}) accepted a call"


def _round_trip(e: Expr) -> None:
    """str(e) parses back to the same canonical form, and that is a fixed point."""
    try:
        again = parse(str(e))
    except GrammarError as exc:
        # Known gap: folding can make a coefficient beyond the literal limit
        # (p/1e-9 prints as 1000000000.0*p), which does not parse again.
        assert "outside" in str(exc) or "larger than" in str(exc), f"{e}: {exc}"
        return
    assert again.canonical == e.canonical, f"{e} -> {again}"
    assert parse(str(again)).canonical == again.canonical


def _use(e: Expr) -> None:
    """What a search does next with a parsed expression must be safe too."""
    try:
        _ = e.canonical, e.complexity, str(e)
        e.compile()
    except LossforgeError:
        pass
    _round_trip(e)


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "canary"
    yield path
    assert not path.exists(), "a parsed expression executed code"
    assert not CANARY.exists(), "a parsed expression executed code"


@pytest.mark.parametrize("index", range(len(_attacks(Path("/x")))))
def test_hand_written_hostile_strings_are_refused_or_harmless(index, canary):
    text = _attacks(canary)[index]
    t0 = time.perf_counter()
    e = _parse_safely(text)
    if e is not None:
        _use(e)
    elapsed = time.perf_counter() - t0
    assert elapsed < GENEROUS, f"parse({text[:60]!r}) took {elapsed:.1f} s"


def test_code_is_never_executed_and_nothing_is_written(canary):
    # Every attack above that names the canary must be a GrammarError (nothing in
    # the grammar can spell a file name, a string or an attribute).
    for text in _attacks(canary):
        if str(canary) in text or "__" in text:
            with pytest.raises(GrammarError):
                parse(text)


@pytest.mark.parametrize("text", ["(" * 10000 + "p" + ")" * 10000, "(" * 1999 + "p" + ")" * 1999,
                                  "-" * 3999 + "p", "p**" * 200 + "p", "log(" * 999 + "p" + ")" * 999])
def test_deep_nesting_is_a_grammar_error_not_a_recursion_error(text):
    with pytest.raises(GrammarError, match="nest|characters long"):
        parse(text)


@pytest.mark.parametrize("text", ["9**9**9", "9**9**9**9", "1e308*1e308", "(2**64)**64", "p**(10**100)",
                                  "pow(1e6, 1e6)", "10**300/10**-300"])
def test_huge_numbers_are_refused_before_they_are_computed(text):
    t0 = time.perf_counter()
    with pytest.raises(GrammarError):
        parse(text)
    assert time.perf_counter() - t0 < GENEROUS


# ------------------------------------------------------------------ hypothesis: random text
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.text(max_size=200))
def test_random_unicode_text_parses_or_raises_grammar_error(text):
    e = _parse_safely(text)
    if e is not None:
        _use(e)


@_FUZZ
@given(st.text(alphabet=st.sampled_from(list("py()+-*/.,_ 0123456789eElogxpqrtabsmin\t\n")), max_size=120))
def test_text_from_the_grammars_own_alphabet_parses_or_raises_grammar_error(text):
    e = _parse_safely(text)
    if e is not None:
        _use(e)


# ------------------------------------------------------------------ hypothesis: structured hostile strings
_HOSTILE_TOKENS = [
    "__import__", "('os')", ".system", "('true')", "lambda", ":", "[", "]", "for", "in", "if", "else", "f'",
    "{", "}", "'", '"', "**", "9", "99", "1e308", "1e-308", "*", "/", "+", "-", "(", ")", ",", "p", "y", "c0",
    "log", "exp", "sqrt", "max", "min", "pow", "div", "__class__", "__subclasses__", "__globals__", "getattr",
    "open", "eval", "exec", "\x00", "\u202e", "é", "ｐ", "𝐲", ".", "=", ":=", "@", "%", "~", "not", "and",
    "#", "\\", ";", "\n", "0", "0.0", "1j", "True", "None", "...", "E", "pi", "oo", "nan", "inf",
]


@_FUZZ
@given(st.lists(st.sampled_from(_HOSTILE_TOKENS), max_size=40))
def test_hostile_token_soup_parses_or_raises_grammar_error(tokens):
    e = _parse_safely("".join(tokens))
    if e is not None:
        _use(e)


def _expressions():
    leaves = st.one_of(
        st.sampled_from(["p", "y", "E", "pi", "c0"]),
        st.integers(min_value=-10**15, max_value=10**15).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["1e308", "1e-308", "9**9", "0", "0.0", "-0.0"]),
    )
    unary = ["log", "exp", "sqrt", "abs", "sigmoid", "softplus", "neg", "square", "cube", "tanh"]

    def extend(children):
        return st.one_of(
            st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**"]), children)
            .map(lambda t: f"({t[0]}){t[1]}({t[2]})"),
            st.tuples(st.sampled_from(unary), children).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(["max", "min", "pow", "div"]), children, children)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            children.map(lambda c: f"-({c})"),
        )

    return st.recursive(leaves, extend, max_leaves=30)


@_FUZZ
@given(_expressions())
def test_generated_expressions_parse_or_raise_grammar_error_and_round_trip(text):
    t0 = time.perf_counter()
    e = _parse_safely(text)
    if e is not None:
        _use(e)
        try:
            again = parse(str(e))
        except GrammarError as exc:
            # Known gap: folding can make a coefficient beyond the literal limit
            # (p/1e-9 prints as 1000000000.0*p), which does not parse again.
            assert "outside" in str(exc), str(exc)
        else:
            assert again.canonical == e.canonical
    assert time.perf_counter() - t0 < GENEROUS
