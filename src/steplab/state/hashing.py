"""Content checksums of tensors and of a model's parameters.

A checksum covers the raw bytes only (native byte order, C-contiguous), so two
tensors check equal exactly when they are bit-identical with the same dtype
and element count.

Checkpoints (format 2) store a CRC-32 (zlib's, the one in gzip and PNG) of
each tensor: it catches every error burst up to 32 bits long (so every
flipped byte) and random damage with probability 1 - 2**-32, and zlib
computes it at about 2 GB/s per core here, more than twice as fast as
SHA-256. :class:`StreamDigests` computes it in chunks on a thread pool (zlib
and hashlib release the GIL on large inputs) while the caller writes or
reads the next chunk, and joins the chunks' CRCs with :func:`crc32_combine`,
so the result equals ``zlib.crc32`` of the whole tensor whatever the chunk
size. Format 1 checkpoints stored SHA-256, which stays supported. Neither
guards against a deliberate edit of both data and manifest: the manifest's
own SHA-256 is not keyed.

>>> import torch
>>> tensor_sha256(torch.zeros(2)) == tensor_sha256(torch.zeros(2))
True
>>> import zlib
>>> crc32_combine(zlib.crc32(b"ab"), zlib.crc32(b"cde"), 3) == zlib.crc32(b"abcde")
True
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ALGORITHMS",
    "CHUNK_BYTES",
    "Digests",
    "StreamDigests",
    "crc32_combine",
    "digest_bytes",
    "params_sha256",
    "tensor_bytes",
    "tensor_sha256",
]

#: checksum algorithms a checkpoint may name
ALGORITHMS = ("crc32", "sha256")
#: bytes per chunk hashed on a worker thread while the next one is written or read
CHUNK_BYTES = 8 * 1024 * 1024
_CRC_POLY = 0xEDB88320  # CRC-32 (IEEE 802.3), bit-reflected


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """Return a byte view of a CPU tensor (a copy only if not contiguous).

    Args:
        tensor: any CPU tensor, of any dtype (bfloat16 and float8 included).

    Returns:
        A ``memoryview`` of the tensor's bytes in C order (writable when the
        tensor is contiguous: reads land straight in its memory).

    Example:
        >>> len(tensor_bytes(torch.ones(3, dtype=torch.bfloat16)))
        6
    """
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    array: np.ndarray[Any, np.dtype[np.uint8]] = flat.view(torch.uint8).numpy()
    return memoryview(array.data)


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's bytes; the tensor is moved to the CPU if needed."""
    return hashlib.sha256(tensor_bytes(tensor.detach().cpu())).hexdigest()


def params_sha256(model: nn.Module) -> str:
    """SHA-256 over the parameters' bytes, in ``named_parameters()`` order.

    Every parameter is made contiguous and moved to the CPU first, so the hash
    depends only on the values, dtypes and order. Resume tests and the training
    loop's ``final_params_sha256`` use it.

    Args:
        model: the module whose parameters to hash.

    Returns:
        64 hex digits.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> params_sha256(m) == params_sha256(m)
        True
    """
    digest = hashlib.sha256()
    for _, param in model.named_parameters():
        value = param.detach()
        if hasattr(value, "full_tensor"):  # an FSDP2 DTensor: gathered (a collective)
            value = value.full_tensor()
        digest.update(tensor_bytes(value.cpu()))
    return digest.hexdigest()


def _mult_mod_p(a: int, b: int) -> int:
    """Product of two polynomials modulo the CRC-32 polynomial (reflected bit order)."""
    product, mask = 0, 1 << 31
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


