"""The --space grammar, its checks against the optimizer, defaults and conversions."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from steplab.errors import SpecError
from steplab.optim import parse_spec
from steplab.study.search_space import default_space, parse_space, resolve_space


def test_grammar_reads_every_range_kind() -> None:
    space = parse_space(
        "lr=log(1e-5, 1), betas.0=(0.8,0.99), weight_decay=linear(0, 0.1), eps=[1e-8, 1e-6]",
        parse_spec("adamw"),
    )
    lr, beta, wd, ams = space.dims
    assert (lr.low, lr.high, lr.log) == (1e-5, 1.0, True)
    assert (beta.name, beta.low, beta.high, beta.log) == ("betas.0", 0.8, 0.99, False)
    assert (wd.low, wd.high, wd.log) == (0.0, 0.1, False)
    assert ams.choices == (1e-8, 1e-6)


def test_names_refer_to_the_innermost_optimizer_that_takes_them() -> None:
    space = parse_space("lr=log(1e-3, 1), momentum=int(0, 1)", parse_spec("lookahead(momentum)"))
    assert space.to_optuna()["momentum"] == optuna.distributions.IntDistribution(0, 1)
    with pytest.raises(SpecError, match=r"'kk' is not a hyperparameter of lookahead\(sgd\); "
                                        r"expected one of lr, weight_decay, alpha \(lookahead\)"):
        parse_space("kk=int(3, 10)", parse_spec("lookahead(sgd)"))


def test_lookaheads_own_k_and_alpha_are_searchable() -> None:
    """Issue 11: ``--space "k=int(3, 10)"`` was refused for ``lookahead(...)``."""
    spec = parse_spec("lookahead(adam(betas=(0.9, 0.95)), k=5)")
    space = parse_space("lr=log(1e-4, 1e-2), k=int(3, 10), alpha=(0.3, 0.9), betas.0=(0.8, 0.99)",
                        spec)
    tuned = space.apply(spec, {"lr": 0.01, "k": 7, "alpha": 0.6, "betas.0": 0.85})
    assert str(tuned) == "lookahead(adam(betas=(0.85, 0.95), lr=0.01), alpha=0.6, k=7)"
    assert parse_spec(str(tuned)) == tuned


def test_conversions_to_optuna_and_ray() -> None:
    space = parse_space(
        "lr=log(1e-4, 1e-1), momentum=(0.8, 0.99), nesterov=[True, False]", parse_spec("momentum")
    )
    dists = space.to_optuna()
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["momentum"] == optuna.distributions.FloatDistribution(0.8, 0.99)
    assert dists["nesterov"] == optuna.distributions.CategoricalDistribution([True, False])
    ray_space = space.to_ray()
    from ray.tune.search.sample import Categorical, Float

    assert isinstance(ray_space["lr"], Float) and isinstance(ray_space["nesterov"], Categorical)
    assert ray_space["lr"].lower == 1e-4 and ray_space["lr"].upper == 1e-1


def test_apply_sets_tuple_elements_and_gives_a_spec_that_parses_back() -> None:
    spec = parse_spec("lookahead(adam(betas=(0.9, 0.95)), k=5)")
    space = parse_space("lr=log(1e-4, 1e-1), betas.0=(0.8, 0.99)", spec)
    tuned = space.apply(spec, {"lr": 0.01, "betas.0": 0.85})
    assert str(tuned) == "lookahead(adam(betas=(0.85, 0.95), lr=0.01), k=5)"
    assert parse_spec(str(tuned)) == tuned


def test_default_space_grows_with_the_trial_budget_as_the_playbook_says() -> None:
    adam = parse_spec("adam")
    assert default_space(adam, 5).names == ("lr",)
    assert default_space(adam, 10).names == ("lr", "beta1")
    assert default_space(adam, 25).names == ("lr", "beta1", "eps")
    assert default_space(adam, 100).names == ("lr", "beta1", "eps", "beta2")
    # hyperparameters fixed by the spec are not searched
    assert default_space(parse_spec("adam(lr=0.01)"), 10).names == ("beta1",)
    assert (
        str(default_space(adam, 10).apply(adam, {"lr": 0.001, "beta1": 0.9}))
        == "adam(beta1=0.9, lr=0.001)"
    )


def test_resolve_space_refuses_an_empty_space() -> None:
    with pytest.raises(SpecError, match=r"^space: nothing to tune"):
        resolve_space(None, parse_spec("gd(lr=0.1)"), 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr=log(1e-5)", r"cannot read 'lr=log\(1e-5\)'"),
        ("lr==(1,2)", "cannot read"),
        ("lr=(1e-5, 1e-1),", "empty item"),
        ("", "empty string"),
        ("lr=(1, 0.1)", "wrong order"),
        ("lr=log(0, 1)", r"needs low > 0"),
        ("momentun=(0.8, 0.99)", "'momentun' is not a hyperparameter of sgd"),
        ("betas.0=(0.8, 0.9)", "'betas.0' is not a hyperparameter of sgd"),
        ("lr=(0.1, 1), lr=(0.2, 1)", "given twice"),
        ("lr=[]", "empty"),
    ],
)
def test_bad_space_raises_one_line_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_space(text, parse_spec("sgd"))
    assert str(info.value).startswith("space: ") and "\n" not in str(info.value)


def test_index_beyond_the_tuple_is_refused() -> None:
    with pytest.raises(SpecError, match=r"'betas.2' indexes 'betas' of adam"):
        parse_space("betas.2=(0.9, 0.99)", parse_spec("adam"))


def test_best_point_at_the_edge_is_flagged() -> None:
    space = parse_space("lr=log(1e-4, 1), momentum=(0.0, 0.99)", parse_spec("momentum"))
    assert space.at_boundary({"lr": 0.95, "momentum": 0.5}) == ["lr"]
    assert space.at_boundary({"lr": 1e-2, "momentum": 0.5}) == []


@given(
    low=st.floats(1e-8, 1.0),
    ratio=st.floats(1.01, 1e6),
    log=st.booleans(),
)
def test_printed_space_parses_back_to_the_same_space(low: float, ratio: float, log: bool) -> None:
    high = low * ratio
    if not math.isfinite(high):
        return
    text = f"lr={'log' if log else ''}({low!r}, {high!r})"
    space = parse_space(text, parse_spec("adam"))
    assert parse_space(str(space), parse_spec("adam")) == space


def test_the_default_space_of_a_lookahead_grows_to_its_own_alpha_and_k() -> None:
    """The registry lists alpha (from 10 trials) and k (from 25) for lookahead; use them."""
    spec = parse_spec("lookahead(adam)")
    assert [d.name for d in default_space(spec, 9).dims] == ["lr"]
    assert [d.name for d in default_space(spec, 10).dims] == ["lr", "beta1", "alpha"]
    wide = default_space(spec, 30)
    k = next(d for d in wide.dims if d.name == "k")
    assert k.integer and (k.low, k.high) == (3, 10)
    assert "alpha" not in [d.name for d in default_space(parse_spec("lookahead(adam, alpha=0.5)"),
                                                         30).dims]
    tuned = wide.apply(spec, {d.name: d.low for d in wide.dims})
    assert tuned.kwargs["k"] == 3 and tuned.inner is not None and "lr" in tuned.inner.kwargs
