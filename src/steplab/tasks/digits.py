"""``digits-mlp``: scikit-learn's bundled 8x8 handwritten digits with a small MLP.

The 1797 images ship inside scikit-learn (``sklearn.datasets.load_digits``,
no download). A seeded permutation gives test 20% (359), validation 10% of
the rest (144) and train the remaining 1294. Pixels (0..16) are
standardised with the training split's per-feature mean and standard
deviation (constant pixels keep scale 1), so no test information leaks.
The model is 64 → 64 → 10 with ReLU (4,810 parameters).

References:
    Alpaydin & Kaynak, UCI "Optical Recognition of Handwritten Digits" (1998);
    scikit-learn's ``load_digits``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from steplab.tasks.base import ClassificationTask, Target, TaskData, init_from_generator
from steplab.tasks.base import split_validation as _split

__all__ = ["DigitsTask"]


class DigitsTask(ClassificationTask):
    """scikit-learn's 8x8 digits, MLP 64 → 64 → 10 (see the module docstring).

    Example:
        >>> task = DigitsTask()
        >>> data = task.load_data()
        >>> data.sizes(), tuple(data.x_train.shape[1:])
        ({'train': 1294, 'val': 144, 'test': 359}, (64,))
    """

    name = "digits-mlp"
    description = "scikit-learn 8x8 digits (bundled), MLP 64-64-10"
    target = Target("test_accuracy", 0.95, "max")
    default_batch_size = 64
    default_steps = 1000
    default_lr: float | None = 3e-3
    sizes: ClassVar[dict[str, int] | None] = {"train": 1294, "val": 144, "test": 359}

    def load_data(self, data_dir: str | None = None) -> TaskData:
        """The bundled digits, split with seed 0 and standardised on train."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.data, dtype=torch.float32)
        y = torch.tensor(bunch.target, dtype=torch.int64)
        x_rest, y_rest, x_test, y_test = _split(x, y, fraction=0.2, seed=0)
        x_train, y_train, x_val, y_val = _split(x_rest, y_rest, fraction=0.1, seed=1)
        mean = x_train.mean(dim=0)
        std = x_train.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return TaskData(
            (x_train - mean) / std,
            y_train,
            (x_val - mean) / std,
            y_val,
            (x_test - mean) / std,
            y_test,
        )

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """MLP 64 → 64 → 10 with ReLU, initialised from ``generator``."""
        model = nn.Sequential(
            nn.Linear(64, 64, device="meta"), nn.ReLU(), nn.Linear(64, 10, device="meta")
        )
        return init_from_generator(model, generator)
