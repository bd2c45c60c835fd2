"""Lookahead files written before slow weights moved into torch's state protocol still load.

The fixtures were written by steplab's previous Lookahead (the ``"lookahead"``
state-dict key, named-optim format 1) after 4 steps of
``lookahead(adam(lr=0.01), k=3, pullback=pullback)``; resuming from them must
equal an uninterrupted run of the current code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from steplab import checkpoint
from steplab.optim import Lookahead, create_optimizer
from steplab.state import inspect_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
SPEC = "lookahead(adam(lr=0.01), k=3, pullback=pullback)"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int,
           gen: torch.Generator) -> None:
    for _ in range(steps):
        x = torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _uninterrupted() -> nn.Module:
    model = _model()
    _train(model, create_optimizer(SPEC, model), 9, torch.Generator().manual_seed(1))
    return model


def _resume(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):  # the data the first 4 steps used
        torch.randn(8, 4, generator=gen)
    _train(model, opt, 5, gen)


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_old_positional_state_dict_loads_into_the_new_layout_and_resumes_exactly() -> None:
    saved = torch.load(FIXTURES / "lookahead-v1-state-dict.pt", weights_only=True)
    assert "lookahead" in saved["optimizer"]  # really the old layout
    model = _model()
    model.load_state_dict(saved["model"])
    opt = create_optimizer(SPEC, model)
    opt.load_state_dict(saved["optimizer"])
    assert isinstance(opt, Lookahead) and opt.la_step == 4
    assert all(set(opt.state[p]) >= {"slow_param", "slow_momentum", "exp_avg"}
               for p in model.parameters())
    assert "lookahead" not in opt.state_dict()
    _resume(model, opt)
    _assert_same(model, _uninterrupted())


def test_old_checkpoint_directory_loads_and_resumes_exactly() -> None:
    model = _model()
    opt = create_optimizer(SPEC, model)
    result = checkpoint.load(FIXTURES / "lookahead-v1-checkpoint", model=model, optimizer=opt)
    assert result.step == 4 and "optimizer" in result.restored
    assert isinstance(opt, Lookahead) and opt.la_step == 4
    _resume(model, opt)
    _assert_same(model, _uninterrupted())


def test_inspect_shows_slow_buffers_of_an_old_checkpoint() -> None:
    report = inspect_checkpoint(FIXTURES / "lookahead-v1-checkpoint")
    names = {b.name for p in report.params for b in p.buffers}
    assert {"lookahead.slow_param", "lookahead.slow_momentum", "exp_avg"} <= names
