"""transfer(): carry state to a changed model (issue 3, section 3)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_net, trained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# -- issue 11, item 2: rename collisions are errors, never a silent overwrite -------------------


def _three_layer() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential()
    model.add_module("encoder", nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)))
    opt = create_optimizer("adam(lr=0.01)", model)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    return model, opt


def test_rename_mapping_two_saved_names_onto_one_is_an_error_naming_both() -> None:
    """The issue's case: encoder.2's moments used to overwrite encoder.1's silently."""
    model, opt = _three_layer()
    new = nn.Sequential()
    new.add_module("encoder", nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))
    new_opt = create_optimizer("adam(lr=0.01)", new)
    with pytest.raises(SpecError, match=r"rename: saved 'encoder\.1\.(bias|weight)' and "
                       r"'encoder\.2\.\1' both map to 'encoder\.1\.\1'"):
        transfer(named_state_dict(opt, model), new_opt, new, rename={"encoder.2.": "encoder.1."})
    assert not new_opt.state  # nothing changed


def test_rename_to_none_drops_a_layer_so_another_can_take_its_name() -> None:
    model, opt = _three_layer()
    new = nn.Sequential()
    new.add_module("encoder", nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))
    new_opt = create_optimizer("adam(lr=0.01)", new)
    saved = named_state_dict(opt, model)
    report = transfer(saved, new_opt, new, rename={"encoder.1.": None, "encoder.2.": "encoder.1."})
    assert set(report.dropped) == {"encoder.1.weight", "encoder.1.bias"}
    assert report.renamed == {"encoder.2.weight": "encoder.1.weight",
                              "encoder.2.bias": "encoder.1.bias"}
    assert torch.equal(new_opt.state[new.encoder[1].weight]["exp_avg"],
                       opt.state[model.encoder[2].weight]["exp_avg"])


_NAMES = st.lists(st.sampled_from(["a.0.", "a.1.", "a.2.", "b.", "c."]), min_size=1,
                  max_size=4, unique=True)


def _module(layers: list[str]) -> nn.Module:
    """A module with an ``nn.Linear(2, 2)`` at each dotted prefix (``"a.0."`` -> ``a[0]``)."""
    root = nn.Module()
    for layer in layers:
        sub, parts = root, layer.rstrip(".").split(".")
        for part in parts[:-1]:
            if not hasattr(sub, part):
                sub.add_module(part, nn.Module())
            sub = getattr(sub, part)
        sub.add_module(parts[-1], nn.Linear(2, 2))
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=_NAMES, rename=st.dictionaries(
    st.sampled_from(["a.", "a.0.", "a.1.", "a.2.", "b.", "c.", "x."]),
    st.one_of(st.none(), st.sampled_from(["a.0.", "a.1.", "b.", "c.", "d.", "a."])), max_size=3))
def test_every_saved_name_is_carried_or_reported_dropped_exactly_once(
    layers: list[str], rename: dict[str, str | None]
) -> None:
    """The guard for the class: no saved state is ever lost or doubled without a word."""
    old = _module(layers)
    old_opt = torch.optim.Adam(old.parameters())
    for p in old.parameters():
        p.grad = torch.randn_like(p)
    old_opt.step()
    saved = named_state_dict(old_opt, old)
    names = list(saved["state"])
    new = _module(["a.0.", "a.1.", "b.", "c.", "d."])
    new_opt = torch.optim.Adam(new.parameters())
    try:
        report = transfer(saved, new_opt, new, rename=rename)
    except SpecError as exc:
        assert "both map to" in str(exc)
        assert not new_opt.state
        return
    assert len(report.carried) == len(set(report.carried))
    assert not set(report.dropped) - set(names)  # dropped names are the saved names
    carried = [n for n in names if n not in report.dropped]
    assert sorted(report.renamed.get(n, n) for n in carried) == sorted(report.carried)
    params = dict(new.named_parameters())
    for name in carried:
        got = new_opt.state[params[report.renamed.get(name, name)]]["exp_avg"]
        assert torch.equal(got, saved["state"][name]["exp_avg"])
