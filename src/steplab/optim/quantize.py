"""Block-wise quantisation of optimizer state (Dettmers et al. 2021, arXiv:2110.02861).

A tensor is cut into blocks of ``block`` consecutive elements (256 for 8-bit,
128 for 4-bit codes). Each block keeps its absolute maximum ``a`` as a float32
scale and each element the index of the nearest value in a sorted
quantisation map ``Q`` of numbers in ``[-1, 1]``::

    code(x) = argmin_i |x / a - Q[i]|      (ties to the lower index)
    x̃      = Q[code(x)] · a

Dynamic map: the paper's "dynamic tree" map gives every decade of magnitude
its own run of linearly spaced values, so small moments keep relative
precision that a linear map would round to zero. A code is a sign bit (signed
maps only) and ``n`` magnitude bits; decade ``e = 0 .. n-1`` holds the
``2^(n-1-e)`` magnitudes ``10^-e · (0.1 + 0.9 j / 2^(n-1-e))``,
``j = 1 .. 2^(n-1-e)``, and the all-zero magnitude is 0: 128 magnitudes for
signed 8-bit, 256 for unsigned 8-bit, 8 for signed 4-bit. They lie on a grid
whose widest gap is ``0.9 / 2^(n-1)`` (top decade), so an element's error is at
most half of that times its block's absmax: 0.70 % (signed 8-bit), 0.35 %
(unsigned 8-bit), 11.25 % (signed 4-bit). Zero is in every dynamic map, so
zero quantises to exactly zero.

The unsigned 4-bit map (second moments in 4 bits) is linear without zero,
``(1 .. 16) / 16`` (error <= 6.25 % of the absmax, reached at zero): with a
dynamic 4-bit map every second moment below the smallest code rounds to zero
and the Adam step ``m / (√0 + ε)`` explodes (the zero-point problem, Li, Chen,
Zhu 2023, arXiv:2309.01507). A block of zeros still decodes to zeros (its
absmax is 0).

Encoding is vectorised without a search: a float's top bits (sign dropped)
index a small table giving the candidate magnitude, and one comparison with
the midpoint above it picks the nearest (ties to the smaller magnitude); see
:func:`_bucket_lut`. Decoding is one table gather and a multiply.

Tensors with fewer than :data:`MIN_QUANTIZED_NUMEL` elements are not
quantised (as in bitsandbytes and torchao): their scales would cost more
than the codes save.

4-bit codes are packed two to a byte, element ``2i`` in the high nibble.

>>> qmap = QuantMap.dynamic(signed=True, bits=8)
>>> len(qmap.magnitudes), float(qmap.table[255]), float(qmap.table[127]), qmap.block
(128, -1.0, 1.0, 256)
>>> x = torch.tensor([0.0, 0.5, -2.0, 1e-3])
>>> codes, absmax = quantize_blockwise(x, qmap)
>>> [round(v, 5) for v in dequantize_blockwise(codes, absmax, qmap, x.numel()).tolist()]
[0.0, 0.50937, -2.0, 0.0011]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BLOCK_SIZES",
    "MIN_QUANTIZED_NUMEL",
    "QuantMap",
    "Scratch",
    "absmax_of",
    "decode_blocks",
    "dequantize_blockwise",
    "encode_blocks",
    "quantize_blockwise",
]

#: elements per absmax block, by code width
BLOCK_SIZES: dict[int, int] = {8: 256, 4: 128}
#: tensors smaller than this keep float32 state
MIN_QUANTIZED_NUMEL = 4096


def _dynamic_magnitudes(n: int) -> list[float]:
    """Zero and the dynamic map's ``2^n - 1`` positive values for ``n`` magnitude bits."""
    magnitudes = [0.0]
    for e in range(n):
        count = 2 ** (n - 1 - e)
        magnitudes += [10.0**-e * (0.1 + 0.9 * j / count) for j in range(1, count + 1)]
    return sorted(magnitudes)


def _f32_bits(x: float) -> int:
    return int(torch.tensor([x], dtype=torch.float32).view(torch.int32).item())


