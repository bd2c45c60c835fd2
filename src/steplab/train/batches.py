"""Minibatches in a reproducible, resumable order.

The training split lives in memory, so a batch is an index into it. Each
epoch draws one permutation from a ``torch.Generator`` seeded from
``(seed, epoch)`` through NumPy's ``SeedSequence``; the order of epoch ``e``
is therefore a pure function of the seed and ``e``, and resuming needs only
``(epoch, position)``. Batches have a fixed size: the last partial batch of an
epoch is dropped, so every step averages the same number of examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from steplab.errors import SpecError

__all__ = ["BatchStream", "Plan", "plan_run"]


@dataclass(frozen=True)
class Plan:
    """How a run walks its data.

    Attributes:
        batch_size: examples per step.
        full_batch: every step sees the whole training split, in order.
        steps_per_epoch: steps in one pass over the data.
        total_steps: steps the run takes.
    """

    batch_size: int
    full_batch: bool
    steps_per_epoch: int
    total_steps: int


def plan_run(
    n_train: int,
    batch_size: int | str | None,
    steps: int | None,
    epochs: float | None,
    default_batch_size: int,
    default_steps: int,
) -> Plan:
    """Resolve batch size and step count for a training split of ``n_train`` examples.

    Raises:
        SpecError: the batch is larger than the data (and not ``"full"``), or
            ``epochs`` rounds to zero steps.

    Example:
        >>> plan_run(1000, 100, None, 2.5, 32, 500)
        Plan(batch_size=100, full_batch=False, steps_per_epoch=10, total_steps=25)
    """
    if batch_size == "full":
        size, full = n_train, True
    else:
        size = default_batch_size if batch_size is None else int(batch_size)
        full = False
        if size > n_train:
            raise SpecError(
                f"batch_size: got {size}, expected at most the {n_train} training examples "
                "or 'full'"
            )
    per_epoch = max(1, n_train // size)
    if steps is not None:
        total = steps
    elif epochs is not None:
        total = round(epochs * per_epoch)
        if total < 1:
            raise SpecError(f"epochs: got {epochs}, expected at least one step ({per_epoch}/epoch)")
    else:
        total = default_steps
    return Plan(size, full, per_epoch, total)


class BatchStream:
    """Yields index tensors for each step; its position is saved in checkpoints.

    Args:
        n: examples in the training split.
        plan: the run's :class:`Plan`.
        seed: the run's seed.
        device: device of the index tensors (the data's device).

    Example:
        >>> plan = plan_run(10, 4, 5, None, 4, 5)
        >>> a = BatchStream(10, plan, seed=0)
        >>> first = [a.next().tolist() for _ in range(3)]
        >>> b = BatchStream(10, plan, seed=0)
        >>> _ = b.next(); b.load_state_dict(a.state_dict() | {"epoch": 0, "position": 1})
        >>> [b.next().tolist() for _ in range(2)] == first[1:]
        True
    """

    def __init__(self, n: int, plan: Plan, seed: int, device: torch.device | str = "cpu") -> None:
        self.n = n
        self.plan = plan
        self.seed = seed
        self.device = torch.device(device)
        self.epoch = 0
        self.position = 0  # batches already taken in this epoch
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0])
        gen = torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
        return torch.randperm(self.n, generator=gen).to(self.device)

    def next(self) -> torch.Tensor | None:
        """Return the next batch's indices, or None for full-batch runs (use all data)."""
        if self.plan.full_batch:
            self.epoch += 1
            return None
        if self.position >= self.plan.steps_per_epoch:
            self.epoch += 1
            self.position = 0
            self._perm = None
        if self._perm is None:
            self._perm = self._permutation(self.epoch)
        size = self.plan.batch_size
        start = self.position * size
        self.position += 1
        return self._perm[start : start + size]

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"seed", "epoch", "position"}``: everything needed to continue."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`; the seed must match the run's."""
        if int(state["seed"]) != self.seed:
            raise SpecError(
                f"data seed: got {state['seed']}, expected {self.seed} (the run's seed)"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._perm = None
