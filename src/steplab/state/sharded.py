"""Distributed checkpoints without pickle: per-rank safetensors, JSON metadata, a commit marker.

Every rank of a process group calls :func:`save_sharded` (a collective). The
checkpoint is one directory::

    step-00000020/
      rank-00000.safetensors   # tensors this rank holds: its FSDP2 shards, its ZeRO
      rank-00001.safetensors   #   partition, replicated tensors only from the lowest rank
      metadata.json            # format, step, world size, every tensor's global shape,
                               #   dtype and pieces, optimizer groups, RNG of every rank,
                               #   data order position, scheduler and GradScaler
                               #   state, extra; CRC-32 of every tensor in every file
      COMMITTED                # written last, holds the SHA-256 of metadata.json

It is written into ``.tmp-<name>-<token>`` beside the target, every file
fsynced, the marker written after all ranks finished, then renamed into
place; a directory without a valid marker is never loaded. Tensors are keyed
by parameter name (``model/<name>``, ``optim/<name>/<buffer>``); a tensor
sharded along dim 0 (FSDP2 ``Shard(0)``) is stored as pieces in rank order,
so :mod:`steplab.state.sharded_load` can assemble it for any world size.
torch's DCP is not used for files: its ``.metadata`` is a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from steplab.errors import CheckpointError
from steplab.optim.lookahead_state import local_optimizer, local_tensor
from steplab.state.codec import encode
from steplab.state.names import (
    canonical_module,
    clean_name,
    group_hyperparameters,
    optimizer_param_names,
)
from steplab.state.ranks import arrive, gather_rng, process_group
from steplab.state.tensorfile import DTYPE_NAMES, write_tensors

__all__ = ["FORMAT", "MARKER", "METADATA", "PendingShardedSave", "save_sharded"]

FORMAT = "steplab.sharded-checkpoint/1"
METADATA = "metadata.json"
MARKER = "COMMITTED"
_Stateful = Any


def rank_file(rank: int) -> str:
    """The file name of ``rank``'s tensors."""
    return f"rank-{rank:05d}.safetensors"


def _rank_world() -> tuple[int, int]:
    group = process_group()
    return group if group is not None else (0, 1)


def _piece(value: Tensor) -> tuple[str, Tensor]:
    """("shard", local rows) for a dim-0-sharded DTensor, else ("full", the tensor)."""
    placements = getattr(value, "placements", None)
    if placements is not None:
        kinds = {type(p).__name__ for p in placements}
        if kinds == {"Shard"} and all(getattr(p, "dim", 0) == 0 for p in placements):
            return "shard", local_tensor(value)
        full: Tensor = value.full_tensor()  # type: ignore[attr-defined]
        return "full", full
    return "full", value


def _local_tensors(model: nn.Module, optimizer: torch.optim.Optimizer | None
                   ) -> tuple[dict[str, tuple[str, Tensor, list[int]]], dict[str, Any]]:
    """This rank's tensors by key with (kind, local tensor, global shape); JSON scalars."""
    out: dict[str, tuple[str, Tensor, list[int]]] = {}
    scalars: dict[str, Any] = {}
    for key, value in canonical_module(model).state_dict().items():
        kind, local = _piece(value.detach())
        out[f"model/{clean_name(key)}"] = (kind, local, list(value.shape))
    if optimizer is None:
        return out, scalars
    names = [n for group in optimizer_param_names(optimizer, model) for n in group]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    inner = getattr(optimizer, "optimizer", optimizer)
    state = local_optimizer(inner).state
    for name, param in zip(names, params, strict=True):
        for buffer, value in state.get(param, {}).items():
            key = f"optim/{name}/{buffer}"
            if isinstance(value, Tensor):
                kind, local = _piece(value.detach())
                out[key] = (kind, local, list(value.shape))
            else:
                scalars[key] = value
    return out, scalars


def _assign(declared: list[dict[str, Any]]) -> dict[str, Any]:
    """Who writes what: pieces of sharded tensors in rank order, a full tensor once."""
    tensors: dict[str, Any] = {}
    for rank, entries in enumerate(declared):
        for key, (kind, rows, shape, dtype) in entries.items():
            entry = tensors.setdefault(key, {"shape": shape, "dtype": dtype, "pieces": []})
            if kind == "shard":
                offset = sum(p["rows"] for p in entry["pieces"])
                entry["pieces"].append({"rank": rank, "offset": offset, "rows": rows})
            elif not entry["pieces"]:
                entry["pieces"].append({"rank": rank, "offset": 0, "rows": shape[0] if shape
                                        else 0, "full": True})
    return tensors


def _gather(obj: Any) -> list[Any]:
    world = _rank_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _groups(optimizer: torch.optim.Optimizer | None, model: nn.Module) -> list[dict[str, Any]]:
    if optimizer is None:
        return []
    names = optimizer_param_names(optimizer, model)
    return [{**group_hyperparameters(g), "params": n}
            for g, n in zip(optimizer.param_groups, names, strict=True)]


class PendingShardedSave:
    """A save whose files are being written in the background; :meth:`wait` commits it.

    ``wait`` is a collective: every rank calls it.
    """

    def __init__(self, future: Future[str], commit: Callable[[str], None], target: Path) -> None:
        self._future, self._commit, self.path, self._done = future, commit, target, False

    def wait(self) -> Path:
        """Wait for this rank's file, then for every rank; rank 0 commits; return the path."""
        if not self._done:
            self._done = True
            self._commit(self._future.result())
        return self.path