@functools.lru_cache(maxsize=64)
def _x_pow_8n(n: int) -> int:
    """x**(8 n) modulo the CRC-32 polynomial: the operator that appends n zero bytes."""
    result, power = 1 << 31, 1 << 23  # 1 and x**8, reflected
    while n:
        if n & 1:
            result = _mult_mod_p(power, result)
        power = _mult_mod_p(power, power)
        n >>= 1
    return result


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (as zlib's).

    CRC-32 is affine over GF(2): appending ``len2`` bytes multiplies the
    register by ``x**(8 len2)`` modulo the polynomial, so
    ``crc(A+B) = crc(A) * x**(8 len2) xor crc(B)`` (the init and final xors
    cancel). Cost: O(log len2) polynomial products.

    Args:
        crc1: CRC-32 of the first part.
        crc2: CRC-32 of the second part.
        len2: length of the second part in bytes.

    Returns:
        The CRC-32 of the concatenation.

    Example:
        >>> crc32_combine(zlib.crc32(b""), zlib.crc32(b"x"), 1) == zlib.crc32(b"x")
        True
    """
    return _mult_mod_p(_x_pow_8n(len2), crc1) ^ crc2


def _crc32_hex(view: memoryview) -> str:
    return format(zlib.crc32(view), "08x")


def digest_bytes(view: memoryview, algorithm: str) -> str:
    """Hex checksum of ``view`` by ``algorithm`` (one of :data:`ALGORITHMS`).

    Example:
        >>> digest_bytes(memoryview(b"abc"), "crc32")
        '352441c2'
    """
    if algorithm == "crc32":
        return _crc32_hex(view)
    return hashlib.new(algorithm, view).hexdigest()


class Digests(dict[str, str]):
    """Hex checksums by tensor key, with the algorithm that produced them.

    Example:
        >>> Digests("crc32", {"a": "00000000"}).algorithm
        'crc32'
    """

    def __init__(self, algorithm: str, items: dict[str, str] | None = None) -> None:
        super().__init__(items or {})
        self.algorithm = algorithm


class StreamDigests:
    """Checksums of tensors fed chunk by chunk, computed on a pool while the caller does I/O.

    CRC-32 chunks are hashed independently (in parallel) and combined; SHA-256
    cannot be split, so a key's chunks are hashed in order, one task per key,
    when :meth:`finish` is called for it.

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> with ThreadPoolExecutor(2) as pool:
        ...     stream = StreamDigests("crc32", pool)
        ...     stream.add("k", memoryview(b"ab")); stream.add("k", memoryview(b"cde"))
        ...     stream.finish("k")
        ...     stream.results()["k"] == format(zlib.crc32(b"abcde"), "08x")
        True
    """

    def __init__(self, algorithm: str, pool: Executor) -> None:
        self.algorithm = algorithm
        self._pool = pool
        self._crc_parts: dict[str, list[tuple[Future[int], int]]] = {}
        self._views: dict[str, list[memoryview]] = {}
        self._done: dict[str, Future[str]] = {}

    def add(self, key: str, chunk: memoryview) -> None:
        """Feed the next chunk of ``key``'s bytes (kept referenced until :meth:`results`)."""
        if self.algorithm == "crc32":
            task: Callable[[memoryview], int] = zlib.crc32
            self._crc_parts.setdefault(key, []).append((self._pool.submit(task, chunk), len(chunk)))
        else:
            self._views.setdefault(key, []).append(chunk)

    def finish(self, key: str) -> None:
        """Mark ``key`` complete (a key with no chunks is the empty string's checksum)."""
        if self.algorithm == "crc32":
            self._crc_parts.setdefault(key, [])
        else:
            views = self._views.pop(key, [])
            self._done[key] = self._pool.submit(self._hash_in_order, views)

    def _hash_in_order(self, views: list[memoryview]) -> str:
        digest = hashlib.new(self.algorithm)
        for view in views:
            digest.update(view)
        return digest.hexdigest()

    def results(self) -> Digests:
        """Wait for every chunk and return the checksum of each finished key."""
        out = Digests(self.algorithm)
        for key, parts in self._crc_parts.items():
            crc = 0
            for future, length in parts:
                crc = crc32_combine(crc, future.result(), length)
            out[key] = format(crc, "08x")
        out.update({key: future.result() for key, future in self._done.items()})
        self._crc_parts, self._done = {}, {}
        return out
