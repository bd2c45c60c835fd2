"""Export a checkpoint for deployment: files plain torch and safetensors read without steplab.

``export(path, out, to=...)`` writes into the directory ``out``:

- ``model.safetensors`` (``to="safetensors"``) or ``model.pt`` (``to="torch"``):
  the model's ``state_dict`` (parameters and buffers) by name, loadable with
  ``safetensors.torch.load_file`` or ``torch.load(..., weights_only=True)``
  and then ``model.load_state_dict``;
- ``optimizer.pt`` (when the checkpoint holds optimizer state): a plain torch
  optimizer ``state_dict`` (``{"state": {index: buffers}, "param_groups": [...]}``,
  parameters numbered in group order) that ``torch.load(weights_only=True)``
  accepts and ``optimizer.load_state_dict`` loads into an optimizer built on
  the model's parameters in that order. It also carries
  ``"param_names": [[name, ...] per group]`` so the order can be checked. A
  Lookahead's slow buffers are in ``state`` and its ``lookahead_*`` settings
  and counter in the groups: the form ``steplab.optim.Lookahead.state_dict`` uses.

>>> import tempfile, torch
>>> from torch import nn
>>> from steplab import checkpoint
>>> model = nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> model(torch.ones(1, 2)).sum().backward(); opt.step()
>>> ckpt = checkpoint.save(tempfile.mkdtemp() + "/c", model=model, optimizer=opt, step=1)
>>> [p.name for p in export(ckpt, tempfile.mkdtemp(), to="safetensors")]
['model.safetensors', 'optimizer.pt']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from steplab.errors import CheckpointError, SpecError
from steplab.state.contents import read
from steplab.state.named import migrate_named

__all__ = ["EXPORT_FORMATS", "export", "torch_optimizer_state"]

#: the formats :func:`export` writes the model weights in
EXPORT_FORMATS: tuple[str, ...] = ("safetensors", "torch")


def torch_optimizer_state(named: dict[str, Any]) -> dict[str, Any]:
    """Turn a named optimizer state dict into torch's positional ``state_dict`` form.

    Args:
        named: a named state dict (``steplab.checkpoint.read(path).optimizer``).

    Returns:
        ``{"state", "param_groups", "param_names"}``, parameters numbered by
        position over all groups in order (a Lookahead's slow buffers in
        ``state``, its settings and counter in the groups, as its
        ``state_dict()`` has them; a format-1 named dict is migrated first).
    """
    named = migrate_named(named)
    index: dict[str, int] = {}
    groups, names = [], []
    for group in named["param_groups"]:
        params = list(group["params"])
        ids = [index.setdefault(n, len(index)) for n in params]
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        names.append(params)
    out: dict[str, Any] = {
        "state": {index[n]: dict(b) for n, b in named["state"].items() if n in index},
        "param_groups": groups,
        "param_names": names,
    }
    return out


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: t.detach().contiguous() for k, t in tensors.items()}


def export(path: str | os.PathLike[str], out: str | os.PathLike[str],
           to: str = "safetensors") -> list[Path]:
    """Write a checkpoint's model weights and optimizer state as plain deployment files.

    Args:
        path: a checkpoint directory (or a Checkpointer root: its latest checkpoint).
        out: the directory to write into (created; existing export files are replaced).
        to: ``"safetensors"`` (``model.safetensors``) or ``"torch"`` (``model.pt``).

    Returns:
        The files written.

    Raises:
        SpecError: ``to`` is not one of :data:`EXPORT_FORMATS`.
        CheckpointError: the checkpoint is missing or corrupt, or ``out`` is a file.
    """
    if to not in EXPORT_FORMATS:
        raise SpecError(f"to: got {to!r}, expected one of {', '.join(EXPORT_FORMATS)}")
    contents = read(path)
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"out: {target} is a file, expected a directory")
    target.mkdir(parents=True, exist_ok=True)
    model = _contiguous(contents.model)
    written = []
    if to == "safetensors":
        from safetensors.torch import save_file

        save_file(model, str(target / "model.safetensors"),
                  metadata={"step": str(contents.step), "source": str(contents.path)})
        written.append(target / "model.safetensors")
    else:
        torch.save(model, target / "model.pt")
        written.append(target / "model.pt")
    if contents.optimizer is not None:
        torch.save(torch_optimizer_state(contents.optimizer), target / "optimizer.pt")
        written.append(target / "optimizer.pt")
    return written
