"""Reference quality through the real loop: `fit` at each MNIST-1D task's defaults.

tests/tasks/test_reference_quality.py checks the task defaults with a minimal
hand-written loop; this checks that `steplab train` itself (create_optimizer's
fused Adam, the seeded data order, the guards, evaluation) lands within 2 points
of the MNIST-1D paper's test accuracy: 32% (logreg), 68% (MLP), 94% (CNN).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from steplab.train import TrainConfig, fit

PAPER = {"mnist1d-logreg": 0.32, "mnist1d-mlp": 0.68, "mnist1d-cnn": 0.94}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER))
def test_fit_at_task_defaults_lands_within_two_points_of_the_paper(
    name: str, tmp_path: Path
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        accuracies = [
            fit(TrainConfig(task=name, seed=seed), tmp_path / str(seed), progress=False)
            .summary["metrics"]["test_accuracy"]
            for seed in (0, 1, 2)
        ]
    finally:
        torch.set_num_threads(threads)
    print(f"\n{name} via fit: {[round(a, 3) for a in accuracies]}; paper {PAPER[name]}")
    assert abs(statistics.mean(accuracies) - PAPER[name]) <= 0.02
