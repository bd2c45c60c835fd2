"""``cifar10-resnet18``: ResNet-18 on CIFAR-10, the Lookahead paper's setting.

The CIFAR variant of ResNet-18 (He et al. 2016): a 3x3 stride-1 stem
convolution of 64 channels with BatchNorm and ReLU and no max-pool (CIFAR's
32x32 images are too small for ImageNet's 7x7 stride-2 stem and pool), then
four stages of two BasicBlocks (3x3 conv, BN, ReLU, 3x3 conv, BN, plus the
identity or a 1x1 stride-2 projection with BN) of 64, 128, 256 and 512
channels, strides 1, 2, 2, 2; global average pooling and a linear layer
512 → 10. 11,173,962 parameters. Zhang et al. train this network on CIFAR-10
in the Lookahead paper (Section 5.1).

Data: the ``cifar10`` task's files and standardisation (``--data-dir``), no
augmentation. Defaults: Adam lr 1e-3, batch 128, 5000 steps (about 14 epochs);
the target, test accuracy >= 0.85, is what this network reaches without
augmentation in that budget in common reports; it was not measured on this
project's machines, which have neither the data nor a GPU (docs/tasks.md).

References:
    He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016;
    Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
    NeurIPS 2019.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steplab.tasks.base import Target, init_from_generator
from steplab.tasks.images import Cifar10Task

__all__ = ["Cifar10ResNet18Task", "ResNet18"]


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, plus a shortcut (identity or 1x1 projection)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False, device="meta")
        self.bn1 = nn.BatchNorm2d(c_out, device="meta")
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False, device="meta")
        self.bn2 = nn.BatchNorm2d(c_out, device="meta")
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False, device="meta"),
                nn.BatchNorm2d(c_out, device="meta"),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool); ``[n, 3, 32, 32] -> [n, classes]``.

    Build it on the ``meta`` device and initialise it with
    :func:`~steplab.tasks.base.init_from_generator` (as the task does).

    Example:
        >>> model = init_from_generator(ResNet18(), torch.Generator().manual_seed(0))
        >>> tuple(model.eval()(torch.zeros(2, 3, 32, 32)).shape)
        (2, 10)
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, 1, 1, bias=False, device="meta")
        self.bn = nn.BatchNorm2d(64, device="meta")
        blocks: list[nn.Module] = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes, device="meta")

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(F.relu(self.bn(self.stem(x))))
        out: Tensor = self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
        return out


class Cifar10ResNet18Task(Cifar10Task):
    """CIFAR-10 from local batches with ResNet-18, CIFAR variant (see the module docstring).

    Args:
        data_dir: default directory of the files (``load_data`` may override).

    Example:
        >>> task = Cifar10ResNet18Task()
        >>> task.info()["n_params"]
        11173962
    """

    name = "cifar10-resnet18"
    description = "CIFAR-10 from local batches (--data-dir), ResNet-18 (3x3 stem), Lookahead paper"
    target = Target("test_accuracy", 0.85, "max")
    default_batch_size = 128
    default_steps = 5000
    default_lr: float | None = 1e-3
    sizes: ClassVar[dict[str, int] | None] = {"train": 45000, "val": 5000, "test": 10000}

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """ResNet-18 (CIFAR variant), initialised from ``generator``."""
        return init_from_generator(ResNet18(), generator)
