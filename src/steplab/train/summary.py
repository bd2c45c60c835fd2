"""``summary.json``: the result of a run, with exactly the keys ``docs/contracts.md`` fixes.

Keys: ``status``, ``run_id``, ``steps``, ``metrics`` (final ``train_loss`` and
evaluation metrics), ``best_metrics``, ``target``, ``target_step``,
``target_time``, ``wall_time`` (training seconds, evaluation excluded),
``steps_per_s``, ``step_time_ms`` (median forward+backward+step time of the
steps this process ran), ``nonfinite_skipped``, ``state_bytes_per_param``,
``peak_state_bytes`` (the most bytes of optimizer-state tensors held, checked
at every log step and at the end),
``n_params``, ``final_params_sha256``, ``torch_version``, ``stop_reason``
(why a diverged run ended, else None), and ``data`` (the task's
``TaskData.meta``: where the data came from, e.g. the LM corpus's SHA-256;
``{}`` for tasks that say nothing).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import torch

from steplab.optim import Lookahead
from steplab.optim.lookahead_state import local_optimizer, local_tensor
from steplab.state import params_sha256
from steplab.train.distributed import scale

if TYPE_CHECKING:
    from steplab.train.loop import _Loop

__all__ = ["build_summary", "state_bytes"]


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of this process's per-parameter optimizer state (Lookahead's slow copies included).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(10)); p.grad = torch.ones(10)
        >>> opt = torch.optim.Adam([p]); _ = opt.step()
        >>> state_bytes(opt) >= 80  # exp_avg and exp_avg_sq, 10 float32 each
        True
    """
    inner = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer
    buffers: list[dict[str, Any]] = list(local_optimizer(inner).state.values())
    return sum(
        local_tensor(t).numel() * t.element_size()  # FSDP2: this rank's shard
        for per_param in buffers
        for t in per_param.values()
        if isinstance(t, torch.Tensor)
    )


def build_summary(loop: _Loop, status: str) -> dict[str, Any]:
    """Collect the summary of ``loop``'s run, ended with ``status``."""
    s = loop.s
    n_params = sum(p.numel() for p in s.params)
    wall = loop.train_time()
    return {
        "status": status,
        "run_id": s.config.run_id,
        "steps": loop.step,
        "metrics": {"train_loss": loop.train_loss, **loop.book.last},
        "best_metrics": dict(loop.book.best),
        "target": loop.book.target.to_dict(),  # with a config's target_value
        "target_step": loop.book.target_step,
        "target_time": loop.book.target_time,
        "wall_time": wall,
        "steps_per_s": loop.step / wall if wall > 0 else None,
        "step_time_ms": statistics.median(loop.step_times) * 1e3 if loop.step_times else None,
        "nonfinite_skipped": loop.watch.skipped,
        "state_bytes_per_param": state_bytes(s.optimizer) / max(n_params, 1),
        "peak_state_bytes": loop.peak_state,
        "n_params": n_params,
        "final_params_sha256": params_sha256(s.model),
        "torch_version": torch.__version__,
        "stop_reason": loop.reason,
        "data": dict(s.data.meta),
        **scale(s.world, s.plan, s.optimizer),
    }
