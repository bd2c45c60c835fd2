"""Which checkpoints a run writes: single-process files, or sharded ones under FSDP2.

A run on one process, or under DDP or ZeRO (whose state rank 0 can gather),
writes steplab's single-process checkpoints (:mod:`steplab.state.checkpointer`;
saving is a collective that rank 0 writes). Under FSDP2 no process holds the
whole model, so each rank writes its shards into a distributed checkpoint
(:mod:`steplab.state.sharded_checkpointer`); it loads at any world size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steplab import checkpoint
from steplab.state.sharded_checkpointer import ShardedCheckpointer
from steplab.state.sharded_load import load_sharded
from steplab.train.session import Session

__all__ = ["Saver", "load_latest", "make_checkpointer", "save_checkpoint"]

Saver = checkpoint.Checkpointer | ShardedCheckpointer


def make_checkpointer(s: Session, every: int, keep_last: int | None) -> Saver | None:
    """The run's checkpointer, or None without a run directory."""
    if s.run_dir is None:
        return None
    if s.world is not None and s.world.parallel == "fsdp":
        return ShardedCheckpointer(s.run_dir.checkpoints, every=every, keep_last=keep_last)
    return checkpoint.Checkpointer(s.run_dir.checkpoints, every=every, keep_last=keep_last)


def load_latest(ckpt: Saver, s: Session, sampler: Any) -> tuple[int, dict[str, Any]] | None:
    """Load the newest good checkpoint into the session and ``sampler`` (the data position).

    Returns:
        ``(step, extra)``, or None when there is no good checkpoint.
    """
    if isinstance(ckpt, ShardedCheckpointer):
        latest: Path | None = ckpt.latest(set_aside=True)
        if latest is None:
            return None
        meta = load_sharded(latest, model=s.model, optimizer=s.optimizer,
                            scheduler=s.scheduler, scaler=s.scaler, sampler=sampler,
                            restore_rng=True)
        extra = dict(meta["extra"])
        if "sampler" not in meta["restored"]:  # written before the data position had its field
            sampler.load_state_dict(extra["data"])
        return int(meta["step"]), extra
    # damaged newer checkpoints are moved aside, so this run can save those steps again
    latest = ckpt.latest(set_aside=True)
    if latest is None:
        return None
    res = checkpoint.load(latest, model=s.model, optimizer=s.optimizer,
                          scheduler=s.scheduler, scaler=s.scaler, restore_rng=True)
    sampler.load_state_dict(res.extra["data"])
    return int(res.step), dict(res.extra)


def save_checkpoint(ckpt: Saver, step: int, s: Session, extra: dict[str, Any],
                    sampler: Any) -> None:
    """Save the session and ``sampler``'s position at ``step`` (every rank calls this).

    A sharded checkpoint keeps the data position in its own ``data`` field;
    a single-process one in ``extra["data"]``.
    """
    if isinstance(ckpt, ShardedCheckpointer):
        ckpt.save(step, model=s.model, optimizer=s.optimizer, scheduler=s.scheduler,
                  scaler=s.scaler, sampler=sampler,
                  extra={k: v for k, v in extra.items() if k != "data"})
        return
    ckpt.save(step, model=s.model, optimizer=s.optimizer, scheduler=s.scheduler,
              scaler=s.scaler, extra={**extra, "data": sampler.state_dict()})
