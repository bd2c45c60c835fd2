"""Checkpoints inside a torch.distributed process group: one writer, every rank's random streams.

When a process group with more than one process is initialized,
:func:`steplab.checkpoint.save` is a collective: every rank calls it (a rank
that calls it alone gets, after ``STEPLAB_COLLECTIVE_TIMEOUT`` seconds,
default 600, one line naming the ranks that never came, not a hang), the
random-number states of all ranks are gathered (each rank has its own dropout
stream; restoring rank 0's everywhere would make their masks identical), a
``ZeroRedundancyOptimizer``'s shards are consolidated, rank 0 alone writes, and
every rank returns once the checkpoint is committed. :func:`steplab.checkpoint.load`
gives each rank its own random streams back.

Without a process group (or with one process) nothing here does anything.

>>> process_group() is None  # no process group in a doctest
True
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from steplab.errors import CheckpointError, SpecError
from steplab.optim.lookahead_state import local_optimizer
from steplab.state.rng import capture_rng

__all__ = ["arrive", "barrier", "consolidate", "gather_rng", "process_group", "rank_rng"]

TIMEOUT_ENV = "STEPLAB_COLLECTIVE_TIMEOUT"  # seconds arrive() waits for every rank
_calls: dict[str, int] = {}  # arrive() calls by name in this process


def process_group() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the default process group, or None without one (or alone)."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if process_group() is not None:
        dist.barrier()


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV, "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise SpecError(f"{TIMEOUT_ENV}: got {text!r}, expected a number of seconds > 0")
    return seconds


def arrive(what: str) -> None:
    """Wait until every rank has called ``what`` (a collective), or fail naming the absent ranks.

    Each rank marks its n-th call of ``what`` in the process group's store
    and waits for every rank's mark, at most ``STEPLAB_COLLECTIVE_TIMEOUT``
    seconds (default 600). Without a process group it does nothing.

    Args:
        what: the collective's name, as the error should show it.

    Raises:
        CheckpointError: a rank did not call ``what`` in time (one line, naming it).
        SpecError: a bad ``STEPLAB_COLLECTIVE_TIMEOUT``.

    Example:
        >>> arrive("checkpoint.save")  # alone: returns at once
    """
    group = process_group()
    if group is None:
        return
    rank, world = group
    seconds = _timeout()
    _calls[what] = n = _calls.get(what, 0) + 1
    store = dist.distributed_c10d._get_default_store()
    keys = [f"steplab/arrive/{what}/{n}/{r}" for r in range(world)]
    store.set(keys[rank], "1")
    try:
        store.wait(keys, timedelta(seconds=seconds))
    except RuntimeError:  # torch's DistStoreError (a timeout) is one
        absent = [str(r) for r, key in enumerate(keys) if not store.check([key])]
        raise CheckpointError(
            f"{what}: rank {', '.join(absent) or '?'} of {world} did not call it within"
            f" {seconds:g} s (in a process group it is a collective: every rank calls it;"
            f" {TIMEOUT_ENV} sets the wait)") from None


def gather_rng() -> list[dict[str, Any]]:
    """Every rank's :func:`~steplab.state.rng.capture_rng`, in rank order (a collective)."""
    mine = capture_rng()
    group = process_group()
    if group is None:
        return [mine]
    states: list[Any] = [None] * group[1]
    dist.all_gather_object(states, mine)
    return states


def consolidate(optimizer: torch.optim.Optimizer | None) -> None:
    """Gather a ``ZeroRedundancyOptimizer``'s shards on rank 0 (a collective; else nothing).

    A Lookahead around ZeRO is looked through.
    """
    if optimizer is None:
        return
    inner = getattr(optimizer, "optimizer", optimizer)
    for candidate in (optimizer, inner):
        if hasattr(candidate, "consolidate_state_dict") and local_optimizer(
                candidate) is not candidate:
            candidate.consolidate_state_dict(to=0)
            return


def rank_rng(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The random-number state this rank should restore from a checkpoint's manifest.

    Args:
        manifest: a checkpoint manifest (``rng``: rank 0's state; ``rng_ranks``:
            every rank's, when saved from a process group).

    Returns:
        This rank's saved state; rank 0's when the checkpoint was saved by one
        process and this is one process; None when the world size changed
        (there is no saved stream for this rank; data order changes then too).
    """
    ranks = manifest.get("rng_ranks")
    group = process_group()
    rank, world = group if group is not None else (0, 1)
    if isinstance(ranks, list):
        return ranks[rank] if len(ranks) == world else None
    rng: dict[str, Any] | None = manifest.get("rng")
    return rng if world == 1 else None
