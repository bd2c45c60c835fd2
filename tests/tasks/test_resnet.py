"""cifar10-resnet18: the CIFAR variant of ResNet-18 trains a few steps on a tiny CIFAR file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from steplab.tasks import get_task
from steplab.tasks.files import CIFAR_PY_FILES
from steplab.train import TrainConfig, fit


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded 2-core machine two threads spin-wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tiny_cifar_bin(root: Path, n: int = 4) -> None:
    """The binary layout: per image 1 label byte + 3072 pixel bytes, 6 files."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in CIFAR_PY_FILES:
        records = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(n) % 10
        (folder / f"{name}.bin").write_bytes(records.tobytes())


def test_resnet18_is_the_cifar_variant_with_a_3x3_stem() -> None:
    task = get_task("cifar10-resnet18")
    model = task.build_model(torch.Generator().manual_seed(0))
    assert task.info()["n_params"] == 11_173_962
    stem = model.stem
    assert isinstance(stem, nn.Conv2d) and stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    bn = model.bn
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.running_var, torch.ones(64))
    again = task.build_model(torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values(), strict=True))


def test_resnet18_trains_a_few_steps_on_a_tiny_cifar_file(tmp_path: Path) -> None:
    write_tiny_cifar_bin(tmp_path / "data")
    cfg = TrainConfig(task="cifar10-resnet18", data_dir=str(tmp_path / "data"), steps=3,
                      batch_size=6, eval_every=3, log_every=1)
    result = fit(cfg, tmp_path / "run", progress=False)
    summary = result.summary
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert np.isfinite(summary["metrics"]["train_loss"])
    assert 0.0 <= summary["metrics"]["test_accuracy"] <= 1.0
    assert result.model is not None
    fresh = get_task("cifar10-resnet18").build_model(torch.Generator().manual_seed(0))
    assert not torch.equal(result.model.stem.weight, fresh.stem.weight)
    assert not torch.equal(result.model.bn.running_mean, fresh.bn.running_mean)
