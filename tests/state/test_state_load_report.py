"""checkpoint.load says what it skipped, and touches the RNG only when asked (issue 11, item 3)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_net, trained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from steplab import checkpoint


class Renamed(nn.Module):
    """The state tests' Net with ``encoder`` renamed to ``body`` and a wider head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.norm = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 5)


def test_non_strict_load_reports_and_warns_what_it_skipped(tmp_path: Path) -> None:
    """The issue's case: a renamed layer silently stayed at its initial values."""
    model, opt = trained()
    path = checkpoint.save(tmp_path / "c", model=model, optimizer=opt, step=3)
    new = Renamed()
    before = new.body.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"checkpoint\.load: .*body\.weight") as caught:
        res = checkpoint.load(path, model=new, strict=False)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert res.missing == ("body.weight", "body.bias")
    assert set(res.unexpected) == {"encoder.weight", "encoder.bias"}
    assert res.shape_mismatched == ("head.weight", "head.bias")
    assert res.skipped == ("body.weight", "body.bias", "head.weight", "head.bias")
    assert "norm.weight" in res.loaded and "norm.running_mean" in res.loaded
    assert torch.equal(new.body.weight, before)
    assert torch.equal(new.norm.weight, model.norm.weight)


def test_load_leaves_the_random_streams_alone_unless_asked(tmp_path: Path) -> None:
    model, _ = trained()
    first, second = make_net(), make_net()  # building a model draws from torch's stream
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    path = checkpoint.save(tmp_path / "c", model=model, step=1)
    saved_next = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(2)
    random.seed(2)
    np.random.seed(2)
    expected_next = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(2)
    random.seed(2)
    np.random.seed(2)
    res = checkpoint.load(path, model=first)
    assert "rng" not in res.restored
    assert (torch.rand(1), random.random(), np.random.rand()) == expected_next
    res = checkpoint.load(path, model=second, restore_rng=True)
    assert "rng" in res.restored
    assert (torch.rand(1), random.random(), np.random.rand()) == saved_next


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keep=st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, min_size=1),
    add=st.lists(st.sampled_from(["e", "f"]), unique=True),
    widen=st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True),
)
def test_every_weight_is_loaded_or_reported(
    tmp_path_factory: pytest.TempPathFactory, keep: list[str], add: list[str], widen: list[str]
) -> None:
    """The guard for the class: loaded + missing + shape-mismatched covers the model, and
    loaded + unexpected + shape-mismatched covers the checkpoint, each name once."""

    def build(names: list[str], wide: list[str], seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.ModuleDict({n: nn.Linear(2, 3 if n in wide else 2) for n in names})

    saved = build(["a", "b", "c", "d"], [], 0)
    path = checkpoint.save(tmp_path_factory.mktemp("c") / "c", model=saved)
    new = build(keep + add, widen, 1)
    initial = {k: v.clone() for k, v in new.state_dict().items()}
    skips = bool(add or set(widen) & set(keep) or len(keep) < 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = checkpoint.load(path, model=new, strict=False)
    assert len(caught) == int(skips)  # one line exactly when something was skipped
    current, stored = set(new.state_dict()), set(saved.state_dict())
    assert sorted(res.loaded + res.missing + res.shape_mismatched) == sorted(current)
    assert sorted(res.loaded + res.unexpected + res.shape_mismatched) == sorted(stored)
    for key, value in new.state_dict().items():
        expected = saved.state_dict()[key] if key in res.loaded else initial[key]
        assert torch.equal(value, expected), key
