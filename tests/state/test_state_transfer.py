"""transfer(): carry state to a changed model (issue 3, section 3)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_net, trained
from torch import nn

from steplab.errors import SpecError
from steplab.optim import create_optimizer
from steplab.state import named_state_dict, transfer


def _finetune_model() -> nn.Module:
    """The same body under new names, plus a new head of another size."""
    model = nn.Module()
    model.add_module("backbone", nn.Linear(4, 6))
    model.add_module("norm", nn.BatchNorm1d(6))
    model.add_module("head", nn.Linear(6, 5))
    return model


def test_keep_carries_all_state_with_renames_and_reports_the_rest() -> None:
    model, opt = trained("adamw(lr=0.01)")
    new = _finetune_model()
    new_opt = torch.optim.AdamW(new.parameters(), lr=1e-4)
    report = transfer(named_state_dict(opt, model), new_opt, new, rename={"encoder.": "backbone."})
    assert report.carried == ("backbone.weight", "backbone.bias", "norm.weight", "norm.bias")
    assert report.renamed == {"encoder.weight": "backbone.weight", "encoder.bias": "backbone.bias"}
    assert set(report.dropped) == {"head.weight", "head.bias"}  # the shape changed
    assert report.fresh == ("head.weight", "head.bias")
    assert torch.equal(new_opt.state[new.backbone.weight]["exp_avg"],
                       opt.state[model.encoder.weight]["exp_avg"])
    assert new.head.weight not in new_opt.state
    assert new_opt.param_groups[0]["lr"] == 1e-4  # the fine-tuning run's hyperparameters


def test_reset_leaves_the_optimizer_fresh() -> None:
    model, opt = trained("adamw(lr=0.01)")
    new_opt = create_optimizer("adamw(lr=0.01)", model)
    report = transfer(named_state_dict(opt, model), new_opt, model, policy="reset")
    assert report.carried == () and len(report.fresh) == 6 and len(report.dropped) == 6
    assert len(new_opt.state) == 0


def test_keep_second_moment_zeroes_first_moments_and_keeps_v_and_step() -> None:
    model, opt = trained("adamw(lr=0.01)", steps=5)
    new_opt = create_optimizer("adamw(lr=0.01)", model)
    transfer(named_state_dict(opt, model), new_opt, model, policy="keep-second-moment")
    for p in model.parameters():
        new, old = new_opt.state[p], opt.state[p]
        assert torch.count_nonzero(new["exp_avg"]) == 0
        assert torch.equal(new["exp_avg_sq"], old["exp_avg_sq"])
        assert new["step"].item() == 5  # kept so that v stays correctly bias-corrected


def test_keep_second_moment_drops_sgd_momentum_and_restarts_lookahead() -> None:
    model, opt = trained("lookahead(momentum(lr=0.1, momentum=0.9), k=3)", steps=4)
    new_opt = create_optimizer("lookahead(momentum(lr=0.1, momentum=0.9), k=3)", model)
    transfer(named_state_dict(opt, model), new_opt, model, policy="keep-second-moment")
    assert all("momentum_buffer" not in new_opt.state[p] for p in model.parameters())
    assert new_opt.la_step == 0
    for p in model.parameters():
        assert torch.equal(new_opt.slow_state[p]["slow_param"], p)


def test_state_moves_between_adam_and_adamw() -> None:
    model, opt = trained("adam(lr=0.01)")
    new_opt = create_optimizer("adamw(lr=0.01)", model)
    report = transfer(named_state_dict(opt, model), new_opt, model)
    assert len(report.carried) == 6


def test_bad_policy_and_rename_are_refused() -> None:
    model, opt = trained("adamw(lr=0.01)")
    with pytest.raises(SpecError, match="policy: got 'keep-all'"):
        transfer(named_state_dict(opt, model), opt, model, policy="keep-all")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="rename: got"):
        transfer(named_state_dict(opt, model), opt, model, rename={"a": 1})  # type: ignore[dict-item]
    assert make_net() is not None
