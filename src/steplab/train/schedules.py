"""Learning-rate schedules as torch ``LambdaLR`` schedulers with closed-form multipliers.

Every schedule is one :class:`LRMultiplier`, a small callable that maps the
step index ``t`` (0-based, the step about to run) to a factor of the base
learning rate ``η``. With ``w`` warmup steps and ``T`` total steps, the main
schedule runs over ``t' = t - w`` in ``T' = T - w`` steps:

* warmup (``t < w``): ``f = (t + 1) / w``, reaching ``η`` at step ``w - 1``;
* ``constant``: ``f = 1``;
* ``step``: ``f = 0.1`` from ``t' >= T'/2``, ``0.01`` from ``t' >= 3T'/4``;
* ``linear``: ``f = 1 - t'/T'``;
* ``cosine``: ``f = (1 + cos(π t'/T')) / 2`` (Loshchilov & Hutter 2017, no restarts);
* ``cyclical``: triangular between ``η/10`` and ``η`` with half-period
  ``S = max(1, T'/8)`` (Smith 2017), equal to ``torch.optim.lr_scheduler.CyclicLR``;
* ``one-cycle``: cosine up from ``η/25`` to ``η`` over 30% of ``T'``, then cosine
  down to ``η/(25·10⁴)`` (Smith & Topin 2019), equal to ``OneCycleLR`` with
  ``cycle_momentum=False`` (momentum is left to the optimizer).

Because the factor is a pure function of ``t``, resuming needs nothing but
the scheduler's ``last_epoch``, which ``state_dict()`` holds: a resumed run
gets exactly the same learning rates, with no drift from chained updates.

References:
    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    Smith & Topin, "Super-Convergence", 2019 (arXiv:1708.07120).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.optim.lr_scheduler import LambdaLR

from steplab.errors import SpecError

if TYPE_CHECKING:
    from steplab.train.config import TrainConfig

__all__ = ["SCHEDULES", "LRMultiplier", "build_scheduler"]

#: schedule names accepted by ``TrainConfig.schedule`` / ``--schedule``
SCHEDULES: tuple[str, ...] = ("constant", "step", "linear", "cosine", "cyclical", "one-cycle")

_CYCLE_LOW = 0.1  # cyclical: lower bound as a fraction of the base lr
_CYCLES = 4  # cyclical: full triangles over the run
_ONE_CYCLE_PCT = 0.3  # one-cycle: fraction of steps spent rising (torch's default)
_ONE_CYCLE_DIV = 25.0  # one-cycle: initial lr = max lr / 25 (torch's default)
_ONE_CYCLE_FINAL_DIV = 1e4  # one-cycle: final lr = initial lr / 1e4 (torch's default)


def _cos_anneal(start: float, end: float, frac: float) -> float:
    return end + (start - end) / 2.0 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True)
class LRMultiplier:
    """The factor of the base learning rate at step ``t`` (see the module docstring).

    A plain dataclass of JSON values, so ``LambdaLR.state_dict()`` stores it
    and ``load_state_dict`` restores it.

    Args:
        schedule: one of :data:`SCHEDULES`.
        total_steps: steps in the whole run, warmup included.
        warmup_steps: linear warmup steps at the start.

    Example:
        >>> f = LRMultiplier("cosine", total_steps=10, warmup_steps=2)
        >>> [round(f(t), 3) for t in (0, 1, 2, 6)]
        [0.5, 1.0, 1.0, 0.5]
    """

    schedule: str
    total_steps: int
    warmup_steps: int = 0

    def __call__(self, t: int) -> float:
        w = self.warmup_steps
        if t < w:
            return (t + 1) / w
        span = max(1, self.total_steps - w)
        u = t - w
        name = self.schedule
        if name == "constant":
            return 1.0
        if name == "step":
            return 0.01 if u >= 0.75 * span else 0.1 if u >= 0.5 * span else 1.0
        if name == "linear":
            return max(0.0, 1.0 - u / span)
        if name == "cosine":
            return _cos_anneal(1.0, 0.0, min(u, span) / span)
        if name == "cyclical":
            half = max(1.0, span / (2 * _CYCLES))
            x = abs(u / half - 2 * math.floor(1 + u / (2 * half)) + 1)
            return _CYCLE_LOW + (1.0 - _CYCLE_LOW) * max(0.0, 1.0 - x)
        return self._one_cycle(u, span)

    def _one_cycle(self, u: int, span: int) -> float:
        # torch.optim.lr_scheduler.OneCycleLR, three_phase=False, anneal_strategy="cos":
        # phase ends at pct*T - 1 and T - 1; the lr at step u cos-anneals inside the phase.
        low = 1.0 / _ONE_CYCLE_DIV
        final = low / _ONE_CYCLE_FINAL_DIV
        up_end = float(_ONE_CYCLE_PCT * span) - 1.0
        if u <= up_end:
            return _cos_anneal(low, 1.0, u / up_end if up_end > 0 else 1.0)
        down = (span - 1) - up_end
        return _cos_anneal(1.0, final, min(1.0, (u - up_end) / down) if down > 0 else 1.0)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> LambdaLR:
    """Build the LR scheduler that ``config.schedule`` and ``config.warmup_steps`` name.

    Call ``scheduler.step()`` once after every training step (skipped steps
    included), so the learning rate is a function of the step index only.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is scheduled (for
            Lookahead its groups are the inner optimizer's).
        config: the run's config; ``schedule`` and ``warmup_steps`` are read.
        total_steps: steps the run will take.

    Returns:
        A ``torch.optim.lr_scheduler.LambdaLR`` whose multiplier is an
        :class:`LRMultiplier`.

    Raises:
        SpecError: unknown schedule, or warmup not shorter than the run.

    Example:
        >>> import torch
        >>> from steplab.train import TrainConfig
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([p], lr=0.1)
        >>> cfg = TrainConfig(task="digits-mlp", optimizer="sgd", schedule="linear", steps=4)
        >>> sched = build_scheduler(opt, cfg, total_steps=4)
        >>> lrs = []
        >>> for _ in range(4):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4)); opt.step(); sched.step()
        >>> lrs
        [0.1, 0.075, 0.05, 0.025]
    """
    if config.schedule not in SCHEDULES:
        raise SpecError(
            f"schedule: got {config.schedule!r}, expected one of {', '.join(SCHEDULES)}"
        )
    if total_steps < 1:
        raise SpecError(f"steps: got {total_steps}, expected an integer >= 1")
    if config.warmup_steps >= total_steps and config.warmup_steps > 0:
        raise SpecError(
            f"warmup_steps: got {config.warmup_steps}, expected fewer than the run's "
            f"{total_steps} steps"
        )
    multiplier = LRMultiplier(config.schedule, total_steps, config.warmup_steps)
    return LambdaLR(optimizer, lr_lambda=multiplier)
