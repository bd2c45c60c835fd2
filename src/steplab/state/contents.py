"""Read a checkpoint without the model: named weights, named optimizer state, everything else.

:func:`read` is what a script needs to look at or reuse a checkpoint without
rebuilding the model that wrote it: the model's tensors by name, the optimizer
state as a named state dict (the form :func:`steplab.state.transfer` and
:func:`steplab.state.load_named_state_dict` take), and the scheduler, scaler,
RNG and ``extra`` sections, all decoded from the manifest's references.

>>> import tempfile, torch
>>> from torch import nn
>>> from steplab import checkpoint
>>> model = nn.Linear(2, 1); opt = torch.optim.Adam(model.parameters())
>>> model(torch.ones(1, 2)).sum().backward(); opt.step()
>>> path = checkpoint.save(tempfile.mkdtemp() + "/c", model=model, optimizer=opt, step=1)
>>> contents = read(path)
>>> sorted(contents.model), sorted(contents.optimizer["state"]["weight"])
(['bias', 'weight'], ['exp_avg', 'exp_avg_sq', 'step'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steplab.errors import CheckpointError
from steplab.state.codec import decode
from steplab.state.inspection import resolve_checkpoint
from steplab.state.manifest import MANIFEST, open_checkpoint
from steplab.state.named import migrate_named
from steplab.state.tensorfile import read_tensors

__all__ = ["CheckpointContents", "read"]


@dataclass(frozen=True)
class CheckpointContents:
    """Everything a checkpoint holds, decoded.

    Attributes:
        path: the checkpoint directory read.
        format: its format tag (``"steplab.checkpoint/2"``).
        step: the step it was saved at.
        model: the model's parameters and buffers by clean name.
        optimizer: the named optimizer state dict, or None when none was saved.
        scheduler: the scheduler's state dict, or None.
        scaler: the GradScaler's state dict, or None.
        rng: the captured RNG states, or None.
        extra: the user's ``extra`` dict.
        manifest: the raw manifest (tensors as references).
    """

    path: Path
    format: str
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any] | None
    rng: dict[str, Any] | None
    extra: dict[str, Any]
    manifest: dict[str, Any]


def read(path: str | os.PathLike[str], *, verify: bool = True) -> CheckpointContents:
    """Read a checkpoint directory (or a Checkpointer root's latest) without the model.

    Args:
        path: a checkpoint directory, or a Checkpointer root (its newest good checkpoint).
        verify: check every tensor's checksum against the manifest.

    Returns:
        A :class:`CheckpointContents`.

    Raises:
        CheckpointError: missing, corrupt or not a checkpoint (pickles are refused unread).
    """
    ckpt = open_checkpoint(resolve_checkpoint(Path(path)))
    manifest = ckpt.manifest
    tensors = read_tensors(ckpt.tensors_path, ckpt.header,
                           ckpt.expected_digests if verify else None)
    try:
        parts = {n: decode(manifest.get(n), tensors)
                 for n in ("optimizer", "scheduler", "scaler")}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{MANIFEST}: malformed state ({exc})") from None
    model = {k.removeprefix("model/"): t for k, t in tensors.items() if k.startswith("model/")}
    if parts["optimizer"] is not None:  # one layout for callers: Lookahead state in torch's
        parts["optimizer"] = migrate_named(parts["optimizer"])
    return CheckpointContents(
        ckpt.path, str(manifest["format"]), int(manifest["step"]), model, parts["optimizer"],
        parts["scheduler"], parts["scaler"], manifest.get("rng"), dict(manifest["extra"]),
        manifest)
