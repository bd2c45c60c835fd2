"""The closure half of ``Optimizer.step(closure)``, shared by steplab's own step implementations."""

from __future__ import annotations

from collections.abc import Callable

import torch


def evaluate_closure(closure: Callable[[], float] | None) -> float | None:
    """Re-evaluate the model with gradients enabled, as torch's optimizers do inside ``step``.

    Args:
        closure: re-evaluates the model and returns the loss, or None.

    Returns:
        The closure's loss, or None when there is no closure.

    Example:
        >>> with torch.no_grad():
        ...     evaluate_closure(lambda: torch.is_grad_enabled())
        True
    """
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
