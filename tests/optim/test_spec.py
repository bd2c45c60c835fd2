"""The spec parser: canonical round trip, nesting, values, errors with positions and hints."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steplab.errors import SpecError
from steplab.optim import OPTIMIZERS, OptimizerSpec, parse_spec


def test_nested_spec_parses_to_name_kwargs_and_inner() -> None:
    spec = parse_spec("lookahead(adamw(lr=3e-4, weight_decay=0.05, betas=(0.9, 0.99)), k=5)")
    assert spec.name == "lookahead" and dict(spec.kwargs) == {"k": 5}
    assert spec.inner == OptimizerSpec(
        "adamw", {"lr": 3e-4, "weight_decay": 0.05, "betas": (0.9, 0.99)}
    )
    assert str(spec) == "lookahead(adamw(betas=(0.9, 0.99), lr=0.0003, weight_decay=0.05), k=5)"


@pytest.mark.parametrize(
    "text, value",
    [
        ("adam(lr=1e-3)", 1e-3),
        ("adam(lr=.5)", 0.5),
        ("adam(lr=2)", 2),
        ("adam(lr=-1.5e+2)", -150.0),
        ("sgd(maximize=True)", True),
        ("sgd(maximize=False)", False),
    ],
)
def test_values_are_typed_numbers_and_bools(text: str, value: object) -> None:
    got = next(iter(parse_spec(text).kwargs.values()))
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "text",
    [
        "lookahead(sgd, pullback=reset)",
        "lookahead(sgd, pullback='reset')",
        'lookahead(sgd, pullback="reset")',
    ],
)
def test_strings_may_be_bare_or_quoted(text: str) -> None:
    assert parse_spec(text).kwargs["pullback"] == "reset"
    assert str(parse_spec(text)) == "lookahead(sgd, pullback=reset)"


def test_tuples_of_one_and_none() -> None:
    assert parse_spec("adam(betas=(0.9,))").kwargs["betas"] == (0.9,)
    assert str(parse_spec("adam(betas=(0.9,))")) == "adam(betas=(0.9,))"
    assert parse_spec("adam(betas=())").kwargs["betas"] == ()


def test_names_are_case_insensitive_and_whitespace_is_ignored() -> None:
    assert parse_spec("  LookAhead ( AdamW ( lr = 0.1 ) , k = 3 ) ") == parse_spec(
        "lookahead(adamw(lr=0.1),k=3)"
    )


_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.sampled_from(["none", "reset", "a b", "x'y"]),
    st.tuples(st.floats(0, 1), st.floats(0, 1)),
)


@settings(max_examples=50, deadline=None)
@given(
    kwargs=st.dictionaries(st.sampled_from(OPTIMIZERS["adam"].accepts()), _values, max_size=4),
    k=st.integers(1, 20),
    wrap=st.booleans(),
)
def test_canonical_string_parses_back_to_an_equal_spec(
    kwargs: dict[str, object], k: int, wrap: bool
) -> None:
    spec = OptimizerSpec("adam", kwargs)  # type: ignore[arg-type]
    if wrap:
        spec = OptimizerSpec("lookahead", {"k": k}, spec)
    again = parse_spec(str(spec))
    assert again == spec and hash(again) == hash(spec) and str(again) == str(spec)


def test_with_overrides_fills_the_innermost_kwargs() -> None:
    spec = parse_spec("lookahead(adamw(lr=0.1), k=5)")
    new = spec.with_overrides(lr=0.5, beta1=0.8)
    assert str(new) == "lookahead(adamw(beta1=0.8, lr=0.5), k=5)"
    assert new.innermost == OptimizerSpec("adamw", {"lr": 0.5, "beta1": 0.8})
    assert str(spec) == "lookahead(adamw(lr=0.1), k=5)"  # unchanged
    with pytest.raises(SpecError, match=r"lrate: not a hyperparameter of adamw .did you mean 'lr'"):
        spec.with_overrides(lrate=0.1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("adamw(lr=)", "optimizer spec 'adamw(lr=)' at column 10: expected a value"),
        ("adamm", "at column 1: unknown optimizer 'adamm' (did you mean 'adam'?)"),
        ("lookahead(adamx(lr=1))", "at column 11: unknown optimizer 'adamx' (did you mean 'adam"),
        ("adam(lrr=1)", "at column 6: unknown hyperparameter 'lrr' for adam (did you mean 'lr'?)"),
        ("sgd(momentum=0.9)", "unknown hyperparameter 'momentum' for sgd"),
        ("adam(lr=1, lr=2)", "at column 12: hyperparameter 'lr' given twice"),
        ("adam(lr=1", "at column 10: expected ',' or ')', found the end"),
        ("adam(lr=1))", "at column 11: unexpected ')' after the spec"),
        ("adam(sgd)", "at column 6: expected keyword=value"),
        ("lookahead(k=5)", "at column 1: lookahead needs an inner optimizer"),
        ("lookahead(sgd, adam)", "at column 16: expected keyword=value"),
        ("adam(lr=1e-3; eps=1)", "at column 13: unexpected character ';'"),
        ("", "at column 1: expected an optimizer name, found the end"),
    ],
)
def test_bad_specs_raise_spec_error_with_column_and_hint(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_non_string_spec_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="expected a string"):
        parse_spec(3)  # type: ignore[arg-type]


def test_a_hyperparameter_of_another_rule_names_that_rule() -> None:
    """Issue 11: ``lookahead(sgd(momentum=0.9))`` gave no hint that the rule is ``momentum``."""
    with pytest.raises(SpecError, match=r"'momentum' belongs to the rules momentum.*"
                                        r"write momentum\(momentum=\.\.\.\)"):
        parse_spec("lookahead(sgd(momentum=0.9))")


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "lookahead"])
def test_every_misplaced_hyperparameter_points_at_a_rule_that_takes_it(name: str) -> None:
    """The guard for the class: for every rule and every key some other rule accepts."""
    accepts = set(OPTIMIZERS[name].accepts())
    for key in sorted({k for info in OPTIMIZERS.values() for k in info.accepts()} - accepts):
        with pytest.raises(SpecError) as caught:
            parse_spec(f"{name}({key}=1)")
        message = str(caught.value)
        owners = [n for n, info in OPTIMIZERS.items() if key in info.accepts()]
        assert f"{key!r} belongs to the rules" in message, message
        assert any(f"write {o}({key}=" in message for o in owners), message
