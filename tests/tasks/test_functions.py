"""The 2-D test functions: minima, start points, metrics, and reachable targets."""

from __future__ import annotations

import math

import pytest
import torch

from steplab.tasks import get_task
from steplab.tasks.functions import beale, rastrigin, rosenbrock

CASES = [
    ("rosenbrock", (-2.0, 2.0), (1.0, 1.0)),
    ("rastrigin", (-2.0, 3.5), (0.0, 0.0)),
    ("beale", (1.0, 1.5), (3.0, 0.5)),
]


@pytest.mark.parametrize(("name", "start", "minimum"), CASES)
def test_minimum_has_value_zero_and_zero_gradient(
    name: str, start: tuple[float, float], minimum: tuple[float, float]
) -> None:
    fn = get_task(name).fn  # type: ignore[attr-defined]
    theta = torch.tensor(minimum, dtype=torch.float64, requires_grad=True)
    value = fn(theta)
    value.backward()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-12)
    assert float(theta.grad.abs().max()) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("name", "start", "minimum"), CASES)
def test_model_starts_at_the_standard_point_and_returns_shape_one(
    name: str, start: tuple[float, float], minimum: tuple[float, float]
) -> None:
    task = get_task(name)
    assert task.trajectory is True
    model = task.build_model(torch.Generator().manual_seed(123))
    assert next(model.parameters()).tolist() == list(start)
    data = task.load_data()
    assert data.sizes() == {"train": 1, "val": 1, "test": 1}
    out = model(data.x_train)
    assert out.shape == (1,)
    metrics = task.metrics(model, data.x_test, data.y_test)
    assert metrics["distance"] == pytest.approx(math.dist(start, minimum))
    assert metrics["loss"] == pytest.approx(float(task.loss(out, data.y_train).detach()), rel=1e-6)
    assert task.target.metric == "test_distance" and task.target.mode == "min"


def test_known_values_away_from_the_minimum() -> None:
    assert float(rosenbrock(torch.tensor([-2.0, 2.0]))) == pytest.approx(409.0)
    assert float(rastrigin(torch.tensor([1.0, 0.0]))) == pytest.approx(1.0)
    assert float(beale(torch.tensor([0.0, 0.0]))) == pytest.approx(1.5**2 + 2.25**2 + 2.625**2)


@pytest.mark.parametrize("name", ["rosenbrock", "beale"])
def test_adam_at_the_task_defaults_reaches_the_target(name: str) -> None:
    task = get_task(name)
    data = task.load_data()
    model = task.build_model(torch.Generator())
    assert task.default_lr is not None
    opt = torch.optim.Adam(model.parameters(), lr=task.default_lr)
    for _ in range(task.default_steps):
        opt.zero_grad()
        task.loss(model(data.x_train), data.y_train).backward()
        opt.step()
    final = task.metrics(model, data.x_test, data.y_test)["distance"]
    assert task.target.met_by(final), final
