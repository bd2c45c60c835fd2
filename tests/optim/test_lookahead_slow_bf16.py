"""Lookahead's slow copy in bfloat16: ``lookahead(adamw(state=int8), slow=bf16)``."""

from __future__ import annotations

import pytest
import torch

from steplab.errors import SpecError
from steplab.optim import Lookahead, create_optimizer


def _train(spec: str, steps: int = 10) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Tanh(), torch.nn.Linear(96, 5))
    opt = create_optimizer(spec, model)
    x, y = torch.randn(32, 64), torch.randint(0, 5, (32,))
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def test_slow_copy_is_bf16_and_the_sync_follows_the_rule() -> None:
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(300))
    la = Lookahead(torch.optim.SGD([w], lr=0.1), k=2, alpha=0.5, slow="bf16")
    start = w.detach().clone()
    grads = [torch.randn(300), torch.randn(300)]
    for g in grads:
        w.grad = g.clone()
        la.step()
    slow = la.state[w]["slow_param"]
    assert slow.dtype == torch.bfloat16
    fast = start - 0.1 * grads[0] - 0.1 * grads[1]  # two SGD steps
    phi0 = start.to(torch.bfloat16).float()
    expected = fast + 0.5 * (phi0 - fast)  # θ ← φ + α(θ − φ), in float32
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(slow, expected.to(torch.bfloat16))


def test_bf16_slow_copy_halves_lookahead_memory_and_tracks_fp32() -> None:
    model32, opt32 = _train("lookahead(adamw, k=3)")
    model16, opt16 = _train("lookahead(adamw, k=3, slow=bf16)")
    w32, w16 = model32[0].weight, model16[0].weight
    assert opt16.state[w16]["slow_param"].element_size() * 2 == (
        opt32.state[w32]["slow_param"].element_size())
    torch.testing.assert_close(w16, w32, rtol=0, atol=5e-3)


def test_int8_inner_with_bf16_slow_round_trips_bit_exactly() -> None:
    model, opt = _train("lookahead(adamw(state=int8), slow=bf16)", steps=7)
    again = create_optimizer("lookahead(adamw(state=int8), slow=bf16)", model)
    again.load_state_dict(opt.state_dict())
    for p in model.parameters():
        assert sorted(again.state[p]) == sorted(opt.state[p])
        for key, value in opt.state[p].items():
            assert again.state[p][key].dtype == value.dtype, key
            assert torch.equal(again.state[p][key], value), key
    assert again.param_groups[0]["lookahead_step"] == 7


def test_bad_slow_form_is_one_clear_error() -> None:
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(SpecError, match="slow: got 'fp8', expected one of fp32, bf16"):
        create_optimizer("lookahead(adamw, slow=fp8)", [w])
