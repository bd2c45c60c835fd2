"""Every optimizer, bare and inside Lookahead, makes progress on two classic hard problems."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from steplab.optim import OPTIMIZERS, create_optimizer

TORCH_NAMES = [name for name in OPTIMIZERS if name != "lookahead"]
# learning rates that suit each rule on these problems (gradients differ in scale by 1e3)
ROSENBROCK_LR = {
    "gd": 2e-4,
    "sgd": 2e-4,
    "momentum": 1e-4,
    "nesterov": 1e-4,
    "adagrad": 0.5,
    "rmsprop": 1e-2,
}
QUADRATIC_LR = {
    "gd": 0.015,
    "sgd": 0.015,
    "momentum": 0.005,
    "nesterov": 0.005,
    "adagrad": 0.5,
    "rmsprop": 0.01,
}


def _rosenbrock(p: torch.Tensor) -> torch.Tensor:
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def _minimise(
    spec: str, f: Callable[[torch.Tensor], torch.Tensor], start: list[float], steps: int
) -> tuple[float, float]:
    p = torch.nn.Parameter(torch.tensor(start))
    opt = create_optimizer(spec, [p])
    first = float(f(p).detach())
    for _ in range(steps):
        opt.zero_grad()
        f(p).backward()
        opt.step()
    return first, float(f(p).detach())


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "lookahead"])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_reduces_rosenbrock_from_the_standard_start(name: str, wrap: bool) -> None:
    spec = f"{name}(lr={ROSENBROCK_LR.get(name, 0.05)})"
    spec = f"lookahead({spec}, k=5, alpha=0.5)" if wrap else spec
    first, last = _minimise(spec, _rosenbrock, [-2.0, 2.0], 500)
    assert first == 409.0 and last < 0.05 * first


@pytest.mark.parametrize("wrap", [False, True], ids=["bare", "lookahead"])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_reduces_an_ill_conditioned_quadratic(name: str, wrap: bool) -> None:
    hessian = torch.diag(torch.logspace(0, 2, 10))  # condition number 100

    def quadratic(p: torch.Tensor) -> torch.Tensor:
        return 0.5 * p @ hessian @ p

    spec = f"{name}(lr={QUADRATIC_LR.get(name, 0.05)})"
    spec = f"lookahead({spec})" if wrap else spec
    first, last = _minimise(spec, quadratic, [1.0] * 10, 300)
    assert last < 1e-3 * first
