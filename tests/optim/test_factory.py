"""create_optimizer: names, fastest implementation, no-decay groups, overrides, errors."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import nn

from steplab.errors import SpecError
from steplab.optim import (
    OPTIMIZERS,
    Lookahead,
    create_optimizer,
    inner_optimizer,
    named_param_groups,
    optimizer_info,
    parse_spec,
)

TORCH_NAMES = [name for name in OPTIMIZERS if name != "lookahead"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_every_name_builds_its_torch_class_with_registry_defaults(name: str) -> None:
    opt = create_optimizer(name, _model())
    info = OPTIMIZERS[name]
    assert f"{type(opt).__module__.rsplit('.', 1)[0]}.{type(opt).__name__}" == info.torch_class
    for key, value in info.defaults.items():
        if key in ("state", "min_size"):  # steplab's own: fp32 is torch's class, unchanged
            assert value in ("fp32", 4096) and key not in opt.defaults
            continue
        assert opt.defaults[key] == value, key
    assert optimizer_info(opt) is info
    assert str(opt.steplab_spec) == name  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "name, flags",
    [
        ("adam", {"fused": True}),
        ("adamw", {"fused": True}),
        ("amsgrad", {"fused": True}),
        ("sgd", {"foreach": True}),
        ("momentum", {"fused": True}),
        ("adagrad", {"fused": True}),
        ("rmsprop", {"foreach": False}),
        ("nadam", {"foreach": False}),
    ],
)
def test_picks_the_fastest_implementation_for_cpu_float32(
    name: str, flags: dict[str, bool]
) -> None:
    opt = create_optimizer(name, _model())
    assert {k: opt.defaults[k] for k in flags} == flags


def test_falls_back_to_foreach_where_fused_cannot_run() -> None:
    params = [torch.zeros(2, dtype=torch.complex64, requires_grad=True)]
    opt = create_optimizer("adam", params)
    assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")


def test_spec_flags_override_the_implementation_choice() -> None:
    opt = create_optimizer("adam(fused=False)", _model())
    assert opt.defaults["fused"] is False and opt.defaults["foreach"] is None
    opt = create_optimizer("adam(foreach=False)", _model())
    assert opt.defaults["foreach"] is False and not opt.defaults["fused"]


def test_module_params_get_no_decay_group_for_biases_and_norm_weights() -> None:
    model = _model()
    opt = create_optimizer("adamw(weight_decay=0.1)", model)
    groups = [(g["param_names"], g["weight_decay"]) for g in opt.param_groups]
    assert groups == [
        (["0.weight", "2.weight"], 0.1),
        (["0.bias", "1.weight", "1.bias", "2.bias"], 0.0),
    ]
    names = [n for g in opt.param_groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())


def test_no_decay_rule_is_overridable() -> None:
    opt = create_optimizer("adamw", _model(), no_decay=None)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01
    opt = create_optimizer("adamw", _model(), no_decay=lambda name, p: name.startswith("2."))
    assert opt.param_groups[1]["param_names"] == ["2.weight", "2.bias"]


def test_frozen_parameters_are_left_out() -> None:
    model = _model()
    model[0].requires_grad_(False)
    opt = create_optimizer("sgd", model)
    assert "0.weight" not in [n for g in opt.param_groups for n in g["param_names"]]


def test_iterables_of_tensors_and_of_group_dicts_are_accepted() -> None:
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    opt = create_optimizer("sgd", [a, b])
    assert opt.param_groups[0]["params"] == [a, b]
    opt = create_optimizer("sgd(lr=0.1)", [{"params": [a]}, {"params": [b], "lr": 0.5}])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    groups = named_param_groups(_model())
    assert create_optimizer("adam", groups).param_groups[0]["param_names"] == [
        "0.weight",
        "2.weight",
    ]


def test_overrides_fill_the_innermost_optimizer_and_beta_aliases_map_to_betas() -> None:
    opt = create_optimizer("lookahead(adamw(lr=0.1), k=3)", _model(), lr=0.02, beta2=0.95)
    assert isinstance(opt, Lookahead) and opt.k == 3
    inner = inner_optimizer(opt)
    assert inner.defaults["lr"] == 0.02 and inner.defaults["betas"] == (0.9, 0.95)
    assert str(opt.steplab_spec) == "lookahead(adamw(beta2=0.95, lr=0.02), k=3)"  # type: ignore[attr-defined]
    assert optimizer_info(opt).name == "lookahead" and optimizer_info(inner).name == "adamw"


def test_accepts_a_parsed_spec() -> None:
    opt = create_optimizer(parse_spec("nesterov(lr=0.3)"), _model())
    assert opt.defaults["nesterov"] is True and opt.defaults["lr"] == 0.3


@pytest.mark.parametrize(
    "spec, params, message",
    [
        (
            "sgd(lr=-1)",
            None,
            "optimizer spec 'sgd(lr=-1)': lr: got -1, expected a finite number > 0",
        ),
        ("adam(betas=0.9)", None, "optimizer spec 'adam(betas=0.9)'"),
        ("adam", [], "params: got no trainable parameters"),
        ("adam", torch.ones(2), "params: got a single Tensor"),
        ("adamw(lr=)", None, "at column 10: expected a value"),
        ("lookahead(adam, k=0)", None, "k: got 0, expected an integer >= 1"),
    ],
)
def test_bad_input_raises_spec_error(spec: str, params: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        create_optimizer(spec, _model() if params is None else params)
    assert message in str(info.value)


def test_optimizer_info_by_class_and_flags() -> None:
    w = [nn.Parameter(torch.ones(2))]
    cases = {
        "sgd": torch.optim.SGD(w, lr=0.1),
        "momentum": torch.optim.SGD(w, lr=0.1, momentum=0.9),
        "nesterov": torch.optim.SGD(w, lr=0.1, momentum=0.9, nesterov=True),
        "adam": torch.optim.Adam(w),
        "amsgrad": torch.optim.Adam(w, amsgrad=True),
        "adamw": torch.optim.AdamW(w),
        "nadam": torch.optim.NAdam(w),
        "adagrad": torch.optim.Adagrad(w),
        "rmsprop": torch.optim.RMSprop(w),
        "lookahead": Lookahead(torch.optim.SGD(w, lr=0.1)),
    }
    for name, opt in cases.items():
        assert optimizer_info(opt).name == name
    with pytest.raises(SpecError, match="expected one of the registered kinds"):
        optimizer_info(torch.optim.LBFGS(w))


def test_fused_momentum_survives_a_skipped_first_step() -> None:
    """A GradScaler that skips the first step must not leave garbage momentum (torch fused SGD)."""
    w = torch.nn.Parameter(torch.ones(1000))
    opt = create_optimizer("momentum", [w], lr=0.1)
    assert opt.defaults["fused"]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    junk = torch.full((1000,), 12345.0)  # leave recognisable junk in the allocator
    del junk
    scaler.scale((w * torch.tensor(float("inf"))).sum()).backward()
    scaler.step(opt)
    scaler.update()
    opt.zero_grad()
    assert torch.equal(w.detach(), torch.ones(1000))
    assert torch.count_nonzero(opt.state[w]["momentum_buffer"]) == 0
    (w * 2.0).sum().backward()
    opt.step()
    assert torch.equal(opt.state[w]["momentum_buffer"], torch.full((1000,), 2.0))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("adam(lr=-1)", "lr: got -1, expected a finite number > 0"),
        ("adam(betas=3)", "betas: got 3, expected two numbers"),
        ("adam(betas=(0.9, 1.0))", "betas: got (0.9, 1.0), expected a number in [0, 1)"),
        ("adamw(weight_decay=-0.1)", "weight_decay: got -0.1"),
        ("nesterov(momentum=1.5)", "momentum: got 1.5, expected a number in [0, 1]"),
    ],
)
def test_bad_hyperparameter_values_name_field_value_and_range(spec: str, field: str) -> None:
    with pytest.raises(SpecError, match=re.escape(field)):
        create_optimizer(spec, [nn.Parameter(torch.ones(2))])
