"""Periodic distributed checkpoints: ``step-N`` sharded directories, rotation, ``latest()``.

The sharded counterpart of :class:`steplab.state.checkpointer.Checkpointer`
(same names, same rules): every rank calls :meth:`ShardedCheckpointer.save`;
with ``blocking=False`` the tensors are copied now and the files written in
the background, and the commit happens at the next save, :meth:`wait` or
:meth:`close` (collectives too). :meth:`latest` returns the newest directory
whose commit marker matches its metadata and whose rank files are all there
and whole (checksums checked), so neither a save killed at any moment nor a
file damaged later is returned; rank 0 removes checkpoints beyond ``keep_last`` and the
temporary directories of saves that died. As with the single-process
``Checkpointer``, a damaged ``step-N`` never blocks a run and is never
deleted: ``latest(set_aside=True)`` (resuming) and :meth:`save` rename it to
``damaged-step-N`` on rank 0, with one warning line, and every rank waits for that.

>>> import tempfile, torch
>>> ck = ShardedCheckpointer(tempfile.mkdtemp(), every=2, keep_last=1)
>>> for step in (2, 4):
...     _ = ck.save(step, model=torch.nn.Linear(2, 1))
>>> ck.latest().name, len(ck.checkpoints())
('step-00000004', 1)
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from steplab.errors import CheckpointError, SpecError
from steplab.state.ranks import process_group
from steplab.state.sharded import PendingShardedSave, save_sharded
from steplab.state.sharded_load import _open, check_sharded

__all__ = ["ShardedCheckpointer"]

_NAME = re.compile(r"^step-(\d{8})$")


class ShardedCheckpointer:
    """Save a sharded checkpoint every ``every`` steps under ``root``; keep the last ``keep_last``.

    Args:
        root: directory of the ``step-NNNNNNNN`` checkpoints.
        every: steps between saves.
        keep_last: checkpoints kept (None: all).
        verify: :meth:`latest` checks every tensor's checksum (True) or only the
            marker, the metadata and each rank file's header and size (False).

    Raises:
        SpecError: ``every`` or ``keep_last`` below 1.
    """

    def __init__(self, root: str | os.PathLike[str], every: int = 1,
                 keep_last: int | None = 3, *, verify: bool = True) -> None:
        if not isinstance(every, int) or every < 1:
            raise SpecError(f"every: got {every!r}, expected an integer >= 1")
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise SpecError(f"keep_last: got {keep_last!r}, expected an integer >= 1 or None")
        self.root, self.every, self.keep_last = Path(root), every, keep_last
        self.root.mkdir(parents=True, exist_ok=True)
        self.verify = verify
        self._pending: PendingShardedSave | None = None
        self._warned: set[str] = set()  # damaged checkpoints already warned about

    def path_for(self, step: int) -> Path:
        """The directory of the checkpoint for ``step``."""
        return self.root / f"step-{step:08d}"

    def save(self, step: int, *, blocking: bool = True, **save_kwargs: Any) -> Path:
        """Save for ``step`` (a collective; see :func:`steplab.state.sharded.save_sharded`)."""
        self.wait()
        target = self.path_for(step)
        if target.exists():
            try:
                _open(target)
            except CheckpointError as exc:  # our own step directory, damaged: keep it aside
                self._set_aside([(target, str(exc))])
        result = save_sharded(self.path_for(step), step=step, blocking=blocking, **save_kwargs)
        if isinstance(result, PendingShardedSave):
            self._pending = result
            return result.path
        self._rotate()
        return result

    def wait(self) -> Path | None:
        """Commit the save in flight, if any (a collective); return its path."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        path = pending.wait()
        self._rotate()
        return path

    def close(self) -> None:
        """Commit the save in flight."""
        self.wait()

    def checkpoints(self) -> list[Path]:
        """Committed checkpoint directories, oldest first."""
        found = []
        for p in self.root.iterdir():
            if _NAME.match(p.name):
                try:
                    _open(p)
                except CheckpointError:
                    continue
                found.append(p)
        return sorted(found, key=lambda p: p.name)

    def latest(self, *, set_aside: bool = False) -> Path | None:
        """The newest checkpoint that :func:`~steplab.state.sharded_load.load_sharded` accepts.

        Each ``step-N`` is checked newest first with
        :func:`~steplab.state.sharded_load.check_sharded`: commit marker, every
        rank file the metadata lists present and whole, and (``verify``) every
        tensor's checksum. A damaged one is skipped with one warning (once per
        checkpoint) and the next older one tried.

        Args:
            set_aside: also rename each damaged ``step-N`` newer than the one
                returned to ``damaged-step-N`` (rank 0; one warning each), so
                training on can save those steps again (a collective then).

        Returns:
            The checkpoint directory, or None when there is no good one.
        """
        damaged: list[tuple[Path, str]] = []
        found = None
        for p in sorted((p for p in self.root.iterdir() if _NAME.match(p.name)), reverse=True):
            try:
                check_sharded(p, verify=self.verify)
            except CheckpointError as exc:
                damaged.append((p, str(exc)))
                continue
            found = p
            break
        if set_aside:
            self._set_aside(damaged)
        else:
            for p, reason in damaged:
                if p.name not in self._warned:
                    self._warned.add(p.name)
                    warnings.warn(f"skipping checkpoint {p.name}: {reason}", stacklevel=2)
        return found

    def _set_aside(self, damaged: list[tuple[Path, str]]) -> None:
        """Rank 0 renames each to a free ``damaged-<name>[-N]`` and warns; all ranks wait."""
        if (process_group() or (0, 1))[0] == 0:
            for path, reason in damaged:
                aside, n = self.root / f"damaged-{path.name}", 1
                while aside.exists():
                    n += 1
                    aside = self.root / f"damaged-{path.name}-{n}"
                os.replace(path, aside)
                warnings.warn(f"checkpoint {path.name} is damaged ({reason}); moved it aside "
                              f"to {aside}", stacklevel=3)
        if process_group() is not None:
            import torch.distributed as dist

            dist.barrier()

    def _rotate(self) -> None:
        if (process_group() or (0, 1))[0] != 0:
            return
        for p in self.root.iterdir():
            if p.name.startswith((".tmp-", ".old-")) and (self._pending is None or
                                                          p.name != self._pending.path.name):
                shutil.rmtree(p, ignore_errors=True)
        if self.keep_last is not None:
            for old in self.checkpoints()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