def _bucket_lut(mags: Tensor, signed: bool, bits: int) -> tuple[Tensor, int]:
    """A lookup table from a float's top bits to the code of its candidate magnitude.

    A float32 ``y`` is cut to ``key = (bits(y) >> shift) & (2^(32-shift) - 1)``:
    its sign bit, exponent and leading mantissa bits. Every ``|y|`` with a
    given key lies in ``[lo, hi)``; the table gives the code of magnitude
    ``cand`` = the number of midpoints below ``lo`` (with the sign bit for
    negative keys of a signed map), and with at most one midpoint in any bucket
    the nearest magnitude is ``cand + (|y| > mid[cand])``. ``shift`` is the
    largest for which that holds. Keys of NaN and infinity (0/0 in an all-zero
    block) give magnitude 0; other keys past 1.0 cannot occur.

    Returns:
        ``(lut int32, shift)``.
    """
    mid = ((mags[1:].double() + mags[:-1].double()) / 2).float()
    one = _f32_bits(1.0)
    for mantissa_bits in range(6, 16):
        shift = 23 - mantissa_bits
        keys = torch.arange(0, (one >> shift) + 2, dtype=torch.int32)
        edges = (keys << shift).view(torch.float32)  # lo of each bucket (and the last hi)
        below = torch.searchsorted(mid, edges, right=False)  # midpoints strictly below lo
        if bool(((below[1:] - below[:-1]) <= 1).all()):
            half = torch.full((1 << (31 - shift),), len(mags) - 1, dtype=torch.int32)
            half[: keys.numel() - 1] = below[:-1].to(torch.int32)
            nan = _f32_bits(float("inf")) >> shift
            half[nan:] = 0
            negative = half | (1 << (bits - 1)) if signed else half.clone()
            negative[nan:] = 0  # x86 gives 0/0 the sign bit: still code 0, +0
            return torch.cat([half, negative]), shift
    raise ValueError("quantisation map: midpoints too close for a 15-bit mantissa lookup")


