"""Atomic, pickle-free training checkpoints (the public face of :mod:`steplab.state`).

- :func:`save` / :func:`load` / :class:`Checkpointer`: write and restore training state;
- :func:`read`: everything a checkpoint holds, by name, without the model;
- :func:`migrate`: upgrade an older checkpoint format (the :data:`MIGRATIONS` chain);
- :func:`export`: model weights as plain safetensors or torch files, optimizer
  state as a dict ``torch.load(weights_only=True)`` accepts.

>>> from steplab import checkpoint
>>> sorted(n for n in checkpoint.__all__)  # doctest: +NORMALIZE_WHITESPACE
['CheckpointContents', 'Checkpointer', 'LoadResult', 'MIGRATIONS', 'PendingSave', 'export',
 'load', 'migrate', 'open_checkpoint', 'read', 'register_migration', 'save']
"""

from __future__ import annotations

from steplab.state.checkpoint import LoadResult, load, save
from steplab.state.checkpointer import Checkpointer
from steplab.state.contents import CheckpointContents, read
from steplab.state.export import export
from steplab.state.manifest import open_checkpoint
from steplab.state.migrate import MIGRATIONS, migrate, register_migration
from steplab.state.writer import PendingSave

__all__ = [
    "MIGRATIONS",
    "CheckpointContents",
    "Checkpointer",
    "LoadResult",
    "PendingSave",
    "export",
    "load",
    "migrate",
    "open_checkpoint",
    "read",
    "register_migration",
    "save",
]
