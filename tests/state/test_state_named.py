"""Optimizer state keyed by parameter name (issue 3, section 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import Net, make_net, train_steps, trained
from torch import nn

from steplab.errors import StateMismatchError
from steplab.optim import OPTIMIZERS, Lookahead, create_optimizer
from steplab.state import load_named_state_dict, named_state_dict, params_sha256

SPECS = [f"{name}(lr=0.01)" for name in OPTIMIZERS if name != "lookahead"] + [
    "lookahead(adamw(lr=0.01), k=2)",
    "lookahead(momentum(lr=0.01), k=2, pullback=pullback)",
]


def _reordered_copy(model: Net) -> Net:
    other = Net(reverse=True)
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("spec", SPECS)
def test_state_loads_by_name_into_a_reordered_model_and_training_continues_bit_exact(
    spec: str,
) -> None:
    model, opt = trained(spec, steps=3)
    other = _reordered_copy(model)
    other_opt = create_optimizer(spec, other)
    report = load_named_state_dict(other_opt, other, named_state_dict(opt, model))
    assert report.complete and set(report.loaded) == {n for n, _ in model.named_parameters()}
    train_steps(model, opt, 3, seed=5)
    train_steps(other, other_opt, 3, seed=5)
    assert params_sha256(model) == params_sha256(_reordered_copy_back(other))


def _reordered_copy_back(model: Net) -> Net:
    plain = Net()
    plain.load_state_dict(model.state_dict())
    return plain


def test_named_state_dict_keys_state_and_groups_by_name() -> None:
    model, opt = trained("adamw(lr=0.01)")
    named = named_state_dict(opt, model)
    assert named["format"] == "steplab.named-optim/2"
    assert set(named["state"]) == {n for n, _ in model.named_parameters()}
    assert sorted(n for g in named["param_groups"] for n in g["params"]) == sorted(named["state"])
    assert named["optimizer"] == "torch.optim.adamw.AdamW"
    assert named["param_shapes"]["encoder.weight"] == [6, 4]


def _extended() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = make_net()
    model.add_module("extra", nn.Linear(3, 3))
    return model, torch.optim.AdamW(model.parameters(), lr=0.01)


def test_strict_load_names_missing_and_unexpected_parameters() -> None:
    model, opt = trained("adamw(lr=0.01)")
    named = named_state_dict(opt, model)
    bigger, bigger_opt = _extended()
    with pytest.raises(StateMismatchError, match=r"missing: extra\.weight, extra\.bias"):
        load_named_state_dict(bigger_opt, bigger, named)
    smaller = nn.Sequential()
    smaller.add_module("head", nn.Linear(6, 3))
    with pytest.raises(StateMismatchError, match=r"unexpected: .*encoder\.weight"):
        load_named_state_dict(torch.optim.AdamW(smaller.parameters()), smaller, named)


def test_non_strict_load_keeps_matches_and_reports_the_rest() -> None:
    model, opt = trained("adamw(lr=0.01)")
    bigger, bigger_opt = _extended()
    report = load_named_state_dict(bigger_opt, bigger, named_state_dict(opt, model), strict=False)
    assert report.missing == ("extra.weight", "extra.bias") and not report.complete
    assert torch.equal(bigger_opt.state[bigger.head.weight]["exp_avg"],
                       opt.state[model.head.weight]["exp_avg"])
    assert bigger.extra.weight not in bigger_opt.state


def test_shape_mismatch_is_reported_and_that_parameter_starts_fresh() -> None:
    model, opt = trained("adamw(lr=0.01)")
    wider = make_net(width=7)
    wider_opt = torch.optim.AdamW(wider.parameters(), lr=0.01)
    named = named_state_dict(opt, model)
    with pytest.raises(StateMismatchError, match=r"shape-mismatched: encoder\.weight"):
        load_named_state_dict(wider_opt, wider, named)
    report = load_named_state_dict(wider_opt, wider, named, strict=False)
    assert "head.weight" in report.shape_mismatched and wider.head.weight not in wider_opt.state


def test_parameters_moved_between_groups_keep_state_and_current_hyperparameters() -> None:
    model = make_net()
    p = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p["encoder.weight"], p["encoder.bias"]], "lr": 0.1},
                             {"params": [p["head.weight"], p["head.bias"], p["norm.weight"],
                                         p["norm.bias"]], "lr": 0.2}])
    train_steps(model, opt, 2)
    regrouped = torch.optim.AdamW([{"params": [p["head.weight"], p["encoder.weight"]], "lr": 0.3},
                                   {"params": [p["encoder.bias"], p["head.bias"], p["norm.weight"],
                                               p["norm.bias"]], "lr": 0.4}])
    report = load_named_state_dict(regrouped, model, named_state_dict(opt, model))
    assert report.groups_from_saved == ()
    assert [g["lr"] for g in regrouped.param_groups] == [0.3, 0.4]
    for param in model.parameters():
        assert torch.equal(regrouped.state[param]["exp_avg_sq"], opt.state[param]["exp_avg_sq"])


def test_groups_with_the_same_names_take_the_saved_hyperparameters() -> None:
    model, opt = trained("adamw(lr=0.01)")
    for group in opt.param_groups:
        group["lr"] = 0.123  # e.g. set by a scheduler
    fresh = create_optimizer("adamw(lr=0.01)", model)
    report = load_named_state_dict(fresh, model, named_state_dict(opt, model))
    assert report.groups_from_saved == tuple(range(len(fresh.param_groups)))
    assert all(g["lr"] == 0.123 for g in fresh.param_groups)
    kept = create_optimizer("adamw(lr=0.01)", model)
    load_named_state_dict(kept, model, named_state_dict(opt, model), hyperparameters="current")
    assert all(g["lr"] == 0.01 for g in kept.param_groups)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_wrapper_prefixes_are_stripped_for_data_parallel_and_compile() -> None:
    model, opt = trained("adamw(lr=0.01)")
    plain = named_state_dict(opt, model)
    for wrapped in (nn.DataParallel(model), torch.compile(model)):
        assert any(n.startswith(("module.", "_orig_mod.")) for n, _ in wrapped.named_parameters())
        named = named_state_dict(opt, wrapped)
        assert named["state"].keys() == plain["state"].keys()
        fresh = create_optimizer("adamw(lr=0.01)", model)
        assert load_named_state_dict(fresh, wrapped, named).complete


def test_lookahead_slow_weights_follow_their_parameters_by_name() -> None:
    model, opt = trained("lookahead(adamw(lr=0.01), k=3)", steps=4)
    other = _reordered_copy(model)
    other_opt = create_optimizer("lookahead(adamw(lr=0.01), k=3)", other)
    load_named_state_dict(other_opt, other, named_state_dict(opt, model))
    assert isinstance(other_opt, Lookahead) and isinstance(opt, Lookahead)
    assert other_opt.la_step == opt.la_step == 4
    other_params = dict(other.named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(other_opt.slow_state[other_params[name]]["slow_param"],
                           opt.slow_state[param]["slow_param"])


def test_lookahead_on_one_side_only_is_a_mismatch_in_strict_mode() -> None:
    model, opt = trained("adamw(lr=0.01)")
    la = create_optimizer("lookahead(adamw(lr=0.01), k=3)", model)
    with pytest.raises(StateMismatchError, match="saved state has no slow weights"):
        load_named_state_dict(la, model, named_state_dict(opt, model))
    report = load_named_state_dict(la, model, named_state_dict(opt, model), strict=False)
    assert report.notes and la.la_step == 0
    assert la.slow_state == {}  # taken at the next step, from the weights it starts from
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, la, 1, seed=9)
    for name, param in model.named_parameters():
        assert torch.equal(la.slow_state[param]["slow_param"], before[name])


def test_a_different_optimizer_class_is_a_mismatch_in_strict_mode() -> None:
    model, opt = trained("adamw(lr=0.01)")
    with pytest.raises(StateMismatchError, match=r"saved state is from torch\.optim\.adamw\.AdamW"):
        load_named_state_dict(torch.optim.Adam(model.parameters()), model,
                              named_state_dict(opt, model))


def test_an_optimizer_holding_a_foreign_tensor_is_refused() -> None:
    model = make_net()
    stranger = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([*model.parameters(), stranger], lr=0.1)
    with pytest.raises(StateMismatchError, match=r"params\[6\]: tensor of shape \(2,\)"):
        named_state_dict(opt, model)


def test_loading_copies_so_the_two_optimizers_do_not_share_buffers() -> None:
    model, opt = trained("adamw(lr=0.01)")
    fresh = create_optimizer("adamw(lr=0.01)", model)
    load_named_state_dict(fresh, model, named_state_dict(opt, model))
    before = opt.state[model.head.weight]["exp_avg"].clone()
    train_steps(model, fresh, 1)
    assert torch.equal(opt.state[model.head.weight]["exp_avg"], before)
