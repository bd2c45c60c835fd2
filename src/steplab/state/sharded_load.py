"""Read and load the distributed checkpoints :mod:`steplab.state.sharded` writes, at any world size.

Nothing is unpickled: ``metadata.json`` is JSON, the rank files are
safetensors read by :mod:`steplab.state.tensorfile` (header validated, every
tensor's CRC-32 checked against the metadata). A directory whose
``COMMITTED`` marker is missing or does not match ``metadata.json`` is an
interrupted save and is refused.

Each tensor is assembled from its pieces (the ranks' dim-0 shards, in rank
order), so a checkpoint saved by 2 ranks loads into 1 process or 2 (model,
moments, Lookahead's slow weights and counters exactly); each FSDP2
parameter and its state take their local slice, a ZeRO optimizer its
partition. The data order continues exactly only at the same world size
(each rank's random streams are restored then; at another world size they
are not, and the shards of each global batch change).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from steplab.errors import CheckpointError, StateMismatchError
from steplab.state.codec import decode
from steplab.state.hashing import Digests
from steplab.state.named import FORMAT as NAMED_FORMAT
from steplab.state.named import load_named_state_dict
from steplab.state.names import canonical_module, clean_name, named_parameters
from steplab.state.ranks import process_group
from steplab.state.rng import restore_rng as _restore_rng
from steplab.state.sharded import FORMAT, MARKER, METADATA
from steplab.state.tensorfile import read_header, read_tensors, verify_tensors

__all__ = ["ShardedContents", "check_sharded", "is_sharded", "load_sharded", "read_sharded"]


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory in the sharded layout (committed or not)."""
    p = Path(path)
    return p.is_dir() and ((p / METADATA).exists() or any(p.glob("rank-*.safetensors")))


def _open(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"path: {path} is not a sharded checkpoint directory")
    marker, meta = path / MARKER, path / METADATA
    if not marker.is_file() or not meta.is_file():
        raise CheckpointError(
            f"{path}: no {MARKER} marker: an interrupted save, never loaded; use an earlier one"
        )
    text = meta.read_bytes()
    if marker.read_text().strip() != hashlib.sha256(text).hexdigest():
        raise CheckpointError(f"{path}/{MARKER}: does not match {METADATA} (edited or torn)")
    try:
        metadata: dict[str, Any] = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}/{METADATA}: not JSON ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{METADATA} format: got {metadata.get('format')!r}, expected {FORMAT!r}")
    return metadata


