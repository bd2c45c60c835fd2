"""NLL and expected calibration error (15 equal-mass bins) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from steplab.tasks import get_task
from steplab.tasks.calibration import classification_scores, expected_calibration_error


def test_ece_matches_a_hand_computed_example_with_equal_mass_bins() -> None:
    # 6 examples, 3 bins of 2 after sorting by confidence:
    #   {0.30 wrong, 0.40 right}: acc 0.5, conf 0.35 -> |0.15| * 2/6
    #   {0.60 right, 0.70 wrong}: acc 0.5, conf 0.65 -> |0.15| * 2/6
    #   {0.80 right, 0.95 right}: acc 1.0, conf 0.875 -> |0.125| * 2/6
    conf = torch.tensor([0.95, 0.30, 0.60, 0.80, 0.70, 0.40])
    right = torch.tensor([1, 0, 1, 1, 0, 1])
    expected = (0.15 + 0.15 + 0.125) * 2 / 6
    assert expected_calibration_error(conf, right, n_bins=3) == pytest.approx(expected)


def test_ece_uses_15_equal_mass_bins_by_default() -> None:
    # 30 examples -> 15 bins of 2; in each bin one right and one wrong at equal confidence
    conf = torch.linspace(0.1, 0.95, 15).repeat_interleave(2)
    right = torch.tensor([1, 0] * 15)
    got = expected_calibration_error(conf, right)
    assert got == pytest.approx(float((conf[::2] - 0.5).abs().mean()))
    # 16 examples: array_split sizes (2, 1, 1, ...): the first bin holds the two lowest
    conf16 = torch.arange(1, 17) / 17
    right16 = torch.ones(16)
    assert expected_calibration_error(conf16, right16) == pytest.approx(float((1 - conf16).mean()))


def test_perfect_calibration_has_zero_ece_and_bad_input_is_refused() -> None:
    assert expected_calibration_error(torch.ones(10), torch.ones(10)) == 0.0
    assert expected_calibration_error(torch.tensor([]), torch.tensor([])) == 0.0
    with pytest.raises(ValueError, match="same 1-D shape"):
        expected_calibration_error(torch.ones(3), torch.ones(4))


def test_nll_is_the_mean_negative_log_probability_of_the_label() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p(label 0) = 0.75, 0.5
    scores = classification_scores(logits, torch.tensor([0, 1]))
    assert scores["nll"] == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)
    assert scores["accuracy"] == 0.5  # the tie in row 2 predicts class 0, the label is 1


def test_classifiers_report_nll_and_ece_beside_loss_and_accuracy() -> None:
    task = get_task("digits-mlp")
    data = task.load_data()
    model = task.build_model(torch.Generator().manual_seed(0))
    metrics = task.metrics(model, data.x_val, data.y_val)
    assert set(metrics) == {"loss", "accuracy", "nll", "ece"}
    assert metrics["nll"] == pytest.approx(metrics["loss"], rel=1e-5)
    assert 0.0 <= metrics["ece"] <= 1.0
