"""Evaluation during training: split metrics (on Lookahead's slow weights), best values, target.

For a :class:`~steplab.optim.Lookahead` optimizer the model is evaluated
inside ``optimizer.slow_weights()``: the slow weights are the ones the
method returns (Zhang et al., "Lookahead Optimizer: k steps forward, 1 step
back", NeurIPS 2019, Algorithm 1), and the fast weights are put back after.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steplab.optim import Lookahead
from steplab.tasks import Target, Task, TaskData
from steplab.train.guards import metric_mode

__all__ = ["EvalBook", "evaluate"]


def evaluate(
    task: Task,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TaskData,
    splits: tuple[str, ...],
) -> dict[str, float]:
    """Return ``{"<split>_<metric>": value}`` for each split, on slow weights for Lookahead.

    With ``"test"`` among the splits and a shifted test set in ``data``
    (``x_shift``), its metrics are added as ``test_shift_<metric>``.

    Example:
        >>> import torch
        >>> from steplab.tasks import get_task
        >>> task = get_task("digits-mlp"); data = task.load_data()
        >>> model = task.build_model(torch.Generator().manual_seed(0))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sorted(evaluate(task, model, opt, data, ("val",)))
        ['val_accuracy', 'val_ece', 'val_loss', 'val_nll']
    """
    swap = optimizer.slow_weights() if isinstance(optimizer, Lookahead) else None
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    with swap if swap is not None else contextlib.nullcontext(), torch.no_grad():
        for split in splits:
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            for name, value in task.metrics(model, x, y).items():
                out[f"{split}_{name}"] = float(value)
            if split == "test" and data.x_shift is not None and data.y_shift is not None:
                for name, value in task.metrics(model, data.x_shift, data.y_shift).items():
                    out[f"test_shift_{name}"] = float(value)
    model.train(was_training)
    return out


@dataclass
class EvalBook:
    """Best value of every evaluated metric and the first step that met the target.

    Example:
        >>> from steplab.tasks import Target
        >>> book = EvalBook(Target("test_accuracy", 0.9, "max"))
        >>> book.record(10, 1.5, {"test_accuracy": 0.8, "test_loss": 0.7})
        >>> book.record(20, 3.0, {"test_accuracy": 0.95, "test_loss": 0.9})
        >>> book.best, book.target_step, book.target_time
        ({'test_accuracy': 0.95, 'test_loss': 0.7}, 20, 3.0)
    """

    target: Target
    best: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    last_step: int = -1
    target_step: int | None = None
    target_time: float | None = None

    def record(self, step: int, wall_time: float, metrics: dict[str, float]) -> None:
        """Note the metrics of an evaluation at ``step`` (``wall_time`` s of training)."""
        self.last, self.last_step = dict(metrics), step
        for name, value in metrics.items():
            old = self.best.get(name)
            if value != value:  # NaN never counts as best
                continue
            if old is None or (value < old if metric_mode(name) == "min" else value > old):
                self.best[name] = value
        reached = metrics.get(self.target.metric)
        if self.target_step is None and reached is not None and self.target.met_by(reached):
            self.target_step, self.target_time = step, wall_time

    def state_dict(self) -> dict[str, Any]:
        """Everything as JSON values, for checkpoints."""
        return {"best": self.best, "last": self.last, "last_step": self.last_step,
                "target_step": self.target_step, "target_time": self.target_time}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.best = {k: float(v) for k, v in state["best"].items() if v is not None}
        self.last = {k: (float("nan") if v is None else float(v)) for k, v in state["last"].items()}
        self.last_step = int(state["last_step"])
        self.target_step = state["target_step"]
        self.target_time = state["target_time"]
