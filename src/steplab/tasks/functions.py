"""2-D test functions as tasks: Rosenbrock, Rastrigin and Beale.

The "model" is a module holding one 2-vector θ, started at the function's
standard start point; its forward ignores the input and returns ``f(θ)`` with
shape ``[1]``. The data is a single dummy sample in every split, so the
training loop stays the same as for real tasks, and ``trajectory=True`` makes
it log θ every step. Metrics are ``{"loss": f(θ), "distance": ‖θ − θ*‖}``;
the targets are on the test distance to the minimum.

Functions, minima and start points:

- Rosenbrock: ``(1 − x)² + 100 (y − x²)²``; minimum (1, 1); start (−2, 2)
  (jettify/pytorch-optimizer's visualisations; Rosenbrock 1960).
- Rastrigin (A = 10): ``20 + Σ (θᵢ² − 10 cos 2πθᵢ)``; minimum (0, 0);
  start (−2, 3.5) (jettify/pytorch-optimizer's visualisations).
- Beale: ``(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²``;
  minimum (3, 0.5); start (1, 1.5) (DeepOBS's 2-D Beale problem starts
  near it; Beale 1958).

References:
    Surjanovic & Bingham, Virtual Library of Simulation Experiments
    (sfu.ca/~ssurjano) for the definitions and minima.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from steplab.tasks.base import Target, TaskData, task_info

__all__ = ["FUNCTION_TASKS", "FunctionTask", "beale", "rastrigin", "rosenbrock"]


def rosenbrock(theta: Tensor) -> Tensor:
    """Rosenbrock's banana: ``(1 − x)² + 100 (y − x²)²``, minimum 0 at (1, 1).

    Example:
        >>> float(rosenbrock(torch.tensor([1.0, 1.0])))
        0.0
    """
    x, y = theta[0], theta[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rastrigin(theta: Tensor) -> Tensor:
    """Rastrigin with A = 10: ``10·2 + Σ (θᵢ² − 10 cos 2πθᵢ)``, minimum 0 at (0, 0).

    Example:
        >>> float(rastrigin(torch.zeros(2)))
        0.0
    """
    return 20 + (theta**2 - 10 * torch.cos(2 * math.pi * theta)).sum()


def beale(theta: Tensor) -> Tensor:
    """Beale's function, minimum 0 at (3, 0.5).

    Example:
        >>> float(beale(torch.tensor([3.0, 0.5])))
        0.0
    """
    x, y = theta[0], theta[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


class _Point(nn.Module):
    """A 2-vector θ whose forward returns ``f(θ)`` as shape ``[1]``."""

    def __init__(self, fn: Callable[[Tensor], Tensor], start: tuple[float, float]) -> None:
        super().__init__()
        self.fn = fn
        self.theta = nn.Parameter(torch.tensor(start, dtype=torch.float32))

    def forward(self, x: Tensor | None = None) -> Tensor:
        return self.fn(self.theta).reshape(1)


class FunctionTask:
    """A 2-D test function as a task (see the module docstring).

    Args:
        name: registry name.
        fn: the function of a 2-vector.
        start: start point θ₀.
        minimum: the global minimiser θ*.
        target: the documented target (``test_distance``).
        default_lr: a good Adam learning rate from θ₀.
        default_steps: steps when a run sets none.

    Example:
        >>> task = FunctionTask("rb", rosenbrock, (-2.0, 2.0), (1.0, 1.0),
        ...                     Target("test_distance", 0.05, "min"), 0.05, 10)
        >>> model = task.build_model(torch.Generator())
        >>> data = task.load_data()
        >>> task.metrics(model, data.x_test, data.y_test)
        {'loss': 409.0, 'distance': 3.1622776601683795}
    """

    default_batch_size = 1
    trajectory = True

    def __init__(
        self,
        name: str,
        fn: Callable[[Tensor], Tensor],
        start: tuple[float, float],
        minimum: tuple[float, float],
        target: Target,
        default_lr: float,
        default_steps: int,
    ) -> None:
        self.name = name
        self.fn = fn
        self.start = start
        self.minimum = minimum
        self.target = target
        self.default_lr: float | None = default_lr
        self.default_steps = default_steps
        self.description = (
            f"{fn.__name__.capitalize()} 2-D function, start ({start[0]:g}, {start[1]:g}), "
            f"minimum ({minimum[0]:g}, {minimum[1]:g})"
        )

    def load_data(self, data_dir: str | None = None) -> TaskData:
        """One dummy sample per split (the model ignores its input)."""
        x, y = torch.zeros(1, 1), torch.zeros(1, dtype=torch.long)
        return TaskData(x, y, x.clone(), y.clone(), x.clone(), y.clone())

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """θ at the standard start point (deterministic: ``generator`` is not used)."""
        return _Point(self.fn, self.start)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The function value (mean over the output)."""
        return output.float().mean()

    def metrics(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """``{"loss": f(θ), "distance": ‖θ − θ*‖}`` in float64."""
        with torch.no_grad():
            theta = next(iter(model.parameters())).detach().double()
            loss = float(self.fn(theta))
            distance = float(torch.linalg.vector_norm(theta - torch.tensor(self.minimum).double()))
        return {"loss": loss, "distance": distance}

    def info(self) -> dict[str, Any]:
        """Name, description, sizes, n_params, target and defaults."""
        info = task_info(self, {"train": 1, "val": 1, "test": 1})
        info["start"], info["minimum"] = list(self.start), list(self.minimum)
        return info


#: name -> (function, start, minimum, target, default Adam lr, default steps)
FUNCTION_TASKS: dict[str, tuple[Any, ...]] = {
    "rosenbrock": (rosenbrock, (-2.0, 2.0), (1.0, 1.0), 0.05, 0.3, 1500),
    "rastrigin": (rastrigin, (-2.0, 3.5), (0.0, 0.0), 0.05, 0.1, 500),
    "beale": (beale, (1.0, 1.5), (3.0, 0.5), 0.05, 0.1, 500),
}
