"""Target, TaskData, the seeded validation split and generator-only initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from steplab.errors import SpecError
from steplab.tasks import Target, TaskData, split_validation
from steplab.tasks.base import init_from_generator


def test_target_max_and_min_modes_compare_the_right_way() -> None:
    assert Target("test_accuracy", 0.9, "max").met_by(0.9)
    assert not Target("test_accuracy", 0.9, "max").met_by(0.89)
    assert Target("test_distance", 0.05, "min").met_by(0.01)
    assert not Target("test_distance", 0.05, "min").met_by(0.06)
    assert not Target("test_loss", 1.0, "min").met_by(math.nan)


def test_target_round_trips_to_a_plain_dict() -> None:
    t = Target("val_loss", 0.5, "min")
    assert Target(**t.to_dict()) == t


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "test_accuracy", "value": 0.9, "mode": "up"}, "target mode: got 'up'"),
        ({"metric": "test_accuracy", "value": math.inf}, "target value: got inf"),
        ({"metric": "", "value": 1.0}, "target metric"),
    ],
)
def test_bad_target_is_refused_with_the_field_named(kwargs: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        Target(**kwargs)


def test_taskdata_refuses_splits_of_unequal_length() -> None:
    x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    with pytest.raises(SpecError, match="x_val/y_val: got 3 inputs and 2 labels"):
        TaskData(x, y, x, y[:2], x, y)


def test_validation_split_is_seeded_disjoint_and_complete() -> None:
    x = torch.arange(100.0).unsqueeze(1)
    y = torch.arange(100)
    a = split_validation(x, y, fraction=0.1, seed=0)
    b = split_validation(x, y, fraction=0.1, seed=0)
    for left, right in zip(a, b, strict=True):
        assert torch.equal(left, right)
    x_train, y_train, x_val, y_val = a
    assert len(x_val) == 10 and len(x_train) == 90
    assert sorted(y_train.tolist() + y_val.tolist()) == list(range(100))
    assert torch.equal(x_train[:, 0].long(), y_train)  # rows stay paired
    other = split_validation(x, y, fraction=0.1, seed=1)[3]
    assert not torch.equal(other, y_val)


def test_validation_split_does_not_touch_global_rng() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    split_validation(torch.zeros(50), torch.zeros(50), seed=3)
    assert torch.equal(torch.rand(3), expected)


def test_validation_split_needs_two_rows() -> None:
    with pytest.raises(SpecError, match="got 1 rows, expected at least 2"):
        split_validation(torch.zeros(1), torch.zeros(1))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_validation_fraction_outside_unit_interval_is_refused(fraction: float) -> None:
    with pytest.raises(SpecError, match="validation fraction"):
        split_validation(torch.zeros(10), torch.zeros(10), fraction=fraction)


def test_init_from_generator_is_reproducible_and_reads_no_global_rng() -> None:
    def build(seed: int) -> nn.Module:
        model = nn.Sequential(nn.Conv1d(1, 4, 3, device="meta"), nn.Linear(4, 2, device="meta"))
        return init_from_generator(model, torch.Generator().manual_seed(seed))

    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    a, b, c = build(1), build(1), build(2)
    assert torch.equal(torch.rand(2), expected)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    bound = 1 / math.sqrt(4)  # fan_in of the linear layer
    assert float(a[1].weight.detach().abs().max()) <= bound


def test_init_from_generator_refuses_layers_it_cannot_initialise() -> None:
    model = nn.Sequential(nn.Linear(2, 2, device="meta"), nn.Embedding(3, 2, device="meta"))
    with pytest.raises(SpecError, match=r"parameter 1\.weight"):
        init_from_generator(model, torch.Generator())
