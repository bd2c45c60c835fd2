"""User tasks for the training-loop tests: small, fast, and able to inject NaN on purpose."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from steplab.tasks import Target, TaskData, register_task

_ids = itertools.count()

# start-up hooks for the processes the crash tests launch, not test or doctest modules (as
# "sitecustomize" they would clash with a system one already imported)
collect_ignore = ["crashsite"]


class ToyTask:
    """Linear softmax regression on 256 seeded Gaussian points in 8-D (4 classes).

    ``nan_loss_steps``: training-loss calls (0-based) whose loss is NaN.
    ``nan_grad_steps``: calls whose loss is finite but whose gradient is NaN.
    """

    description = "toy softmax regression for tests"
    default_batch_size = 32
    default_steps = 40
    default_lr = 0.05
    trajectory = False

    def __init__(self, nan_loss_steps: tuple[int, ...] = (), nan_grad_steps: tuple[int, ...] = (),
                 target: float = 0.5, dropout: float = 0.0) -> None:
        self.name = f"toy-{next(_ids)}"
        self.target = Target("val_accuracy", target, "max")
        self.nan_loss_steps = set(nan_loss_steps)
        self.nan_grad_steps = set(nan_grad_steps)
        self.dropout = dropout
        self.calls = 0

    def load_data(self, data_dir: str | None = None) -> TaskData:
        g = torch.Generator().manual_seed(123)
        x = torch.randn(384, 8, generator=g)
        w = torch.randn(8, 4, generator=g)
        y = (x @ w).argmax(dim=1)
        return TaskData(x[:256], y[:256], x[256:320], y[256:320], x[320:], y[320:])

    def build_model(self, generator: torch.Generator) -> nn.Module:
        model = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(8, 4))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        return model

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        call, self.calls = self.calls, self.calls + 1
        loss = F.cross_entropy(output.float(), target)
        if call in self.nan_loss_steps:
            return loss * float("nan")
        if call in self.nan_grad_steps:
            output.register_hook(lambda g: torch.full_like(g, float("nan")))
        return loss

    def metrics(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        with torch.no_grad():
            out = model(x).float()
        return {"loss": float(F.cross_entropy(out, y)),
                "accuracy": float((out.argmax(1) == y).float().mean())}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description}


@pytest.fixture
def toy() -> ToyTask:
    """A fresh registered toy task (unique name)."""
    return register_task(ToyTask())  # type: ignore[return-value]


@pytest.fixture
def make_toy() -> Any:
    """Factory for registered toy tasks with NaN injection or other options."""
    def make(**kw: Any) -> ToyTask:
        return register_task(ToyTask(**kw))  # type: ignore[return-value]
    return make


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Run each test on one intra-op thread, then restore the count.

    Tiny models gain nothing from more threads, and on a loaded machine idle
    OpenMP threads spinning for work make small ops up to 100x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
