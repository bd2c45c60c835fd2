"""Training on several processes: process group, model wrapping, data shards, agreement.

``steplab train --nproc N`` (or ``torchrun ... -m steplab train``) starts N
processes; in each, :func:`join` joins the process group torch's launcher
described in the environment (gloo on CPU, nccl on CUDA). The model is then
wrapped by torch's own engines, chosen by ``--parallel``:

- ``ddp``: ``DistributedDataParallel`` (gradients averaged across ranks);
- ``zero``: DDP plus ``ZeroRedundancyOptimizer`` (optimizer state sharded; a
  Lookahead spec becomes a Lookahead per rank over its shard);
- ``fsdp``: FSDP2 ``fully_shard`` on every module holding parameters and the
  root (parameters, gradients and optimizer state sharded as ``DTensor``).

Data: every rank walks the same seeded permutation of the training split
(the single-process order, a function of ``(seed, epoch)``), and rank r takes
elements r, r+N, r+2N, ... of each global batch, as torch's
``DistributedSampler`` strides its shards. The union of the shards is the
single-process batch, so N ranks at global batch B follow one process at B
(to float tolerance: reductions sum in another order). Nothing draws from the
global random streams to order data, so dropout streams stay reproducible.

>>> shard(torch.arange(8), World(rank=1, size=2, parallel="ddp")).tolist()
[1, 3, 5, 7]
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from steplab.errors import PeerLostError, SpecError
from steplab.optim import create_optimizer, named_param_groups
from steplab.optim.spec import OptimizerSpec
from steplab.state.names import canonical_module
from steplab.train.batches import Plan
from steplab.train.launch import follow_launcher
from steplab.train.teardown import mark_joined

__all__ = [
    "PARALLEL_MODES", "World", "agree", "announce", "build_optimizer", "join", "lost_rank_errors",
    "scale", "shard", "wrap_model",
]

#: how the model and optimizer are spread over the processes
PARALLEL_MODES: tuple[str, ...] = ("ddp", "zero", "fsdp")
_TIMEOUT = timedelta(minutes=10)  # a rank that stops answering ends the run after this
# how gloo and NCCL say that the other end of a collective went away
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "remote process exited", "communicator was aborted")


@dataclass(frozen=True)
class World:
    """This process's place in the run.

    Attributes:
        rank: this process's index, 0..size-1 (rank 0 writes outputs).
        size: number of processes.
        parallel: ``"ddp"``, ``"zero"`` or ``"fsdp"``.
    """

    rank: int
    size: int
    parallel: str

    @property
    def writes(self) -> bool:
        """True on the one process that writes files and draws progress (rank 0)."""
        return self.rank == 0


def join(parallel: str, device: torch.device) -> World | None:
    """Join the process group the launcher set up in the environment, if any.

    Args:
        parallel: one of :data:`PARALLEL_MODES`.
        device: the training device (picks gloo for CPU, nccl for CUDA).

    Returns:
        The :class:`World`, or None for a single process.

    Raises:
        SpecError: an unknown ``parallel`` mode.
    """
    if parallel not in PARALLEL_MODES:
        raise SpecError(f"parallel: got {parallel!r}, expected one of {', '.join(PARALLEL_MODES)}")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size < 2 and not (dist.is_available() and dist.is_initialized()):
        return None
    if not dist.is_initialized():
        follow_launcher()  # under `steplab train --nproc`: die with the launcher
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=_TIMEOUT)
    mark_joined()  # the exit hook that lets gloo's worker threads finish (train.teardown)
    if dist.get_world_size() < 2:
        return None
    return World(dist.get_rank(), dist.get_world_size(), parallel)


def shard(indices: torch.Tensor, world: World | None) -> torch.Tensor:
    """This rank's elements of a global batch's indices (every ``size``-th, from ``rank``)."""
    return indices if world is None else indices[world.rank :: world.size]


def check_batch(batch_size: int, world: World | None) -> None:
    """Raise :class:`SpecError` unless the global batch splits evenly over the ranks."""
    if world is not None and batch_size % world.size:
        raise SpecError(
            f"batch_size: got {batch_size}, expected a multiple of the {world.size} processes"
            " (each rank takes an equal share of every global batch)"
        )


def wrap_model(model: nn.Module, world: World | None) -> nn.Module:
    """Wrap ``model`` for ``world.parallel`` (unchanged for a single process)."""
    if world is None:
        return model
    if world.parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in list(model.modules())[1:]:
            if any(True for _ in module.parameters(recurse=False)):
                fully_shard(module)
        fully_shard(model)
        return model
    return nn.parallel.DistributedDataParallel(model)


def build_optimizer(spec: OptimizerSpec, model: nn.Module, world: World | None,
                    overrides: dict[str, Any]) -> torch.optim.Optimizer:
    """The run's optimizer: a ``ZeroRedundancyOptimizer`` over ``spec`` for ``zero``.

    Args:
        spec: the optimizer spec.
        model: the (wrapped) model.
        world: the run's world, or None.
        overrides: hyperparameters merged into the innermost optimizer (``lr``).

    Returns:
        The optimizer every rank steps.
    """
    inner = canonical_module(model)
    if world is None or world.parallel != "zero":
        return create_optimizer(spec, inner, **overrides)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    plain = [{k: v for k, v in g.items() if k != "param_names"}  # ZeRO splits the params
             for g in named_param_groups(inner)]

    def local(params: Any, **_: Any) -> torch.optim.Optimizer:
        return create_optimizer(spec, params, **overrides)

    zero = ZeroRedundancyOptimizer(plain, optimizer_class=local)  # type: ignore[arg-type]
    zero.steplab_spec = spec  # type: ignore[attr-defined]
    return zero


def agree(value: float, world: World | None) -> float:
    """The mean of ``value`` over the ranks, so every rank takes the same decisions."""
    if world is None:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def all_true(flag: bool, world: World | None) -> bool:
    """True only when ``flag`` holds on every rank."""
    if world is None:
        return flag
    t = torch.tensor([0.0 if flag else 1.0])
    dist.all_reduce(t)
    return bool(t.item() == 0.0)


@contextlib.contextmanager
def lost_rank_errors(world: World | None) -> Iterator[None]:
    """Turn a collective's failure because another rank died into one clear error line.

    Without this, the surviving ranks end with the backend's raw message (and
    an "unexpected error, report it" line) while the launcher names the rank
    that died.

    Raises:
        PeerLostError: a collective failed because a peer's connection closed (exit code 3).
    """
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if world is None or not any(gone in text for gone in _PEER_GONE):
            raise
        raise PeerLostError(
            f"rank {world.rank} of {world.size}: another rank stopped answering mid-run"
            " (its connection closed); the launcher's line names it") from None


def leave(world: World | None) -> None:
    """Leave the process group :func:`join` joined."""
    if world is not None and dist.is_initialized():
        dist.destroy_process_group()


def scale(world: World | None, plan: Plan, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """How the run is spread: processes, mode, global and per-rank batch, learning rate.

    The batch size a run is given is its global batch, so the learning rate
    needs no scaling rule: it is the one a single process would use.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(1))
        >>> scale(None, Plan(32, False, 10, 100), torch.optim.SGD([p], lr=0.1))["global_batch_size"]
        32
    """
    size = 1 if world is None else world.size
    return {
        "world_size": size,
        "parallel": None if world is None else world.parallel,
        "global_batch_size": plan.batch_size,
        "per_rank_batch_size": plan.batch_size // size,
        "effective_lr": float(optimizer.param_groups[0]["lr"]),
    }


def announce(world: World | None, plan: Plan, optimizer: torch.optim.Optimizer,
             show: bool) -> None:
    """Print the effective global batch and learning rate (rank 0, several processes only)."""
    if world is None or not show:
        return
    info = scale(world, plan, optimizer)
    print(f"steplab train: {world.size} processes ({world.parallel}): global batch"
          f" {info['global_batch_size']} = {world.size} x {info['per_rank_batch_size']} per"
          f" rank; effective lr {info['effective_lr']:.6g}", file=sys.stderr, flush=True)
