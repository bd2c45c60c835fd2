"""Lean optimizer state through the state layer: checkpoints, named state, transfer, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from steplab import checkpoint
from steplab.optim import create_optimizer
from steplab.state import inspect, inspect_checkpoint, load_named_state_dict, named_state_dict
from steplab.state import transfer as transfer_state
from steplab.state.tensorfile import read_header

SPEC = "lookahead(adamw(state=int8), slow=bf16)"


def _trained(spec: str = SPEC, steps: int = 6) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = create_optimizer(spec, model)
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def _same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer, model: nn.Module) -> None:
    for p in model.parameters():
        assert sorted(a.state[p]) == sorted(b.state[p])
        for key, value in a.state[p].items():
            other = b.state[p][key]
            assert other.dtype == value.dtype and torch.equal(other, value), key


def test_checkpoint_round_trips_codes_scales_and_bf16_bit_exactly(tmp_path: Path) -> None:
    model, opt = _trained()
    checkpoint.save(tmp_path / "ckpt", model=model, optimizer=opt, step=6)
    header = read_header(tmp_path / "ckpt" / "tensors.safetensors")
    entries = {e.key: e.dtype for e in header.entries}
    dtypes = {str(d) for k, d in entries.items() if "codes" in k or "absmax" in k or "slow" in k}
    assert dtypes == {"torch.uint8", "torch.float32", "torch.bfloat16"}
    fresh = create_optimizer(SPEC, model)
    checkpoint.load(tmp_path / "ckpt", model=model, optimizer=fresh)
    _same_state(opt, fresh, model)


def test_named_state_round_trips_into_a_reordered_optimizer() -> None:
    model, opt = _trained("adamw(state=int4)")
    named = named_state_dict(opt, model)
    assert named["state"]["0.weight"]["exp_avg_codes"].numel() == 64 * 128 // 2
    params = list(model.named_parameters())
    again = create_optimizer("adamw(state=int4)", [p for _, p in reversed(params)])
    assert load_named_state_dict(again, model, named).complete
    _same_state(opt, again, model)


def test_transfer_keep_second_moment_zeroes_quantised_first_moments() -> None:
    model, opt = _trained("adamw(state=int8)")
    named = named_state_dict(opt, model)
    fresh = create_optimizer("adamw(state=int8)", model)
    transfer_state(named, fresh, model, policy="keep-second-moment")
    state = fresh.state[model[0].weight]
    assert not state["exp_avg_codes"].any() or not state["exp_avg_absmax"].any()
    assert torch.equal(state["exp_avg_sq_codes"], opt.state[model[0].weight]["exp_avg_sq_codes"])


def test_inspect_shows_bytes_per_parameter_and_decoded_statistics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(2048, 1024, bias=False)
    for spec, most in (("adamw(state=int8)", 2.05), ("adamw(state=int4)", 1.07)):
        opt = create_optimizer(spec, model)
        model(torch.randn(4, 2048)).sum().backward()
        opt.step()
        report = inspect(opt, model)
        assert report.bytes_per_param <= most
        assert report.params[0].mean_abs_m is not None and report.params[0].rms_v is not None
        assert report.params[0].step_size is not None
        assert json.loads(json.dumps(report.to_dict()))["bytes_per_param"] <= most
    checkpoint.save(tmp_path / "c", model=model, optimizer=opt, step=1)
    from_disk = inspect_checkpoint(tmp_path / "c")
    assert from_disk.bytes_per_param == report.bytes_per_param
    assert from_disk.params[0].mean_abs_m == report.params[0].mean_abs_m
