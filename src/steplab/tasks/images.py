"""``mnist`` and ``cifar10``: classic image tasks read from local files.

The files are read by :mod:`steplab.tasks.files` (MNIST IDX, CIFAR-10
python or binary batches) from the task's ``data_dir``; nothing is
downloaded. 10% of the training images (seeded) become the validation split.

- ``mnist``: pixels scaled to [0, 1] and standardised with MNIST's usual
  mean 0.1307 and std 0.3081; model MLP 784 → 256 → 128 → 10 with ReLU
  (235,146 parameters). Splits 54,000 / 6,000 / 10,000.
- ``cifar10``: pixels scaled to [0, 1] and standardised per channel
  (mean 0.4914, 0.4822, 0.4465; std 0.2470, 0.2435, 0.2616); model a small
  CNN, three blocks of 3x3 conv + ReLU + 2x2 max-pool (32, 64, 64 channels),
  then 1024 → 128 → 10 (188,810 parameters). Splits 45,000 / 5,000 / 10,000.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from steplab.tasks.base import ClassificationTask, Target, TaskData, init_from_generator
from steplab.tasks.base import split_validation as _split
from steplab.tasks.files import find_mnist, read_cifar10, read_idx

__all__ = ["Cifar10Task", "MnistTask"]

_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


class _FileTask(ClassificationTask):
    """A classifier whose data lives under ``data_dir``."""

    def __init__(self, data_dir: str | None = None) -> None:
        self.data_dir = data_dir

    def _dir(self, data_dir: str | None) -> str | None:
        return data_dir if data_dir is not None else self.data_dir

    def info(self) -> dict[str, Any]:
        """As for every task, plus ``data_dir`` (the default one, or None)."""
        out = super().info()
        out["data_dir"] = self.data_dir
        return out


def _finish(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor) -> TaskData:
    x_train, y_train, x_val, y_val = _split(x, y, fraction=0.1, seed=0)
    return TaskData(x_train, y_train, x_val, y_val, x_test, y_test)


class MnistTask(_FileTask):
    """MNIST from local IDX files, MLP 784-256-128-10 (see the module docstring).

    Args:
        data_dir: default directory of the files (``load_data`` may override).

    Example:
        >>> task = MnistTask()
        >>> model = task.build_model(torch.Generator().manual_seed(0))
        >>> tuple(model(torch.zeros(2, 1, 28, 28)).shape)
        (2, 10)
    """

    name = "mnist"
    description = "MNIST from local IDX files (--data-dir), MLP 784-256-128-10"
    target = Target("test_accuracy", 0.97, "max")
    default_batch_size = 128
    default_steps = 2000
    default_lr: float | None = 1e-3
    sizes: ClassVar[dict[str, int] | None] = {"train": 54000, "val": 6000, "test": 10000}

    def load_data(self, data_dir: str | None = None) -> TaskData:
        """The four IDX files under ``data_dir`` as standardised float32 images [N, 1, 28, 28]."""
        files = find_mnist(self._dir(data_dir))
        arrays = {stem: read_idx(path) for stem, path in files.items()}

        def images(a: np.ndarray) -> Tensor:
            x = torch.tensor(a, dtype=torch.float32).div_(255.0)
            return x.sub_(_MNIST_MEAN).div_(_MNIST_STD).reshape(len(a), 1, *a.shape[1:])

        return _finish(
            images(arrays["train-images-idx3-ubyte"]),
            torch.tensor(arrays["train-labels-idx1-ubyte"], dtype=torch.int64),
            images(arrays["t10k-images-idx3-ubyte"]),
            torch.tensor(arrays["t10k-labels-idx1-ubyte"], dtype=torch.int64),
        )

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """MLP 784 → 256 → 128 → 10 with ReLU, initialised from ``generator``."""
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256, device="meta"),
            nn.ReLU(),
            nn.Linear(256, 128, device="meta"),
            nn.ReLU(),
            nn.Linear(128, 10, device="meta"),
        )
        return init_from_generator(model, generator)


class Cifar10Task(_FileTask):
    """CIFAR-10 from local batches, a small 3-block CNN (see the module docstring).

    Args:
        data_dir: default directory of the files (``load_data`` may override).

    Example:
        >>> task = Cifar10Task()
        >>> model = task.build_model(torch.Generator().manual_seed(0))
        >>> tuple(model(torch.zeros(2, 3, 32, 32)).shape)
        (2, 10)
    """

    name = "cifar10"
    description = "CIFAR-10 from local batches (--data-dir), small CNN (3 conv blocks)"
    target = Target("test_accuracy", 0.70, "max")
    default_batch_size = 128
    default_steps = 5000
    default_lr: float | None = 1e-3
    sizes: ClassVar[dict[str, int] | None] = {"train": 45000, "val": 5000, "test": 10000}

    def load_data(self, data_dir: str | None = None) -> TaskData:
        """CIFAR-10 under ``data_dir`` as standardised float32 images [N, 3, 32, 32]."""
        arrays = read_cifar10(self._dir(data_dir))
        mean = torch.tensor(_CIFAR_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_CIFAR_STD).view(1, 3, 1, 1)

        def images(a: np.ndarray) -> Tensor:
            return (torch.tensor(a, dtype=torch.float32).div_(255.0) - mean) / std

        return _finish(
            images(arrays["x"]),
            torch.tensor(arrays["y"]),
            images(arrays["x_test"]),
            torch.tensor(arrays["y_test"]),
        )

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """Conv(32)-pool, Conv(64)-pool, Conv(64)-pool, 1024 → 128 → 10."""
        layers: list[nn.Module] = []
        for c_in, c_out in ((3, 32), (32, 64), (64, 64)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, device="meta"),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        layers += [
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128, device="meta"),
            nn.ReLU(),
            nn.Linear(128, 10, device="meta"),
        ]
        return init_from_generator(nn.Sequential(*layers), generator)
