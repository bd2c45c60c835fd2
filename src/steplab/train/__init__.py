"""The training loop: ``fit(config)`` with the best practices built in.

Schedules with warmup, gradient clipping, gradient monitoring, a non-finite
guard, divergence detection, early stopping, mixed precision, evaluation on
Lookahead's slow weights, checkpoints with bit-exact resume and a progress
bar. See ``docs/training.md``.

Example:
    >>> from steplab.train import TrainConfig, fit
    >>> cfg = TrainConfig(task="beale", optimizer="adam", lr=0.01, steps=20)
    >>> fit(cfg, progress=False).summary["status"]
    'completed'
"""

from __future__ import annotations

from steplab.train.config import TrainConfig
from steplab.train.loop import Report, RunResult, fit
from steplab.train.schedules import SCHEDULES, LRMultiplier, build_scheduler

__all__ = [
    "SCHEDULES",
    "LRMultiplier",
    "Report",
    "RunResult",
    "TrainConfig",
    "build_scheduler",
    "fit",
]
