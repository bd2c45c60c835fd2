"""The checkpoint manifest: what a checkpoint directory holds, and its checks.

A checkpoint is a directory with two files:

- ``tensors.safetensors``: every tensor, keyed ``model/<name>``,
  ``optim/<name>/<buffer>``, ``lookahead/<name>/<buffer>``,
  ``scheduler/...``, ``scaler/...``;
- ``manifest.json``, written last: ``format``, ``step``, ``torch_version``,
  ``checksum`` (the algorithm, ``"crc32"``), ``tensors`` (``{key: {"dtype",
  "shape", <algorithm>: hex}}`` in file order),
  ``model`` (``{"class", "keys"}``), ``optimizer`` (the named state dict with
  tensors replaced by references), ``scheduler``, ``scaler``, ``rng``,
  ``extra`` and ``manifest_sha256``, a SHA-256 of the canonical JSON of all
  the other fields, so that an edited manifest is refused.

Format 2 (written now) names its per-tensor ``checksum`` algorithm; format 1
(read still) had no such field and stored ``sha256`` for every tensor.

:func:`open_checkpoint` reads nothing but JSON and the safetensors header:
any file that is not such a directory (a pickle, a ``torch.save`` zip) is
refused without being opened for unpickling.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steplab.errors import CheckpointError
from steplab.state.hashing import ALGORITHMS, Digests
from steplab.state.tensorfile import DTYPE_NAMES, Header, read_header

__all__ = [
    "CHECKSUM",
    "FORMAT",
    "MANIFEST",
    "TENSORS",
    "OpenCheckpoint",
    "checksum_algorithm",
    "manifest_digest",
    "open_checkpoint",
]

#: format tag written into every manifest
FORMAT = "steplab.checkpoint/2"
#: the checksum algorithm new checkpoints use
CHECKSUM = "crc32"
_FORMAT_1 = "steplab.checkpoint/1"  # per-tensor SHA-256, no "checksum" field
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
_MAX_MANIFEST = 256 * 1024 * 1024
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "step": int, "tensors": dict, "model": dict, "extra": dict,
}


@dataclass(frozen=True)
class OpenCheckpoint:
    """A checkpoint directory whose manifest and safetensors header passed every check."""

    path: Path
    manifest: dict[str, Any]
    header: Header

    @property
    def tensors_path(self) -> Path:
        """The ``tensors.safetensors`` file."""
        return self.path / TENSORS

    @property
    def algorithm(self) -> str:
        """The per-tensor checksum algorithm (``"sha256"`` for format 1)."""
        return checksum_algorithm(self.manifest)

    @property
    def expected_digests(self) -> Digests:
        """Checksum of each tensor, by key, with its algorithm."""
        algorithm = self.algorithm
        return Digests(algorithm, {k: v[algorithm] for k, v in self.manifest["tensors"].items()})


def checksum_algorithm(manifest: dict[str, Any]) -> str:
    """The checksum algorithm a (format-checked) manifest uses for its tensors."""
    if manifest.get("format") == _FORMAT_1:
        return "sha256"
    algorithm = manifest.get("checksum")
    if algorithm not in ALGORITHMS:
        raise CheckpointError(
            f"{MANIFEST} checksum: got {algorithm!r}, expected one of {list(ALGORITHMS)}")
    return str(algorithm)


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``manifest`` without ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _describe_file(path: Path) -> str:
    with open(path, "rb") as f:  # a sniff of the first bytes, never an unpickle
        head = f.read(4)
    if head[:1] == b"\x80":
        return "a pickle file"
    if head == b"PK\x03\x04":
        return "a zip archive (the torch.save format, which holds pickles)"
    return "a file"


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise CheckpointError(
            f"path: {path} has no {MANIFEST}; expected a complete steplab checkpoint directory"
        )
    if file.stat().st_size > _MAX_MANIFEST:
        raise CheckpointError(f"{MANIFEST}: larger than {_MAX_MANIFEST} bytes")
    try:
        manifest = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{MANIFEST}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{MANIFEST}: got {type(manifest).__name__}, expected an object")
    if manifest.get("format") not in (FORMAT, _FORMAT_1):
        raise CheckpointError(
            f"{MANIFEST} format: got {manifest.get('format')!r}, expected {FORMAT!r}"
            f" (or {_FORMAT_1!r})"
        )
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise CheckpointError(f"{MANIFEST}: content hash mismatch (edited or corrupt)")
    for key, kind in _REQUIRED.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise CheckpointError(f"{MANIFEST} {key}: got {manifest.get(key)!r}, expected {kind}")
    checksum_algorithm(manifest)
    return manifest


def _check_header_matches(manifest: dict[str, Any], header: Header) -> None:
    listed: dict[str, Any] = manifest["tensors"]
    algorithm = checksum_algorithm(manifest)
    stored = {e.key: e for e in header.entries}
    if set(listed) != set(stored):
        diff = sorted(set(listed) ^ set(stored))[:3]
        raise CheckpointError(f"{TENSORS}: tensors {diff} disagree with {MANIFEST}")
    for key, info in listed.items():
        entry = stored[key]
        if not isinstance(info, dict) or info.get("dtype") != DTYPE_NAMES[entry.dtype] or (
            info.get("shape") != list(entry.shape)
        ) or not isinstance(info.get(algorithm), str):
            raise CheckpointError(f"{TENSORS}: tensor {key!r} disagrees with {MANIFEST}")


def _moved_aside(p: Path) -> Path:
    """The previous checkpoint that a save over ``p`` moved aside before it was killed.

    Saving over an existing checkpoint renames the old one to ``.old-<name>-*``
    and then the new one into place; a crash between the two renames leaves
    only the old one. It is complete and verified like any other, so load it.
    """
    aside = sorted(
        (d for d in p.parent.glob(f".old-{p.name}-*") if d.is_dir()),
        key=lambda d: d.stat().st_mtime,
    )
    if not aside:
        raise CheckpointError(f"path: {p} does not exist; expected a checkpoint directory")
    warnings.warn(
        f"{p} is missing: a save over it was interrupted; loading the previous checkpoint "
        f"{aside[-1].name} that it had moved aside",
        stacklevel=3,
    )
    return aside[-1]


def open_checkpoint(path: str | os.PathLike[str]) -> OpenCheckpoint:
    """Open a checkpoint directory and check its manifest and safetensors header.

    Args:
        path: the checkpoint directory.

    Returns:
        An :class:`OpenCheckpoint` (no tensor data has been read).

    Raises:
        CheckpointError: if ``path`` is missing, a file (a pickle or
            ``torch.save`` file included: refused unread), lacks a valid
            manifest, has the wrong format version, an edited manifest, or a
            safetensors header that disagrees with the manifest or the file size.
    """
    p = Path(path)
    if not p.exists():
        p = _moved_aside(p)
    if not p.is_dir():
        raise CheckpointError(
            f"path: {p} is {_describe_file(p)}, not a steplab checkpoint directory; "
            "steplab never unpickles checkpoints"
        )
    manifest = _read_manifest(p)
    header = read_header(p / TENSORS)
    _check_header_matches(manifest, header)
    return OpenCheckpoint(p, manifest, header)
