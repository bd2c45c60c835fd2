"""The compiled single-pass steps at the edges: non-finite and subnormal values give exactly
torch's result, and an update in place is seen by autograd like torch's own in-place ops.

The kernels are the process-wide ones of test_single_pass.py (plain RMSprop, NAdam, the
sync), so this file adds no compile beyond theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from steplab.optim.single_pass import SinglePassNAdam, SinglePassRMSprop
from steplab.optim.sync_kernel import SYNC_KERNEL, compiled_sync

#: values at the edges of float32: infinities, NaN, signed zeros, subnormals, huge
EDGES = [math.inf, -math.inf, math.nan, 0.0, -0.0, 1e-40, -3e-42, 1.0, -2.5, 1e20, -1e30, 3e38]
#: long enough to cover a vectorised body and its scalar tail
VALUES = st.lists(
    st.sampled_from(EDGES) | st.floats(-10, 10, width=32), min_size=1, max_size=40
)
# α = 0 (RMSprop), β₂ = 0 (NAdam) or ε = 0 make the step ±η·g/|g|, which flips with the last
# bit of a g that cancels to about 0 (torch's kernels fuse multiply-adds, inductor's C++ does
# not), so those ill-conditioned settings are left to the NumPy reference tests. So are steps
# whose coupled weight decay cancels the gradient (g + λ·θ ≈ 0, e.g. g = 1, θ = -10, λ = 0.1:
# unfused it rounds to 0, fused it is -1.5e-8, and divided by √v + ε ≈ 2e-8 the two steps
# differ by 0.007; a full test run found exactly that case).


def _decay_cancels(grad: list[float], theta: list[float], hp: dict[str, object]) -> bool:
    """True where coupled weight decay brings some finite g + λ·θ within 1e-4 of its terms."""
    decay = float(hp.get("weight_decay", 0.0))  # type: ignore[arg-type]
    if not decay or hp.get("decoupled_weight_decay"):
        return False
    sign = -1.0 if hp.get("maximize") else 1.0
    for g, p in zip(grad, theta, strict=True):
        g, term = sign * g, decay * p
        finite = math.isfinite(g) and math.isfinite(term) and g != 0 and term != 0
        if finite and abs(g + term) < 1e-4 * max(abs(g), abs(term)):
            return True
    return False


Build = Callable[[list[torch.Tensor], bool, dict[str, object]], torch.optim.Optimizer]
RULES: dict[str, tuple[Build, st.SearchStrategy[dict[str, object]]]] = {
    "rmsprop": (
        lambda ps, ours, hp: (SinglePassRMSprop if ours else torch.optim.RMSprop)(
            ps, foreach=False, **hp
        ),
        st.fixed_dictionaries(
            {
                "lr": st.sampled_from([1e-2, 1.0]),
                "alpha": st.sampled_from([0.5, 0.9, 0.99]),
                "eps": st.sampled_from([1e-8, 1e-6]),
                "weight_decay": st.sampled_from([0.0, 0.1]),
                "maximize": st.booleans(),
            }
        ),
    ),
    "nadam": (
        lambda ps, ours, hp: (SinglePassNAdam if ours else torch.optim.NAdam)(
            ps, foreach=False, **hp
        ),
        st.fixed_dictionaries(
            {
                "lr": st.sampled_from([1e-2, 1.0]),
                "betas": st.sampled_from([(0.9, 0.999), (0.0, 0.9), (0.5, 0.9)]),
                "eps": st.sampled_from([1e-8, 1e-6]),
                "weight_decay": st.sampled_from([0.0, 0.1]),
                "decoupled_weight_decay": st.booleans(),
                "maximize": st.booleans(),
            }
        ),
    ),
}


def _same(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Same infinities and NaNs in the same places; finite values to float32 rounding (torch's
    eager kernels contract a·b + c into one FMA, inductor's C++ does not: last-bit differences
    that later steps amplify)."""
    assert torch.equal(ours.isnan(), theirs.isnan()), what
    assert torch.equal(ours.isinf() & (ours > 0), theirs.isinf() & (theirs > 0)), what
    assert torch.equal(ours.isinf() & (ours < 0), theirs.isinf() & (theirs < 0)), what
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True, msg=what)


@pytest.mark.parametrize("rule", list(RULES))
def test_non_finite_and_subnormal_values_match_torchs_step(rule: str) -> None:
    build, hyper = RULES[rule]

    @settings(max_examples=40, deadline=None)
    @given(hp=hyper, theta=VALUES, data=st.data())
    def check(hp: dict[str, object], theta: list[float], data: st.DataObject) -> None:
        n = len(theta)
        grads = [data.draw(st.lists(st.sampled_from(EDGES) | st.floats(-10, 10, width=32),
                                    min_size=n, max_size=n)) for _ in range(3)]
        ours = torch.nn.Parameter(torch.tensor(theta))
        theirs = torch.nn.Parameter(torch.tensor(theta))
        a, b = build([ours], True, hp), build([theirs], False, hp)
        for t, grad in enumerate(grads):
            assume(not _decay_cancels(grad, theirs.detach().tolist(), hp))
            ours.grad, theirs.grad = torch.tensor(grad), torch.tensor(grad)
            a.step()
            b.step()
            _same(ours.detach(), theirs.detach(), f"parameter after step {t + 1}")
            for key, value in b.state[theirs].items():
                _same(a.state[ours][key], value, f"state {key!r} after step {t + 1}")

    check()


def test_weight_decay_zero_keeps_an_infinite_parameter_infinite() -> None:
    for cls in (SinglePassRMSprop, SinglePassNAdam):
        w = torch.nn.Parameter(torch.tensor([math.inf, -math.inf, 1.0]))
        w.grad = torch.tensor([0.5, 0.5, 0.5])
        cls([w], lr=0.1, weight_decay=0.0).step()
        assert w[0].item() == math.inf and w[1].item() == -math.inf, cls.__name__


@pytest.mark.parametrize("cls", [SinglePassRMSprop, SinglePassNAdam, torch.optim.RMSprop])
def test_a_step_invalidates_a_parameter_saved_for_backward(cls: type) -> None:
    """As with torch's optimizers, backward through a graph that saved a stepped weight fails."""
    w = torch.nn.Parameter(torch.randn(64))
    opt = cls([w], lr=0.01)
    w.grad = torch.ones(64)
    loss = (w * w).sum()  # saves w
    before = w._version
    opt.step()
    assert w._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_the_compiled_sync_invalidates_a_fast_weight_saved_for_backward() -> None:
    w = torch.nn.Parameter(torch.randn(64))
    slow = torch.zeros(64)
    loss = (w * w).sum()
    with torch.no_grad():
        assert compiled_sync([(w, slow)], 0.5)
    assert SYNC_KERNEL.compile_seconds
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
