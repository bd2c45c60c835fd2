"""The registry describes what torch really keeps: buffers, bytes, defaults, search spaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steplab.optim import OPTIMIZERS, Lookahead, create_optimizer

TORCH_NAMES = [name for name in OPTIMIZERS if name != "lookahead"]


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_buffers_and_bytes_match_the_state_torch_keeps(name: str) -> None:
    param = nn.Parameter(torch.ones(10, 3))
    opt = create_optimizer(name, [param])
    param.grad = torch.ones(10, 3)
    opt.step()
    info = OPTIMIZERS[name]
    state = opt.state[param]
    assert tuple(sorted(state)) == tuple(sorted(info.buffers))
    assert set(info.first_moment) | set(info.second_moment) <= set(info.buffers)
    full = [t for t in state.values() if t.shape == param.shape]
    assert sum(t.element_size() for t in full) == info.bytes_per_param


@pytest.mark.parametrize(
    "pullback, buffers", [("none", {"slow_param"}), ("pullback", {"slow_param", "slow_momentum"})]
)
def test_lookahead_entry_matches_its_slow_state(pullback: str, buffers: set[str]) -> None:
    param = nn.Parameter(torch.ones(3))
    la = Lookahead(torch.optim.Adam([param]), pullback=pullback)
    param.grad = torch.ones(3)
    la.step()  # slow buffers are created at the first step, beside Adam's
    assert set(la.slow_state[param]) == buffers
    assert OPTIMIZERS["lookahead"].buffers == ("slow_param",)
    assert OPTIMIZERS["lookahead"].bytes_per_param == 4


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_search_space_is_well_formed_and_starts_with_lr(name: str) -> None:
    info = OPTIMIZERS[name]
    space = info.search_space
    if name != "lookahead":
        assert space["lr"][2:] == ("log", 1)
    for key, (low, high, scale, trials) in space.items():
        assert key in info.accepts(), key
        assert low < high and scale in ("log", "linear") and trials >= 1
        assert scale == "linear" or low > 0
    if "beta1" in space:
        assert space["beta1"][3] <= space["eps"][3] <= space["beta2"][3]
    assert info.rule and info.doc and "\n" not in info.rule
