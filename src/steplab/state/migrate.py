"""Checkpoints across versions: a registered chain of format migrations.

Every checkpoint manifest carries its ``format`` tag. A migration turns a
manifest of one format into the next; :data:`MIGRATIONS` holds them by source
format, and :func:`migrate` follows the chain from whatever a checkpoint holds
to :data:`~steplab.state.manifest.FORMAT`, then rewrites the checkpoint
atomically (tensors unchanged, per-tensor checksums recomputed in the new
format's algorithm, manifest hash recomputed).

The chain today:

- ``steplab.checkpoint/1`` -> ``steplab.checkpoint/2``: format 1 stored a
  SHA-256 per tensor and no ``checksum`` field; format 2 names its algorithm
  (``"checksum": "crc32"``) and stores a CRC-32 per tensor.

A new format adds one function::

    @register_migration("steplab.checkpoint/2", "steplab.checkpoint/3")
    def _v2_to_v3(manifest: dict) -> dict: ...

>>> chain("steplab.checkpoint/1")
['steplab.checkpoint/1 -> steplab.checkpoint/2']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steplab.errors import CheckpointError
from steplab.state.checkpoint import _commit  # the one atomic writer of checkpoint directories
from steplab.state.manifest import CHECKSUM, FORMAT, open_checkpoint
from steplab.state.tensorfile import read_tensors

__all__ = ["MIGRATIONS", "Migration", "MigrationReport", "chain", "migrate", "register_migration"]

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Migration:
    """One link of the chain: ``apply`` turns a ``source`` manifest into a ``target`` one."""

    source: str
    target: str
    apply: Callable[[Manifest], Manifest]

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}"


#: source format -> the migration that upgrades it by one version
MIGRATIONS: dict[str, Migration] = {}


def register_migration(
    source: str, target: str
) -> Callable[[Callable[[Manifest], Manifest]], Callable[[Manifest], Manifest]]:
    """Register ``fn(manifest) -> manifest`` as the migration from ``source`` to ``target``.

    The function gets a copy of the manifest (without ``manifest_sha256``) and
    returns the upgraded one; its ``format`` is set to ``target`` afterwards.
    Per-tensor checksums are recomputed when the checkpoint is written.

    Raises:
        ValueError: ``source`` already has a migration.
    """
    def decorate(fn: Callable[[Manifest], Manifest]) -> Callable[[Manifest], Manifest]:
        if source in MIGRATIONS:
            raise ValueError(f"a migration from {source!r} is already registered")
        MIGRATIONS[source] = Migration(source, target, fn)
        return fn
    return decorate


@register_migration("steplab.checkpoint/1", "steplab.checkpoint/2")
def _sha256_to_named_checksum(manifest: Manifest) -> Manifest:
    """Format 2 names its per-tensor checksum algorithm (CRC-32); format 1 had SHA-256 only."""
    return {**manifest, "checksum": CHECKSUM}


def _steps(source: str) -> list[Migration]:
    steps, seen, current = [], {source}, source
    while current != FORMAT:
        step = MIGRATIONS.get(current)
        if step is None:
            raise CheckpointError(
                f"format: got {source!r}, expected {FORMAT!r} or a format with a migration to it "
                f"(known: {sorted(MIGRATIONS)})")
        if step.target in seen:
            raise CheckpointError(f"format: the migration chain from {source!r} loops")
        steps.append(step)
        seen.add(current := step.target)
    return steps


def chain(source: str) -> list[str]:
    """The migrations that take ``source`` to the current format, as ``"a -> b"`` strings.

    Raises:
        CheckpointError: no chain leads from ``source`` to the current format.
    """
    return [str(step) for step in _steps(source)]


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did: ``steps`` is empty when the checkpoint was already current."""

    source: Path
    target: Path
    from_format: str
    to_format: str
    steps: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"source": str(self.source), "target": str(self.target),
                "from_format": self.from_format, "to_format": self.to_format,
                "steps": list(self.steps)}


def migrate(path: str | os.PathLike[str],
            out: str | os.PathLike[str] | None = None) -> MigrationReport:
    """Upgrade a checkpoint to the current format, in place or into ``out``.

    Every tensor is verified against the old checksums before anything is
    written; the new checkpoint replaces the old one atomically.

    Args:
        path: a checkpoint directory of any format the chain knows.
        out: where to write the upgraded checkpoint; None: replace ``path``.

    Returns:
        A :class:`MigrationReport`. A current checkpoint without ``out`` is left untouched.

    Raises:
        CheckpointError: corrupt checkpoint, unknown format, or ``out`` is an
            existing path that is not a checkpoint.
    """
    ckpt = open_checkpoint(path)
    source_format = str(ckpt.manifest["format"])
    steps = _steps(source_format)
    target = Path(out) if out is not None else ckpt.path
    report = MigrationReport(ckpt.path, target, source_format, FORMAT,
                             tuple(str(s) for s in steps))
    if not steps and out is None:
        return report
    tensors = read_tensors(ckpt.tensors_path, ckpt.header, ckpt.expected_digests)
    body = {k: v for k, v in ckpt.manifest.items() if k not in ("manifest_sha256", "tensors")}
    for step in steps:
        body = step.apply(dict(body))
        body["format"] = step.target
    if target.exists() and target != ckpt.path and not (target / "manifest.json").is_file():
        raise CheckpointError(f"out: {target} exists and is not a checkpoint; refusing to replace")
    _commit(target, [(e.key, tensors[e.key]) for e in ckpt.header.entries], body)
    return report
