"""Each torch path agrees with its NumPy reference for 60 steps on random problems.

The gradient is g_t = c·θ_t + ξ_t with pre-drawn noise ξ_t, so each path sees
the gradient of its own iterate and small float32 differences are not
amplified. The implementation create_optimizer picks (fused where torch has
it), the foreach path and the single-tensor for-loop are all checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steplab.optim import OPTIMIZERS, create_optimizer, reference

STEPS = 60
TORCH_NAMES = [name for name in OPTIMIZERS if name != "lookahead"]

_wd = st.sampled_from([0.0, 0.01, 0.1])
_betas = st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.9, 0.99, 0.999]))
HYPER: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "gd": st.fixed_dictionaries({"lr": st.floats(1e-3, 0.2), "weight_decay": _wd}),
    "sgd": st.fixed_dictionaries({"lr": st.floats(1e-3, 0.2), "weight_decay": _wd}),
    "momentum": st.fixed_dictionaries(
        {
            "lr": st.floats(1e-3, 0.05),
            "momentum": st.floats(0.0, 0.95),
            "weight_decay": _wd,
            "dampening": st.sampled_from([0.0, 0.1, 0.5]),
        }
    ),
    "nesterov": st.fixed_dictionaries(
        {
            "lr": st.floats(1e-3, 0.05),
            "momentum": st.floats(0.1, 0.95),
            "weight_decay": _wd,
        }
    ),
    "adagrad": st.fixed_dictionaries(
        {
            "lr": st.floats(1e-3, 0.5),
            "lr_decay": st.sampled_from([0.0, 0.01]),
            "weight_decay": _wd,
            "initial_accumulator_value": st.sampled_from([0.0, 0.1]),
            "eps": st.sampled_from([1e-10, 1e-6]),
        }
    ),
    "rmsprop": st.fixed_dictionaries(
        {
            "lr": st.floats(1e-4, 0.01),
            "alpha": st.sampled_from([0.9, 0.99]),
            "weight_decay": _wd,
            "momentum": st.sampled_from([0.0, 0.9]),
            "centered": st.booleans(),
            "eps": st.sampled_from([1e-8, 1e-4]),
        }
    ),
    **{
        name: st.fixed_dictionaries(
            {
                "lr": st.floats(1e-4, 0.05),
                "betas": _betas,
                "weight_decay": _wd,
                "eps": st.sampled_from([1e-8, 1e-3]),
            }
        )
        for name in ("adam", "adamw", "amsgrad")
    },
    "nadam": st.fixed_dictionaries(
        {
            "lr": st.floats(1e-4, 0.05),
            "betas": _betas,
            "weight_decay": _wd,
            "momentum_decay": st.sampled_from([4e-3, 0.1]),
            "decoupled_weight_decay": st.booleans(),
        }
    ),
}
SHAPES = st.lists(
    st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3
)


def _run(
    name: str,
    hyper: dict[str, Any],
    impl: dict[str, bool],
    shapes: list[tuple[int, ...]],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    thetas = [rng.normal(size=s) for s in shapes]
    noises = [rng.normal(size=(STEPS, *s)) for s in shapes]
    params = [torch.nn.Parameter(torch.tensor(t, dtype=torch.float32)) for t in thetas]
    opt = create_optimizer(name, params, **hyper, **impl)
    rules = [reference.for_name(name, **hyper) for _ in shapes]
    for t in range(STEPS):
        for p, noise in zip(params, noises, strict=True):
            p.grad = 0.1 * p.detach() + torch.tensor(noise[t], dtype=torch.float32)
        opt.step()
        thetas = [
            rule.step(th, 0.1 * th + noise[t])
            for rule, th, noise in zip(rules, thetas, noises, strict=True)
        ]
    for p, th in zip(params, thetas, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), th, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize(
    "impl", [{}, {"foreach": True}, {"foreach": False}], ids=["chosen", "foreach", "for-loop"]
)
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_path_agrees_with_reference(name: str, impl: dict[str, bool]) -> None:
    @settings(max_examples=10, deadline=None)
    @given(hyper=HYPER[name], shapes=SHAPES, seed=st.integers(0, 2**16))
    def check(hyper: dict[str, Any], shapes: list[tuple[int, ...]], seed: int) -> None:
        _run(name, hyper, impl, shapes, seed)

    check()


@settings(max_examples=15, deadline=None)
@given(
    inner=st.sampled_from(["momentum", "nesterov", "adam", "adamw", "nadam", "rmsprop"]),
    k=st.integers(1, 7),
    alpha=st.floats(0.05, 1.0),
    pullback=st.sampled_from(["none", "reset", "pullback"]),
    seed=st.integers(0, 2**16),
)
def test_lookahead_agrees_with_reference(
    inner: str, k: int, alpha: float, pullback: str, seed: int
) -> None:
    hyper: dict[str, Any] = {"lr": 0.01}
    if inner == "rmsprop":
        hyper["momentum"] = 0.9
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(3, 4))
    noise = rng.normal(size=(STEPS, 3, 4))
    p = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float32))
    la = create_optimizer(
        f"lookahead({inner}, k={k}, alpha={alpha}, pullback={pullback})", [p], **hyper
    )
    key = "exp_avg" if inner.startswith(("adam", "nadam")) else "momentum_buffer"
    ref = reference.Lookahead(
        reference.for_name(inner, **hyper),
        theta,
        k=k,
        alpha=alpha,
        pullback=pullback,
        momentum_key=key,
    )
    for t in range(STEPS):
        p.grad = 0.1 * p.detach() + torch.tensor(noise[t], dtype=torch.float32)
        la.step()
        theta = ref.step(theta, 0.1 * theta + noise[t])
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", ["rmsprop", "nadam"])
def test_single_pass_path_agrees_with_reference(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled single-pass step (forced for tiny models) matches NumPy like torch's paths."""
    from steplab.optim.single_pass import SinglePassNAdam, SinglePassRMSprop

    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    probe = create_optimizer(name, [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(probe, (SinglePassRMSprop, SinglePassNAdam))

    @settings(max_examples=10, deadline=None)
    @given(hyper=HYPER[name], shapes=SHAPES, seed=st.integers(0, 2**16))
    def check(hyper: dict[str, Any], shapes: list[tuple[int, ...]], seed: int) -> None:
        _run(name, hyper, {}, shapes, seed)

    check()
