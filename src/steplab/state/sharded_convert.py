"""Turn a distributed (sharded) checkpoint into the single-process format, and back.

A sharded checkpoint (:mod:`steplab.state.sharded`) becomes one
``manifest.json`` + ``tensors.safetensors`` directory that
:func:`steplab.checkpoint.load` reads in one process; a single-process
checkpoint becomes a sharded one with one rank file, which
:func:`steplab.state.sharded_load.load_sharded` loads at any world size.
Tensors, optimizer state by name (Lookahead's slow weights and counters
included), scheduler and GradScaler state, extra and RNG states carry over
unchanged; the data position moves between the sharded ``data`` field and
``extra["data"]``, where a single-process run keeps it.
Writes are atomic as everywhere else; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import torch

from steplab.errors import CheckpointError
from steplab.state.checkpoint import _commit, _tensor_key
from steplab.state.codec import encode
from steplab.state.contents import read
from steplab.state.manifest import CHECKSUM
from steplab.state.manifest import FORMAT as SINGLE_FORMAT
from steplab.state.sharded import FORMAT, MARKER, METADATA, _publish, rank_file
from steplab.state.sharded_load import is_sharded, read_sharded
from steplab.state.tensorfile import DTYPE_NAMES, write_tensors

__all__ = ["convert"]


def _to_single(src: Path, dst: Path) -> Path:
    contents = read_sharded(src)
    meta = contents.metadata
    tensors: list[tuple[str, torch.Tensor]] = [(f"model/{k}", v) for k, v in
                                               contents.model.items()]
    ranks = meta.get("rng_ranks")
    body: dict[str, Any] = {
        "format": SINGLE_FORMAT, "checksum": CHECKSUM, "step": int(meta["step"]),
        "created_unix": time.time(), "torch_version": torch.__version__,
        "model": {"class": meta["model"]["class"], "keys": list(contents.model)},
        "optimizer": None if contents.optimizer is None else encode(
            contents.optimizer, [], tensors, _tensor_key),
        "scheduler": meta.get("scheduler"), "scaler": meta.get("scaler"),
        "rng": ranks[0] if isinstance(ranks, list) and ranks else None,
        "extra": {**meta["extra"], **({} if meta.get("data") is None else {"data": meta["data"]}),
                  "converted_from": {"world_size": meta["world_size"], "rng_ranks": ranks}},
    }
    return _commit(dst, tensors, body)


def _to_sharded(src: Path, dst: Path) -> Path:
    c = read(src)
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v for k, v in c.model.items()}
    scalars: dict[str, Any] = {}
    groups: list[dict[str, Any]] = []
    if c.optimizer is not None:
        groups = c.optimizer["param_groups"]
        for name, buffers in c.optimizer["state"].items():
            for key, value in buffers.items():
                target = tensors if isinstance(value, torch.Tensor) else scalars
                target[f"optim/{name}/{key}"] = value
    layout = {k: {"shape": list(t.shape), "dtype": DTYPE_NAMES[t.dtype],
                  "pieces": [{"rank": 0, "offset": 0, "rows": t.shape[0] if t.dim() else 0,
                              "full": True}]} for k, t in tensors.items()}
    sched: list[tuple[str, torch.Tensor]] = []
    metadata: dict[str, Any] = {
        "format": FORMAT, "step": c.step, "world_size": 1, "created_unix": time.time(),
        "torch_version": torch.__version__, "tensors": layout, "scalars": scalars,
        "model": {"class": c.manifest["model"]["class"]}, "param_groups": groups,
        "has_optimizer": c.optimizer is not None,
        "scheduler": None if c.scheduler is None else encode(c.scheduler, ["scheduler"], sched),
        "scaler": None if c.scaler is None else encode(c.scaler, ["scaler"], sched),
        "data": c.extra.get("data"),  # where a single-process run keeps its data position
        "rng_ranks": None if c.rng is None else [c.rng],
        "extra": {k: v for k, v in c.extra.items() if k != "data"},
    }
    tmp = dst.parent / f".tmp-{dst.name}-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    digests = write_tensors(tmp / rank_file(0), list(tensors.items()), {"format": FORMAT})
    metadata["files"] = {rank_file(0): dict(digests)}
    text = json.dumps(metadata, indent=1, sort_keys=True).encode()
    (tmp / METADATA).write_bytes(text)
    (tmp / MARKER).write_text(hashlib.sha256(text).hexdigest())
    _publish(tmp, dst)
    return dst


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert a sharded checkpoint to the single-process format, or a single-process one back.

    Args:
        src: a checkpoint directory of either kind.
        dst: the directory to create (must not exist).

    Returns:
        ``dst``.

    Raises:
        CheckpointError: ``dst`` exists, or ``src`` is not a good checkpoint.

    Example:
        >>> import tempfile
        >>> from steplab.state.sharded import save_sharded
        >>> root = tempfile.mkdtemp()
        >>> _ = save_sharded(root + "/d", model=torch.nn.Linear(2, 1), step=3)
        >>> single = convert(root + "/d", root + "/s")
        >>> sorted(p.name for p in single.iterdir())
        ['manifest.json', 'tensors.safetensors']
        >>> sorted(p.name for p in convert(single, root + "/d2").iterdir())[0]
        'COMMITTED'
    """
    source, target = Path(src), Path(dst)
    if target.exists():
        raise CheckpointError(f"dst: {target} exists, expected a new directory")
    if is_sharded(source):
        return _to_single(source, target)
    return _to_sharded(source, target)
