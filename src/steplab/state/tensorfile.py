"""Stream tensors to and from a ``.safetensors`` file, hashing as they pass.

The safetensors format is an 8-byte little-endian header length, a JSON
header (``{key: {"dtype", "shape", "data_offsets": [begin, end]}}``, plus an
optional ``"__metadata__"`` of strings), then the raw tensor bytes back to
back. Writing the header and then each tensor's bytes straight from its
memory, in chunks, keeps the extra memory of a save at zero for contiguous
CPU tensors, and lets worker threads checksum (CRC-32 by default, see
:mod:`steplab.state.hashing`) chunk ``i`` while chunk ``i + 1`` is written.
Files written here open with ``safetensors.safe_open``.

Reading validates the header completely (dtypes, shapes, contiguous
offsets, file size) before reading any tensor, then reads each tensor's
bytes straight into a fresh tensor, checksumming each chunk on a worker
thread while the next is read. An existing tensor (a model's parameter) is
read into directly only without verification; with it, it is filled only
after every checksum matched. No pickle is involved.

>>> import tempfile, os, torch
>>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
>>> items = [("a", torch.arange(4.0)), ("b", torch.ones(2, dtype=torch.int64))]
>>> hashes = write_tensors(path, items)
>>> header = read_header(path)
>>> tensors = read_tensors(path, header, expected_digests=hashes)
>>> tensors["a"].tolist(), tensors["b"].dtype
([0.0, 1.0, 2.0, 3.0], torch.int64)
"""

from __future__ import annotations

import json
import math
import mmap
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from steplab.errors import CheckpointError
from steplab.state.hashing import ALGORITHMS, CHUNK_BYTES, Digests, StreamDigests, tensor_bytes

__all__ = [
    "DTYPE_NAMES",
    "Header",
    "TensorEntry",
    "read_header",
    "read_tensors",
    "verify_tensors",
    "write_tensors",
]

#: torch dtype -> safetensors dtype name
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2", torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
    torch.complex64: "C64",
}
_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors limit
_METADATA = "__metadata__"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in a safetensors header: dtype, shape and byte range in the data section."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A validated safetensors header.

    Attributes:
        entries: tensors in file order.
        metadata: the ``__metadata__`` strings.
        data_start: byte offset of the data section in the file.
    """

    entries: tuple[TensorEntry, ...]
    metadata: dict[str, str]
    data_start: int

    def entry(self, key: str) -> TensorEntry:
        """The entry for ``key``; ``CheckpointError`` if absent."""
        for e in self.entries:
            if e.key == key:
                return e
        raise CheckpointError(f"tensors.safetensors: no tensor {key!r}")


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        written = os.write(fd, view)
        view = view[written:]


def _encode_header(
    tensors: Sequence[tuple[str, torch.Tensor]], metadata: Mapping[str, str]
) -> bytes:
    header: dict[str, Any] = {_METADATA: dict(metadata)} if metadata else {}
    offset = 0
    for key, t in tensors:
        if t.dtype not in DTYPE_NAMES:
            raise CheckpointError(f"tensor {key!r}: dtype {t.dtype} cannot be stored")
        size = t.numel() * t.element_size()
        header[key] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes, as safetensors does
    return len(raw).to_bytes(8, "little") + raw


def write_tensors(
    path: str | os.PathLike[str],
    tensors: Sequence[tuple[str, torch.Tensor]],
    metadata: Mapping[str, str] | None = None,
    algorithm: str = "crc32",
) -> Digests:
    """Write tensors to a new safetensors file and fsync it, checksumming as they pass.

    The bytes go out in chunks of :data:`CHUNK_BYTES` straight from the
    tensors' memory (no copy for contiguous CPU tensors); each chunk is
    checksummed on a worker thread while this one writes it and the next.
    Tensors on another device are copied to the CPU one at a time.

    Args:
        path: file to create (overwritten if present).
        tensors: ``(key, tensor)`` pairs in the order to store them; keys unique.
        metadata: strings for the header's ``__metadata__``.
        algorithm: checksum, one of :data:`ALGORITHMS`.

    Returns:
        The checksum (hex) of each tensor's bytes, by key.

    Raises:
        CheckpointError: for a dtype safetensors cannot hold or an unknown algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise CheckpointError(f"algorithm: got {algorithm!r}, expected one of {ALGORITHMS}")
    header = _encode_header(tensors, metadata or {})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, memoryview(header))
        with ThreadPoolExecutor(max_workers=2) as pool:  # zlib/hashlib release the GIL
            stream = StreamDigests(algorithm, pool)
            for key, t in tensors:
                view = tensor_bytes(t.detach().cpu())
                for start in range(0, len(view), CHUNK_BYTES):
                    chunk = view[start:start + CHUNK_BYTES]
                    stream.add(key, chunk)
                    _write_all(fd, chunk)
                stream.finish(key)
            digests = stream.results()
        os.fsync(fd)
    finally:
        os.close(fd)
    return Digests(algorithm, {key: digests[key] for key, _ in tensors})


