"""inspect(): buffers, sizes, statistics and totals (issue 3, section 1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_net, trained
from rich.console import Console

from steplab import checkpoint
from steplab.optim import create_optimizer
from steplab.state import inspect, inspect_checkpoint


@pytest.mark.parametrize(("spec", "ratio"), [
    ("adamw(lr=0.01)", 2.0), ("lookahead(adamw(lr=0.01))", 3.0), ("momentum(lr=0.1)", 1.0),
    ("amsgrad(lr=0.01)", 3.0), ("sgd(lr=0.1)", 0.0),
])
def test_state_to_parameter_ratio_matches_the_rule(spec: str, ratio: float) -> None:
    model, opt = trained(spec)
    report = inspect(opt, model)
    # the per-parameter step counters (4 bytes each) add a little on top of the buffers
    assert report.ratio == pytest.approx(ratio, abs=0.1)
    assert report.param_bytes == sum(p.numel() * 4 for p in model.parameters())


def test_adam_statistics_match_a_direct_computation() -> None:
    model, opt = trained("adam(lr=0.01)", steps=4)
    row = next(p for p in inspect(opt, model).params if p.name == "encoder.weight")
    state = opt.state[model.encoder.weight]
    m, v, t = state["exp_avg"].double(), state["exp_avg_sq"].double(), state["step"].item()
    assert row.step == t == 4
    assert row.mean_abs_m == pytest.approx(m.abs().mean().item())
    assert row.rms_v == pytest.approx(v.pow(2).mean().sqrt().item())
    eff = 0.01 / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    assert row.step_size is not None
    assert row.step_size["p50"] == pytest.approx(torch.quantile(eff.flatten(), 0.5).item())
    assert [b.name for b in row.buffers] == ["step", "exp_avg", "exp_avg_sq"]
    assert row.buffers[1].bytes == 4 * model.encoder.weight.numel()


def test_lookahead_slow_weights_are_listed_as_buffers() -> None:
    model, opt = trained("lookahead(adamw(lr=0.01))")
    row = inspect(opt, model).params[0]
    assert "lookahead.slow_param" in [b.name for b in row.buffers]


def test_non_adaptive_rules_have_no_step_size_and_unstepped_state_is_empty() -> None:
    model, opt = trained("momentum(lr=0.1)")
    row = inspect(opt, model).params[0]
    assert row.step_size is None and row.mean_abs_m is not None and row.rms_v is None
    fresh = create_optimizer("adam(lr=0.1)", make_net())
    assert inspect(fresh).state_bytes == 0


def test_without_a_model_names_come_from_param_names() -> None:
    model, opt = trained("adamw(lr=0.01)")
    assert {p.name for p in inspect(opt).params} == {n for n, _ in model.named_parameters()}
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    assert inspect(plain).params[0].name == "param_0"


def test_report_is_json_serialisable_and_renders_as_tables() -> None:
    model, opt = trained("adamw(lr=0.01)")
    report = inspect(opt, model)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ratio"] == report.ratio and len(data["params"]) == 6
    assert data["groups"][0]["betas"] == [0.9, 0.999]
    console = Console(width=200, record=True)
    console.print(report)
    text = console.export_text()
    assert "encoder.weight" in text and "state / parameters" in text


def test_checkpoint_on_disk_gives_the_same_report_as_the_live_optimizer(tmp_path: Path) -> None:
    model, opt = trained("lookahead(adamw(lr=0.01))")
    path = checkpoint.save(tmp_path / "c", model=model, optimizer=opt, step=3)
    live, disk = inspect(opt, model), inspect_checkpoint(path)
    assert disk.state_bytes == live.state_bytes and disk.param_bytes == live.param_bytes
    assert [p.mean_abs_m for p in disk.params] == [p.mean_abs_m for p in live.params]
    assert disk.source == "c, step 3" and not math.isnan(disk.ratio)


def test_checkpoint_without_optimizer_lists_model_tensors(tmp_path: Path) -> None:
    path = checkpoint.save(tmp_path / "c", model=make_net())
    report = inspect_checkpoint(path)
    assert report.state_bytes == 0 and "norm.running_mean" in [p.name for p in report.params]
