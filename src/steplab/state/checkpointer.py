"""Periodic checkpoints in one directory: rotation, async saves, the latest good one.

Checkpoints are directories ``root/step-00000123``. :meth:`Checkpointer.latest`
returns the newest one that passes every check :func:`steplab.checkpoint.load`
makes (manifest, header and, by default, every tensor's hash), skipping
incomplete or corrupt ones with a warning, so what it returns, ``load``
accepts. One ``Checkpointer`` per root: two writers to one root are not
supported.

A damaged checkpoint is never deleted (a person may want to recover it) and
never blocks a run: ``latest(set_aside=True)``, which resuming uses, renames
each damaged checkpoint newer than the one it returns to
``damaged-step-00000123`` beside it, with one warning line, and :meth:`save`
does the same with a damaged directory in its way. Rotation never touches
``damaged-*``.

>>> import tempfile, torch
>>> from torch import nn
>>> model = nn.Linear(2, 1)
>>> ckpt = Checkpointer(tempfile.mkdtemp(), every=2, keep_last=2)
>>> for step in range(1, 7):
...     _ = ckpt.maybe_save(step, model=model)
>>> ckpt.close()
>>> ckpt.latest().name, [p.name for p in ckpt.checkpoints()]
('step-00000006', ['step-00000004', 'step-00000006'])
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from steplab.errors import CheckpointError, SpecError
from steplab.state.checkpoint import (
    _check_target,
    _commit,
    _snapshot,
    collect_for_save,
    remove_tree,
)
from steplab.state.manifest import MANIFEST, open_checkpoint
from steplab.state.ranks import barrier
from steplab.state.tensorfile import verify_tensors
from steplab.state.writer import BackgroundWriter

__all__ = ["Checkpointer"]

_NAME = re.compile(r"^step-(\d{8,})$")
_ASIDE = re.compile(r"^\.old-step-(\d{8,})-\d+-[0-9a-f]+$")  # left by a crash mid-replace
_TMP = re.compile(r"^\.tmp-step-\d{8,}-(\d+)-[0-9a-f]+$")


class Checkpointer:
    """Save every ``every`` steps into ``root``, keep the last ``keep_last``.

    Args:
        root: directory holding the checkpoints (created if needed).
        every: :meth:`maybe_save` saves when ``step % every == 0``.
        keep_last: how many complete checkpoints to keep (None: all).
        verify: :meth:`latest` checks every tensor checksum (True) or only the
            manifest and header (False; faster for big checkpoints).

    Raises:
        SpecError: for ``every < 1`` or ``keep_last < 1``.
    """

    def __init__(self, root: str | os.PathLike[str], every: int = 1, keep_last: int | None = 3,
                 *, verify: bool = True) -> None:
        if not isinstance(every, int) or every < 1:
            raise SpecError(f"every: got {every!r}, expected an integer >= 1")
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise SpecError(f"keep_last: got {keep_last!r}, expected an integer >= 1 or None")
        self.root = Path(root)
        self.every = every
        self.keep_last = keep_last
        self.verify = verify
        self._writer = BackgroundWriter()
        # CPU staging buffers of background saves, reused from save to save: a copy into
        # memory already touched is about twice as fast as into fresh pages (page faults)
        self._staging: dict[str, torch.Tensor] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, step: int) -> Path:
        """The directory of the checkpoint for ``step``."""
        return self.root / f"step-{step:08d}"

    def maybe_save(self, step: int, **save_kwargs: Any) -> Path | None:
        """Save when ``step % every == 0``; return the path (None when not saving)."""
        self._writer.check()
        if step % self.every != 0:
            return None
        return self.save(step, **save_kwargs)

    def save(self, step: int, *, blocking: bool = True, **save_kwargs: Any) -> Path:
        """Save a checkpoint for ``step`` (see :func:`steplab.checkpoint.save`).

        With ``blocking=False`` the tensors are copied to CPU buffers on this
        thread and written by a background thread; the previous background
        save is waited for first, and its error, if any, is raised here. The
        buffers are kept for the next background save (one copy of the state,
        freed by :meth:`close`).

        Returns:
            The checkpoint directory (being written when ``blocking=False``).
        """
        self._writer.wait()
        target = self.path_for(step)
        try:
            _check_target(target)
        except CheckpointError as exc:  # our own step directory, damaged: keep it, out of the way
            self._set_aside(target, str(exc))
        args = _save_args(save_kwargs)
        writes, rng_ranks = collect_for_save(args.get("optimizer"), args.get("rng", True))
        if not writes:  # in a process group rank 0 writes; the others wait for it
            barrier()
            return target
        tensors, body = _snapshot(step=step, stage=not blocking, pool=self._staging, **args)
        if rng_ranks is not None:
            body["rng_ranks"] = rng_ranks

        def job() -> Path:
            path = _commit(target, tensors, body)
            self._rotate()
            return path

        if blocking:
            job()
        else:
            self._writer.submit(job)
        barrier()
        return target

    def wait(self) -> Path | None:
        """Wait for a background save; return its path, raise its error."""
        return self._writer.wait()

    def close(self) -> None:
        """Wait for the save in flight (raising its error); free the staging buffers."""
        try:
            self._writer.wait()
        finally:
            self._staging.clear()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checkpoints(self) -> list[Path]:
        """Complete-looking checkpoint directories (a manifest present), oldest first."""
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and (p / MANIFEST).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def _candidates(self) -> list[Path]:
        ranked: list[tuple[int, int, Path]] = []
        for p in self.root.iterdir():
            for rank, pattern in ((1, _NAME), (0, _ASIDE)):
                match = pattern.match(p.name)
                if match:
                    ranked.append((int(match.group(1)), rank, p))
        return [p for _, _, p in sorted(ranked, reverse=True)]

    def latest(self, *, set_aside: bool = False) -> Path | None:
        """The newest checkpoint that ``load`` accepts, or None.

        Args:
            set_aside: rename each damaged ``step-*`` checkpoint newer than the
                returned one to ``damaged-step-*`` (warning once per checkpoint),
                so that training on from the returned one can save those steps
                again. False (the default) only reads, warning about what it skips.

        Returns:
            The checkpoint directory, or None when there is no good one.
        """
        self._writer.check()
        for path in self._candidates():
            try:
                ckpt = open_checkpoint(path)
                if self.verify:
                    verify_tensors(ckpt.tensors_path, ckpt.header, ckpt.expected_digests)
            except CheckpointError as exc:
                if set_aside and _NAME.match(path.name):
                    self._set_aside(path, str(exc))
                else:
                    warnings.warn(f"skipping checkpoint {path.name}: {exc}", stacklevel=2)
                continue
            return path
        return None

    def _set_aside(self, path: Path, reason: str) -> Path:
        """Rename a damaged checkpoint to a free ``damaged-<name>[-N]``; warn in one line."""
        aside = self.root / f"damaged-{path.name}"
        n = 1
        while aside.exists():
            n += 1
            aside = self.root / f"damaged-{path.name}-{n}"
        os.replace(path, aside)
        warnings.warn(f"checkpoint {path.name} is damaged ({reason}); moved it aside to {aside}",
                      stacklevel=3)
        return aside

    def _rotate(self) -> None:
        """Remove old checkpoints beyond ``keep_last`` and leftovers of crashed saves."""
        for p in self.root.iterdir():
            tmp = _TMP.match(p.name)
            if (tmp and int(tmp.group(1)) != os.getpid()) or p.name.startswith(".del-"):
                shutil.rmtree(p, ignore_errors=True)
            elif _ASIDE.match(p.name):
                remove_tree(p)
        if self.keep_last is not None:
            for old in self.checkpoints()[: -self.keep_last]:
                remove_tree(old)


def _save_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    allowed = {"model", "optimizer", "scheduler", "scaler", "rng", "extra"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise SpecError(f"save arguments: got {unknown}, expected some of {sorted(allowed)}")
    if "model" not in kwargs:
        raise SpecError("save arguments: model is required")
    return {"optimizer": None, "scheduler": None, "scaler": None, "rng": True, "extra": None,
            **kwargs}