def _write_marker(tmp: Path, metadata: dict[str, Any]) -> None:
    text = json.dumps(metadata, indent=1, sort_keys=True).encode()
    for name, data in ((METADATA, text), (MARKER, hashlib.sha256(text).hexdigest().encode())):
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished temporary directory into place (an old checkpoint is replaced)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    aside = target.with_name(f".old-{target.name}-{secrets.token_hex(4)}")
    if target.exists():
        os.replace(target, aside)
    os.replace(tmp, target)
    shutil.rmtree(aside, ignore_errors=True)


def _check_target(target: Path) -> None:
    if target.exists() and not (target / MARKER).is_file() and not (target / METADATA).is_file():
        raise CheckpointError(
            f"path: {target} exists and is not a steplab sharded checkpoint; refusing to replace it"
        )


def _json_data(field: str, value: Any) -> Any:
    """``value`` as it reads back from JSON; CheckpointError when it is not JSON data."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{field}: not JSON-serialisable ({exc})") from None


def save_sharded(path: str | os.PathLike[str], *, model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, scheduler: _Stateful = None,
                 scaler: _Stateful = None, sampler: _Stateful = None, step: int = 0,
                 rng: bool = True, extra: dict[str, Any] | None = None,
                 blocking: bool = True) -> Path | PendingShardedSave:
    """Save a distributed checkpoint directory (a collective: every rank calls it).

    Args:
        path: the checkpoint directory (an existing sharded checkpoint there is replaced).
        model: a plain, DDP or FSDP2 model.
        optimizer: any optimizer (ZeRO and Lookahead included); its state is saved
            from the ranks that hold it.
        scheduler: an LR scheduler (its state must be plain data).
        scaler: a ``torch.amp.GradScaler`` (scale, growth factors and tracker).
        sampler: the data order's position: anything with a ``state_dict()``
            of JSON data (steplab's ``BatchStream``, torchdata's stateful
            samplers); saved as ``data`` in ``metadata.json`` with the world
            size it was saved at, and given back by ``load_sharded(sampler=...)``.
        step: the training step.
        rng: save every rank's Python, NumPy and torch RNG states.
        extra: other JSON data (counters, best metrics).
        blocking: False: copy this rank's tensors now, write them on a background
            thread and return a :class:`PendingShardedSave` (``wait()`` commits).

    Returns:
        The path, or a :class:`PendingShardedSave`.

    Raises:
        CheckpointError: the target exists and is not a sharded checkpoint, or
            ``extra``, the scheduler's, scaler's or sampler's state is not plain data.

    Example:
        >>> import tempfile
        >>> model = nn.Linear(3, 2)
        >>> p = save_sharded(tempfile.mkdtemp() + "/ck", model=model, step=4)
        >>> sorted(x.name for x in p.iterdir())
        ['COMMITTED', 'metadata.json', 'rank-00000.safetensors']
    """
    target = Path(path)
    rank, world = _rank_world()
    _check_target(target)
    arrive("checkpoint.save")  # a rank calling save alone fails in one line, not a hang
    extra_json = _json_data("extra", extra or {})
    data = None if sampler is None else _json_data("sampler", sampler.state_dict())
    local, scalars = _local_tensors(model, optimizer)
    declared = _gather({k: (kind, int(t.shape[0]) if t.dim() else 0, shape, DTYPE_NAMES[t.dtype])
                        for k, (kind, t, shape) in local.items()})
    layout = _assign(declared)
    mine = [(k, local[k][1]) for k, e in layout.items()
            if any(p["rank"] == rank for p in e["pieces"])]
    rng_ranks = gather_rng() if rng else None
    token = _gather(secrets.token_hex(4) if rank == 0 else None)[0]
    tmp = target.parent / f".tmp-{target.name}-{token}"
    if rank == 0:
        tmp.mkdir(parents=True)
    _gather(None)  # the directory exists
    sched_tensors: list[tuple[str, Tensor]] = []
    metadata: dict[str, Any] = {
        "format": FORMAT, "step": int(step), "world_size": world, "created_unix": time.time(),
        "torch_version": torch.__version__, "tensors": layout, "scalars": scalars,
        "model": {"class": type(canonical_module(model)).__name__},
        "param_groups": _groups(optimizer, model), "has_optimizer": optimizer is not None,
        "scheduler": None if scheduler is None else encode(
            scheduler.state_dict(), ["scheduler"], sched_tensors),
        "scaler": None if scaler is None else encode(
            scaler.state_dict(), ["scaler"], sched_tensors),
        "data": data, "rng_ranks": rng_ranks, "extra": extra_json,
    }
    if sched_tensors:
        raise CheckpointError(f"{sched_tensors[0][0].split('/')[0]}: holds tensors; expected"
                              " plain data in a sharded save")
    staged = [(k, t.detach().to("cpu", copy=True).contiguous()) for k, t in mine]

    def write() -> str:
        digests = write_tensors(tmp / rank_file(rank), staged, {"format": FORMAT})
        return json.dumps(digests)

    def commit(digests: str) -> None:
        files = _gather(digests)
        if rank == 0:
            metadata["files"] = {rank_file(r): json.loads(d) for r, d in enumerate(files)}
            _write_marker(tmp, metadata)
            _publish(tmp, target)
        _gather(None)  # committed before any rank goes on

    if blocking:
        commit(write())
        return target
    return PendingShardedSave(_POOL.submit(write), commit, target)


_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steplab-sharded-save")