def _bad(message: str) -> CheckpointError:
    return CheckpointError(f"tensors.safetensors: {message}")


def _parse_entry(key: str, value: Any) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise _bad(f"header entry {key!r}: expected keys dtype, shape, data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in _DTYPES:
        raise _bad(f"{key}.dtype: got {dtype!r}, expected one of {sorted(_DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _bad(f"{key}.shape: got {shape!r}, expected a list of integers >= 0")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise _bad(f"{key}.data_offsets: got {offsets!r}, expected [begin, end], begin <= end")
    size = math.prod(shape) * torch.empty((), dtype=_DTYPES[dtype]).element_size()
    if offsets[1] - offsets[0] != size:
        raise _bad(f"{key}.data_offsets: span {offsets[1] - offsets[0]} bytes, shape needs {size}")
    return TensorEntry(key, _DTYPES[dtype], tuple(shape), offsets[0], offsets[1])


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and fully validate a safetensors header (no tensor data is read).

    Raises:
        CheckpointError: if the file is missing, truncated, or its header is
            malformed or disagrees with the file's size.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _bad(f"file is {size} bytes, shorter than the 8-byte header length")
            length = int.from_bytes(prefix, "little")
            if length > min(_MAX_HEADER, size - 8):
                raise _bad(f"header length {length} exceeds the file ({size} bytes) or 100 MB")
            raw = f.read(length)
    except OSError as exc:
        raise _bad(f"cannot read ({exc.strerror})") from None
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"header is not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise _bad(f"header: got {type(parsed).__name__}, expected a JSON object")
    metadata = parsed.pop(_METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _bad("__metadata__: expected an object of strings")
    entries = sorted(
        (_parse_entry(k, v) for k, v in parsed.items()), key=lambda e: (e.begin, e.end)
    )
    position = 0
    for e in entries:
        if e.begin != position:
            raise _bad(f"{e.key}.data_offsets: begins at {e.begin}, expected {position} (no gaps)")
        position = e.end
    if 8 + length + position != size:
        raise _bad(f"file is {size} bytes, header describes {8 + length + position} (truncated?)")
    return Header(tuple(entries), metadata, 8 + length)


def _read_into(f: Any, view: memoryview) -> None:
    while len(view):
        n = f.readinto(view)
        if not n:
            raise _bad("file ended early (truncated)")
        view = view[n:]


def _algorithm_of(expected: Mapping[str, str]) -> str:
    """The algorithm of :class:`Digests`; SHA-256 for a plain mapping (format 1)."""
    algorithm = getattr(expected, "algorithm", "sha256")
    if algorithm not in ALGORITHMS:
        raise _bad(f"checksum: got {algorithm!r}, expected one of {ALGORITHMS}")
    return str(algorithm)


def _check_digests(header: Header, expected: Mapping[str, str], got: Digests) -> None:
    for e in header.entries:
        if got.get(e.key) != expected.get(e.key):
            raise _bad(f"{e.key}: content hash mismatch (corrupt file), "
                       f"expected {got.algorithm} {expected.get(e.key)}")


def verify_tensors(
    path: str | os.PathLike[str], header: Header, expected_digests: Mapping[str, str]
) -> None:
    """Check every tensor's checksum, reading the file through a memory map (no copies).

    Args:
        path: the file ``header`` was read from.
        header: from :func:`read_header`.
        expected_digests: checksums by key: :class:`Digests` (whose
            ``algorithm`` is used) or a plain mapping of SHA-256 hex digests.

    Raises:
        CheckpointError: on the first tensor whose bytes do not check as expected.
    """
    if not header.entries:
        return
    algorithm = _algorithm_of(expected_digests)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        got = _digest_mapped(mapped, header, algorithm)  # drops its views before the unmap
    _check_digests(header, expected_digests, got)


def _digest_mapped(mapped: mmap.mmap, header: Header, algorithm: str) -> Digests:
    with memoryview(mapped) as whole, ThreadPoolExecutor(max_workers=2) as pool:
        stream = StreamDigests(algorithm, pool)
        chunks: list[memoryview] = []
        for e in header.entries:
            begin, end = header.data_start + e.begin, header.data_start + e.end
            for start in range(begin, end, CHUNK_BYTES):
                chunks.append(whole[start:min(start + CHUNK_BYTES, end)])
                stream.add(e.key, chunks[-1])
            stream.finish(e.key)
        digests = stream.results()
        for chunk in chunks:
            chunk.release()
    return digests


def _fits(dest: torch.Tensor | None, entry: TensorEntry) -> bool:
    return (dest is not None and dest.device.type == "cpu" and dest.dtype == entry.dtype
            and tuple(dest.shape) == entry.shape and dest.is_contiguous())


def read_tensors(
    path: str | os.PathLike[str],
    header: Header,
    expected_digests: Mapping[str, str] | None = None,
    into: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Read every tensor of a validated file, verifying checksums while reading when given.

    Each tensor's bytes are read in chunks straight into its memory; each
    chunk is checksummed on a worker thread while the next one is read.

    Args:
        path: the file ``header`` was read from.
        header: from :func:`read_header`.
        expected_digests: checksums by key (:class:`Digests`, or a plain
            mapping of SHA-256 hex digests). When given, nothing in ``into``
            is written until every tensor has checked: those tensors are read
            into fresh memory first and copied in at the end.
        into: existing CPU contiguous tensors of the same dtype and shape to
            fill (e.g. a model's parameters), by key; other keys get fresh tensors.

    Returns:
        Tensors by key, in file order (``into``'s own tensors where used).

    Raises:
        CheckpointError: on a short read or a checksum mismatch.
    """
    verify = expected_digests is not None
    algorithm = _algorithm_of(expected_digests) if expected_digests is not None else "crc32"
    out: dict[str, torch.Tensor] = {}
    with (open(path, "rb", buffering=0) as f, torch.no_grad(),
          ThreadPoolExecutor(max_workers=2) as pool):
        stream = StreamDigests(algorithm, pool)
        f.seek(header.data_start)
        for e in header.entries:
            dest = None if into is None else into.get(e.key)
            tensor = dest if dest is not None and _fits(dest, e) and not verify else (
                torch.empty(e.shape, dtype=e.dtype))
            view = tensor_bytes(tensor) if tensor.numel() else memoryview(b"")
            for start in range(0, len(view), CHUNK_BYTES):
                chunk = view[start:start + CHUNK_BYTES]
                _read_into(f, chunk)
                if verify:
                    stream.add(e.key, chunk)
            stream.finish(e.key)
            out[e.key] = tensor
        got = stream.results()
    if expected_digests is not None:
        _check_digests(header, expected_digests, got)
        _fill(out, header, into or {})
    return out


def _fill(out: dict[str, torch.Tensor], header: Header, into: Mapping[str, torch.Tensor]) -> None:
    """Copy verified tensors into the matching ``into`` tensors, which then replace them."""
    with torch.no_grad():
        for e in header.entries:
            dest = into.get(e.key)
            if dest is not None and dest is not out[e.key] and _fits(dest, e):
                dest.copy_(out[e.key])
                out[e.key] = dest