def check_sharded(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Check a sharded checkpoint as :func:`load_sharded` will, without assembling it.

    The marker must match ``metadata.json``, every rank file the metadata lists
    must exist with a valid safetensors header holding exactly the listed
    tensors, and (``verify``) every tensor's CRC-32 must match. So a directory
    that passes is one ``load_sharded`` accepts (as far as the files go).

    Args:
        path: the checkpoint directory.
        verify: also check every tensor's checksum (reads every byte once).

    Returns:
        ``metadata.json``.

    Raises:
        CheckpointError: uncommitted, edited, a file missing, truncated or corrupt.

    Example:
        >>> import tempfile
        >>> from steplab.state.sharded import save_sharded
        >>> p = save_sharded(tempfile.mkdtemp() + "/ck", model=nn.Linear(2, 1), step=3)
        >>> check_sharded(p)["step"]
        3
    """
    root = Path(path)
    metadata = _open(root)
    files = metadata.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{root}/{METADATA} files: missing, expected the rank files")
    for name, digests in files.items():
        try:
            header = read_header(root / name)
            if verify:
                verify_tensors(root / name, header, Digests("crc32", digests))
        except CheckpointError as exc:  # its message names the single-process file
            raise CheckpointError(f"{root.name}/{name}: "
                                  f"{str(exc).removeprefix('tensors.safetensors: ')}") from None
        listed = {e.key for e in header.entries}
        if listed != set(digests):
            raise CheckpointError(f"{root.name}/{name}: holds {len(listed)} tensors, {METADATA}"
                                  f" lists {len(digests)} (not the file it wrote)")
    return metadata


def _read_files(path: Path, metadata: dict[str, Any], verify: bool) -> dict[str, Tensor]:
    pieces: dict[str, Tensor] = {}
    for name, digests in metadata["files"].items():
        header = read_header(path / name)  # a pickle or other non-safetensors file fails here
        expected = Digests("crc32", digests) if verify else None
        for key, value in read_tensors(path / name, header, expected).items():
            pieces[f"{name}:{key}"] = value
    return pieces


def _assemble(metadata: dict[str, Any], pieces: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, entry in metadata["tensors"].items():
        parts = [pieces[f"rank-{p['rank']:05d}.safetensors:{key}"] for p in entry["pieces"]]
        full = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if list(full.shape) != list(entry["shape"]):
            raise CheckpointError(f"{METADATA} tensors.{key}: pieces do not make shape"
                                  f" {entry['shape']} (got {list(full.shape)})")
        out[key] = full
    return out


@dataclass(frozen=True)
class ShardedContents:
    """A sharded checkpoint assembled in memory, without the model.

    Attributes:
        model: full model tensors by clean name.
        optimizer: a named optimizer state dict (format 2), or None.
        metadata: ``metadata.json``.
    """

    model: dict[str, Tensor]
    optimizer: dict[str, Any] | None
    metadata: dict[str, Any]


def read_sharded(path: str | os.PathLike[str], *, verify: bool = True) -> ShardedContents:
    """Assemble a sharded checkpoint's full tensors (model, named optimizer state).

    Raises:
        CheckpointError: uncommitted, edited, corrupt, or not this format.
    """
    root = Path(path)
    metadata = _open(root)
    tensors = _assemble(metadata, _read_files(root, metadata, verify))
    model = {k.removeprefix("model/"): t for k, t in tensors.items() if k.startswith("model/")}
    if not metadata.get("has_optimizer"):
        return ShardedContents(model, None, metadata)
    state: dict[str, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *metadata["scalars"].items()]:
        if key.startswith("optim/"):
            name, _, buffer = key.removeprefix("optim/").rpartition("/")
            state.setdefault(name, {})[buffer] = value
    names = [n for g in metadata["param_groups"] for n in g["params"]]
    named = {"format": NAMED_FORMAT, "optimizer": None, "spec": None,
             "param_shapes": {n: list(model[n].shape) for n in names if n in model},
             "state": state, "param_groups": metadata["param_groups"]}
    return ShardedContents(model, named, metadata)


def _place(full: Tensor, like: Tensor) -> Tensor:
    """``full`` as ``like`` holds it: its local slice for an FSDP2 DTensor, else itself."""
    mesh = getattr(like, "device_mesh", None)
    if mesh is None:
        return full
    from torch.distributed.tensor import distribute_tensor

    placements = like.placements  # type: ignore[attr-defined]
    return distribute_tensor(full.to(like.device), mesh, placements, src_data_rank=None)


def _load_model(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    current = {clean_name(k): v for k, v in canonical_module(model).state_dict(
        keep_vars=True).items()}
    missing = sorted(set(current) - set(tensors))
    unexpected = sorted(set(tensors) - set(current))
    if missing or unexpected:
        raise StateMismatchError(f"model: checkpoint does not fit: missing {missing[:5]},"
                                 f" unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, target in current.items():
            value = _place(tensors[name], target)
            if tuple(value.shape) != tuple(target.shape):
                raise StateMismatchError(f"model.{name}: shape {tuple(value.shape)},"
                                         f" expected {tuple(target.shape)}")
            target.copy_(value)


def load_sharded(path: str | os.PathLike[str], *, model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                 scaler: Any = None, sampler: Any = None, restore_rng: bool = False,
                 strict: bool = True) -> dict[str, Any]:
    """Load a sharded checkpoint into a model (plain, DDP, FSDP2) and optimizer, any world size.

    Every rank calls it. Everything is read and checked before anything changes.

    Args:
        path: the checkpoint directory.
        model: receives the weights (FSDP2 parameters their local slices).
        optimizer: receives the state by parameter name (ZeRO its partition).
        scheduler: receives the saved scheduler state.
        scaler: a ``torch.amp.GradScaler``; receives the saved one's state.
        sampler: receives the saved data position (``load_state_dict(data)``).
            The order of global batches continues at any world size; at the
            saved world size each rank also gets the same share of each.
        restore_rng: restore this rank's random streams (same world size only).
        strict: any name or shape difference is an error.

    Returns:
        ``metadata.json`` (``step``, ``data``, ``extra``, ``world_size``...) plus
        ``"restored"``: the parts restored.

    Raises:
        CheckpointError: uncommitted, edited or corrupt; never unpickles anything.
        StateMismatchError: the checkpoint does not fit the model or optimizer.
    """
    contents = read_sharded(path)
    restored = ["model"]
    _load_model(model, contents.model)
    if optimizer is not None:
        if contents.optimizer is None:
            raise StateMismatchError("optimizer: the checkpoint holds no optimizer state")
        params = named_parameters(model)
        for name, buffers in contents.optimizer["state"].items():
            param = params.get(name)
            for key, value in buffers.items():
                if param is not None and isinstance(value, Tensor) and value.shape == param.shape:
                    buffers[key] = _place(value, param)
        load_named_state_dict(optimizer, model, contents.optimizer, strict, copy=False)
        restored.append("optimizer")
    meta = contents.metadata
    for name, obj, saved in (("scheduler", scheduler, meta.get("scheduler")),
                             ("scaler", scaler, meta.get("scaler")),
                             ("sampler", sampler, meta.get("data"))):
        if obj is not None and saved is not None:
            obj.load_state_dict(decode(saved, {}) if name != "sampler" else saved)
            restored.append(name)
    rank, world = process_group() or (0, 1)
    ranks = contents.metadata.get("rng_ranks")
    if restore_rng and isinstance(ranks, list) and len(ranks) == world:
        _restore_rng(ranks[rank])
        restored.append("rng")
    return {**contents.metadata, "restored": tuple(restored)}
