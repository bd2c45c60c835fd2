"""NumPy oracles for block-wise quantisation and the lean optimizers' updates.

Written from the definitions, not from the fast code: the map is built from
the dynamic-tree description, the nearest value is found by brute force
(``argmin`` over every magnitude), and a lean update is the float64 reference
rule applied to the decoded moments, followed by re-encoding them.

>>> mags, signed = magnitudes("exp_avg", 8)
>>> len(mags), signed
(128, True)
>>> codes, absmax = quantize(np.array([0.0, -0.5, 2.0], dtype=np.float32), "exp_avg", 8)
>>> dequantize(codes, absmax, "exp_avg", 8).tolist()
[0.0, -0.5093749761581421, 2.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from steplab.optim.reference import Array, ReferenceRule

__all__ = ["LeanReference", "bf16_round", "dequantize", "magnitudes", "quantize"]

_BLOCK = {8: 256, 4: 128}
_SMALL = 4096
_SECOND = ("exp_avg_sq", "max_exp_avg_sq")


def magnitudes(name: str, bits: int) -> tuple[NDArray[np.float32], bool]:
    """The sorted non-negative values of the map for buffer ``name``, and whether it is signed.

    Dynamic tree map (Dettmers 2016/2021): after the sign bit, the number of
    leading zero bits e picks the decade 10^-e, a 1 bit follows, and the
    remaining n-1-e bits split [0.1, 1]·10^-e linearly; all-zero bits are 0.
    Second moments in 4 bits use 0 and (2j-1)/29, j = 1..15.
    """
    if name in _SECOND and bits == 4:
        return np.array([0.0] + [(2 * j - 1) / 29 for j in range(1, 16)], dtype=np.float32), False
    signed = name not in _SECOND
    n = bits - 1 if signed else bits
    values = [0.0]
    for e in range(n):
        fraction_bits = n - 1 - e
        for j in range(1, 2**fraction_bits + 1):
            values.append(10.0**-e * (0.1 + 0.9 * j / 2**fraction_bits))
    return np.array(sorted(values), dtype=np.float32), signed


def quantize(x: Array, name: str, bits: int) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """One code per element (unpacked) and one float32 absmax per block.

    ``y = x / absmax`` in float32 (NaN in an all-zero block). ``y`` is truncated (toward
    zero) to 11 significant bits, which names the interval of reals sharing
    them, ``[t, t')``; the code is the magnitude nearest the interval's
    middle (brute force, ties to the smaller), with the sign of ``y`` in the
    top bit for signed maps, and code 0 for NaN. For second moments a positive
    ``t`` takes at least code 1 (only an exact zero, or ``y`` under 2^-136,
    gets code 0: the zero-point problem).
    """
    mags, signed = magnitudes(name, bits)
    block = _BLOCK[bits]
    flat = np.asarray(x, dtype=np.float32).ravel()
    padded = np.concatenate([flat, np.zeros(-flat.size % block, dtype=np.float32)])
    blocks = padded.reshape(-1, block)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        y = (blocks / absmax[:, None]).astype(np.float32).ravel()
    pattern = np.abs(y).view(np.uint32)
    drop = np.uint32(2**13 - 1)
    low = (pattern & ~drop).view(np.float32).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        high = ((pattern | drop).astype(np.uint64) + 1).astype(np.uint32).view(np.float32)
    middle = np.minimum((low + high.astype(np.float64)) / 2, 2.0)
    middle = np.nan_to_num(middle, nan=0.0)
    codes = np.concatenate([np.abs(middle[i: i + 4096, None] - mags.astype(np.float64))
                            .argmin(axis=1) for i in range(0, middle.size, 4096)])
    if name in _SECOND:
        codes = np.where(low > 0, np.maximum(codes, 1), codes)
    if signed:
        codes = codes | (np.signbit(y) & ~np.isnan(y)).astype(np.int64) << (bits - 1)
    codes = np.where(np.isnan(y), 0, codes)
    return codes[: flat.size].astype(np.uint8), absmax


def dequantize(codes: NDArray[np.uint8], absmax: NDArray[np.float32], name: str,
               bits: int) -> NDArray[np.float32]:
    """Invert :func:`quantize` up to its error: float32 values, one per code."""
    mags, signed = magnitudes(name, bits)
    block = _BLOCK[bits]
    codes = np.asarray(codes).astype(np.int64)
    mask = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    values = mags[codes & mask]
    if signed:
        values = np.where(codes >> (bits - 1) == 1, -values, values)
    scale = np.repeat(absmax, block)[: codes.size]
    out: NDArray[np.float32] = (values * scale).astype(np.float32)
    return out


def bf16_round(x: Array) -> NDArray[np.float32]:
    """Round float32 values to bfloat16 (nearest, ties to even), returned as float32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    out: NDArray[np.float32] = rounded.astype(np.uint32).view(np.float32)
    return out


class LeanReference(ReferenceRule):
    """A reference rule whose moments are stored as ``state=`` keeps them.

    Before each step the stored moments are decoded into the inner rule's
    state; after it they are re-encoded (bf16 rounding, or block-wise codes
    for tensors of at least ``min_size`` elements, 4,096 by default).
    ``self.state`` holds the stored form under the lean optimizer's keys
    (``exp_avg_codes``, unpacked, and ``exp_avg_absmax``; or ``exp_avg`` as
    float32 values of bf16 numbers).
    """

    def __init__(self, inner: ReferenceRule, state: str, min_size: int = _SMALL) -> None:
        super().__init__()
        self.inner, self.kind, self.min_size = inner, state, min_size

    def _form(self, size: int) -> str:
        small = size < max(self.min_size, 2)
        return "fp32" if self.kind in ("int8", "int4") and small else self.kind

    def _encode(self, name: str, value: Array) -> None:
        form = self._form(value.size)
        if form == "fp32":
            self.state[name] = value.astype(np.float32)
        elif form == "bf16":
            self.state[name] = bf16_round(value)
        else:
            bits = 8 if form == "int8" else 4
            codes, absmax = quantize(value, name, bits)
            self.state[name + "_codes"], self.state[name + "_absmax"] = codes, absmax

    def _decode(self, name: str, size: int) -> Array | None:
        form = self._form(size)
        if form in ("fp32", "bf16"):
            stored: Any = self.state.get(name)
            return None if stored is None else stored.astype(np.float64)
        if name + "_codes" not in self.state:
            return None
        bits = 8 if form == "int8" else 4
        return dequantize(self.state[name + "_codes"], self.state[name + "_absmax"], name,
                          bits).astype(np.float64)

    def step(self, theta: Array, grad: Array) -> Array:
        """Decode the moments, take the inner rule's step, re-encode them."""
        names = [k for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")]
        for name in names:
            value = self._decode(name, theta.size)
            if value is not None:
                self.inner.state[name] = value.reshape(theta.shape)
        new = self.inner.step(theta, grad)
        for name in names:
            if name in self.inner.state:
                self._encode(name, np.asarray(self.inner.state[name]).ravel())
        if "step" in self.inner.state:
            self.state["step"] = self.inner.state["step"]
        return new

    def reset(self) -> None:
        """Forget all state."""
        super().reset()
        self.inner.reset()