@dataclass(frozen=True, eq=False)
class QuantMap:
    """A quantisation map and the tables that encode and decode with it.

    A code is ``sign bit | magnitude index`` (the sign bit only in signed maps),
    as the dynamic tree layout writes it; ``table[code]`` is its value.

    Attributes:
        magnitudes: the map's non-negative values, sorted, float32.
        table: value of every code (``2**bits`` entries), float32.
        bits: code width (8 or 4).
        signed: whether codes carry a sign bit.
        block: elements per absmax block.
        max_error: the largest quantisation error as a fraction of the block absmax.
        lut: key -> code of the candidate magnitude (see :func:`_bucket_lut`).
        midpoints: by code, the midpoint above the code's magnitude (``+inf``
            for the top one), float32.
        shift: float32 bits dropped to form a key.
    """

    magnitudes: Tensor
    table: Tensor
    bits: int
    signed: bool
    block: int
    max_error: float
    lut: Tensor
    midpoints: Tensor
    shift: int

    @classmethod
    def from_magnitudes(cls, magnitudes: list[float], bits: int, signed: bool) -> QuantMap:
        """Build a map from its sorted magnitudes in ``[0, 1]``.

        Raises:
            ValueError: for an unsupported width, unsorted magnitudes, magnitudes
                outside [0, 1] or more than the codes can index.
        """
        if bits not in BLOCK_SIZES:
            raise ValueError(f"bits: got {bits}, expected one of {sorted(BLOCK_SIZES)}")
        m = torch.tensor(magnitudes, dtype=torch.float64)
        room = 2 ** (bits - 1 if signed else bits)
        if len(magnitudes) != room or not bool((m[1:] > m[:-1]).all()) or m[0] < 0 or m[-1] > 1:
            raise ValueError(f"magnitudes: expected {room} increasing numbers in [0, 1]")
        mags = m.float()
        table = torch.cat([mags, -mags]) if signed else mags.clone()
        lut, shift = _bucket_lut(mags, signed, bits)
        mid = torch.cat([((m[1:] + m[:-1]) / 2).float(), torch.tensor([float("inf")])])
        error = max(float((m[1:] - m[:-1]).max()) / 2, float(m[0]))
        midpoints = torch.cat([mid, mid]) if signed else mid
        return cls(mags, table, bits, signed, BLOCK_SIZES[bits], error, lut, midpoints, shift)

    @classmethod
    def dynamic(cls, signed: bool, bits: int) -> QuantMap:
        """The dynamic tree map of the module docstring.

        >>> qmap = QuantMap.dynamic(signed=False, bits=8)
        >>> len(qmap.table), float(qmap.table[0]), float(qmap.table[-1])
        (256, 0.0, 1.0)
        """
        return cls.from_magnitudes(_dynamic_magnitudes(bits - 1 if signed else bits), bits, signed)

    @classmethod
    def linear_positive(cls, bits: int) -> QuantMap:
        """``(1 .. 2^bits) / 2^bits``: the zero-free map for 4-bit second moments.

        >>> QuantMap.linear_positive(4).table[:2].tolist()
        [0.0625, 0.125]
        """
        count = 2**bits
        return cls.from_magnitudes([j / count for j in range(1, count + 1)], bits, signed=False)

    def packed_numel(self, numel: int) -> int:
        """Bytes of codes for ``numel`` elements (two per byte for 4-bit).

        >>> QuantMap.dynamic(signed=True, bits=4).packed_numel(5)
        3
        """
        return numel if self.bits == 8 else (numel + 1) // 2

    def blocks(self, numel: int) -> int:
        """Number of absmax blocks for ``numel`` elements."""
        return -(-numel // self.block)


@dataclass
class Scratch:
    """Reusable work buffers for :func:`encode_blocks` / :func:`decode_blocks` (one chunk).

    Attributes:
        keys: int32, one per element.
        cands: int32, one per element.
        signs: uint8, one per two elements (packing 4-bit codes).
    """

    keys: Tensor
    cands: Tensor
    signs: Tensor

    @classmethod
    def allocate(cls, numel: int, device: torch.device | str = "cpu") -> Scratch:
        """Buffers for chunks of up to ``numel`` elements."""
        return cls(torch.empty(numel, dtype=torch.int32, device=device),
                   torch.empty(numel, dtype=torch.int32, device=device),
                   torch.empty(numel // 2 + 1, dtype=torch.uint8, device=device))

    @property
    def bytes_per_element(self) -> int:
        """Bytes these buffers hold per chunk element."""
        return 8


def absmax_of(x: Tensor, block: int, out: Tensor | None = None,
              scratch: Scratch | None = None) -> Tensor:
    """Each block's absolute maximum of a float32 tensor of whole blocks.

    Args:
        x: float32, a multiple of ``block`` elements.
        block: elements per block.
        out: float32 destination of ``x.numel() // block`` elements (allocated if None).
        scratch: holds ``|x|`` on the way (allocated if None).

    Returns:
        The absmax per block.
    """
    magnitude = (scratch.keys[: x.numel()].view(torch.float32) if scratch is not None
                 else torch.empty_like(x))
    torch.abs(x, out=magnitude)
    if out is None:
        return torch.amax(magnitude.view(-1, block), dim=1)
    return torch.amax(magnitude.view(-1, block), dim=1, out=out)


def encode_blocks(x: Tensor, absmax: Tensor, qmap: QuantMap, codes_out: Tensor,
                  scratch: Scratch | None = None) -> None:
    """Write the codes of ``x`` (float32, ``absmax.numel() * block`` elements) into ``codes_out``.

    ``x`` is overwritten (divided by its block's absmax, made absolute), so pass
    a buffer you no longer need.

    Args:
        x: float32 values padded to whole blocks.
        absmax: float32 per-block absmax, from :func:`absmax_of`.
        qmap: the map.
        codes_out: uint8 codes to write: ``qmap.packed_numel(n)`` for the ``n``
            valid elements.
        scratch: buffers of at least ``x.numel()`` elements (allocated if None).
    """
    scratch = scratch or Scratch.allocate(x.numel(), x.device)
    n = codes_out.numel() if qmap.bits == 8 else 2 * codes_out.numel()
    # an all-zero block gives 0/0 = NaN, whose keys the table maps to code 0 (value 0)
    x.view(-1, qmap.block).div_(absmax.unsqueeze(1))
    y, keys, codes = x[:n], scratch.keys[:n], scratch.cands[:n]
    torch.bitwise_right_shift(y.view(torch.int32), qmap.shift, out=keys)
    keys.bitwise_and_(qmap.lut.numel() - 1)
    torch.index_select(qmap.lut, 0, keys, out=codes)
    y.abs_()
    above = keys.view(torch.float32)
    torch.index_select(qmap.midpoints, 0, codes, out=above)
    torch.gt(y, above, out=keys)
    codes.add_(keys)
    if qmap.bits == 8:
        codes_out.copy_(codes)
        return
    pairs, packed = codes.view(-1, 2), scratch.signs[: n // 2]
    torch.bitwise_left_shift(pairs[:, 0], 4, out=packed)
    packed.bitwise_or_(pairs[:, 1])
    codes_out.copy_(packed)


def decode_blocks(codes: Tensor, absmax: Tensor, qmap: QuantMap, out: Tensor,
                  scratch: Scratch | None = None) -> Tensor:
    """Decode ``codes`` into ``out`` (float32, ``absmax.numel() * block`` elements).

    Elements past the codes' count are set to zero.

    Args:
        codes: uint8 codes (packed for 4-bit).
        absmax: float32 per-block absmax.
        qmap: the map the codes index.
        out: float32 destination, whole blocks.
        scratch: buffers of at least ``out.numel()`` elements (allocated if None).

    Returns:
        ``out``.
    """
    scratch = scratch or Scratch.allocate(out.numel(), out.device)
    idx = scratch.keys[: out.numel()]
    if qmap.bits == 8:
        n = codes.numel()
        idx[:n].copy_(codes)
    else:
        n = 2 * codes.numel()
        pairs = idx[:n].view(-1, 2)
        torch.bitwise_right_shift(codes, 4, out=pairs[:, 0])
        torch.bitwise_and(codes, 15, out=pairs[:, 1])
    torch.index_select(qmap.table, 0, idx[:n], out=out[:n])
    if n < out.numel():
        out[n:].zero_()
    out.view(-1, qmap.block).mul_(absmax.unsqueeze(1))
    return out


def _pad_to_blocks(x: Tensor, block: int) -> Tensor:
    flat = x.detach().reshape(-1).float()
    pad = -flat.numel() % block
    return torch.cat([flat, flat.new_zeros(pad)]) if pad else flat.clone()


def quantize_blockwise(x: Tensor, qmap: QuantMap) -> tuple[Tensor, Tensor]:
    """Quantise a whole tensor: ``(codes uint8, absmax float32)``.

    Args:
        x: any float tensor (flattened; the last block is padded with zeros).
        qmap: the map; its ``block`` sets the block size.

    Returns:
        Codes (``qmap.packed_numel(x.numel())`` bytes) and one absmax per block.

    Example:
        >>> qmap = QuantMap.dynamic(signed=False, bits=4)
        >>> codes, absmax = quantize_blockwise(torch.arange(300.0), qmap)
        >>> codes.dtype, codes.shape, absmax.tolist()
        (torch.uint8, torch.Size([150]), [127.0, 255.0, 299.0])
    """
    padded = _pad_to_blocks(x, qmap.block)
    absmax = absmax_of(padded, qmap.block)
    codes = torch.empty(qmap.packed_numel(x.numel()), dtype=torch.uint8, device=x.device)
    encode_blocks(padded, absmax, qmap, codes)
    return codes, absmax


def dequantize_blockwise(codes: Tensor, absmax: Tensor, qmap: QuantMap, numel: int) -> Tensor:
    """Invert :func:`quantize_blockwise` up to the quantisation error: a flat float32 tensor.

    Args:
        codes: uint8 codes.
        absmax: float32 per-block absmax.
        qmap: the map used to quantise.
        numel: the number of elements quantised.

    Returns:
        A float32 tensor of ``numel`` elements.
    """
    out = torch.empty(absmax.numel() * qmap.block, dtype=torch.float32, device=codes.device)
    return decode_blocks(codes, absmax, qmap, out)[:numel]
