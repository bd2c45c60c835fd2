"""Atomic, pickle-free training checkpoints (the public face of :mod:`steplab.state`).

>>> from steplab import checkpoint
>>> sorted(n for n in checkpoint.__all__)
['Checkpointer', 'LoadResult', 'PendingSave', 'load', 'open_checkpoint', 'save']
"""

from __future__ import annotations

from steplab.state.checkpoint import LoadResult, load, save
from steplab.state.checkpointer import Checkpointer
from steplab.state.manifest import open_checkpoint
from steplab.state.writer import PendingSave

__all__ = ["Checkpointer", "LoadResult", "PendingSave", "load", "open_checkpoint", "save"]
