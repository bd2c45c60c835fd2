"""Block-wise quantisation of optimizer state (Dettmers et al. 2021, arXiv:2110.02861).

A tensor is cut into blocks of ``block`` consecutive elements (256 for 8-bit,
128 for 4-bit codes). Each block keeps its absolute maximum ``a`` as a float32
scale and each element a code: the index of a value in a sorted quantisation
map ``Q`` of numbers in ``[-1, 1]``::

    y      = x / (a · 2⁻¹⁴)                 (float32 division)
    code   = nearest level of |f16(y)| · 2⁻¹⁴ (ties to the smaller), sign bit if signed
    x̃      = Q[code] · a

``f16`` rounds to float16 (to nearest, ties to even): ``y`` is first rounded
to 11 significant bits, which lets one 65,536-entry table indexed by the
float16 bit pattern give the code (one gather per element, no search). The
scaling by 2¹⁴ keeps every ``|x/a| >= 2⁻²⁸`` a normal float16 number, so that
rounding moves ``x/a`` by at most 2⁻¹² of the absmax (0.024 %), and values
down to 2⁻³⁸ of the absmax still tell apart from zero. :attr:`QuantMap.max_error`
is the exact worst case of the whole scheme.

Maps. The dynamic map for first moments and momentum (signed) and for 8-bit
second moments (unsigned) gives every decade of magnitude its own run of
linearly spaced values, so small moments keep relative precision: a code is a
sign bit (signed maps only) and ``n`` magnitude bits; decade ``e = 0 .. n-1``
holds the ``2^(n-1-e)`` magnitudes ``10^-e · (0.1 + 0.9 j / 2^(n-1-e))``,
``j = 1 .. 2^(n-1-e)``, and the all-zero magnitude is 0. Worst errors: 0.73 %
of the block absmax (signed 8-bit), 0.38 % (unsigned 8-bit), 11.3 % (signed
4-bit). 4-bit second moments use :meth:`QuantMap.zero_and_linear`: 0 and the
15 levels ``(2j-1)/29``, where only an exact zero gets code 0 and every
positive value at least the smallest level (worst error 1/29 + 2⁻¹² = 3.47 %). A
second moment rounded to zero would make the Adam step ``m/(√0 + ε)`` explode
(the zero-point problem, Li, Chen, Zhu 2023, arXiv:2309.01507); a true zero
still decodes to exactly zero. 8-bit second moments follow the same rule on
the dynamic map (a positive value takes at least its smallest level, 10⁻⁸ of
the absmax): rounded to zero, they made AdamW with ``min_size=0`` diverge on
half the seeds of mnist1d-cnn at lr 0.01. Every map has 0 as a level: zero quantises to
exactly zero.

No 4-bit map can keep every error within 1 % of the absmax: 16 codes give at
most 16 levels, and ``n`` levels leave some point of ``[0, 1]`` at distance
``>= 1/(2n)`` from all of them (``n`` intervals of half-width ``r`` cover
``[0, 1]`` only if ``2nr >= 1``): at least 1/32 = 3.1 % unsigned and, over
``[-1, 1]``, 1/16 = 6.25 % signed. See docs/benchmarks.md, "lean state".

Tensors with fewer than :data:`MIN_QUANTIZED_NUMEL` elements are not
quantised by default (as in bitsandbytes and torchao): their scales would cost
more than the codes save. 4-bit codes are packed two to a byte, element ``2i``
in the high nibble.

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
    "SCALE",
    "BlockCodec",
    "QuantMap",
    "Scratch",
    "decode_blocks",
    "dequantize_blockwise",
    "encode_blocks",
    "quantize_blockwise",
]

#: elements per absmax block, by code width
BLOCK_SIZES: dict[int, int] = {8: 256, 4: 128}
#: tensors smaller than this keep float32 state (the default ``min_size``)
MIN_QUANTIZED_NUMEL = 4096
#: ``x`` is divided by ``absmax · SCALE`` before rounding to float16
SCALE = 2.0**-14


def _dynamic_magnitudes(n: int) -> list[float]:
    """Zero and the dynamic map's ``2^n - 1`` positive values for ``n`` magnitude bits."""
    magnitudes = [0.0]
    for e in range(n):
        count = 2 ** (n - 1 - e)
        magnitudes += [10.0**-e * (0.1 + 0.9 * j / count) for j in range(1, count + 1)]
    return sorted(magnitudes)


def _half_values() -> Tensor:
    """Every float16 bit pattern ``0 .. 65535`` as its float64 value."""
    return torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16).double()


def _code_lut(mags: Tensor, bits: int, signed: bool, zero_exact: bool) -> Tensor:
    """uint8 code of every float16 pattern of ``y`` (nearest level of ``|y| · SCALE``).

    NaN and infinity (0/0 in an all-zero block) give code 0, whose value is +0.
    """
    values = _half_values()
    u = values.abs() * SCALE
    mid = (mags[1:].double() + mags[:-1].double()) / 2
    codes = torch.searchsorted(mid, u.nan_to_num(0.0, 0.0, 0.0), right=False)  # ties: lower
    if zero_exact:
        codes = torch.where((u > 0) & (codes == 0), 1, codes)
    if signed:
        codes = codes | (torch.signbit(values).long() << (bits - 1))
    codes[~torch.isfinite(values)] = 0
    return codes.to(torch.uint8)


def _max_error(mags: Tensor, lut: Tensor, zero_exact: bool) -> float:
    """Worst ``|x/a - Q[code]|`` over ``x/a`` in [0, 1]: each float16 value ``h`` stands for
    the reals between the midpoints to its neighbours, all given ``lut[h]``'s level."""
    values = _half_values()
    keep = (values >= 0) & (values * SCALE <= 1) & ~torch.signbit(values)
    order = torch.argsort(values[keep])
    u = (values[keep] * SCALE)[order]
    level = mags.double()[(lut.long()[keep] & (mags.numel() - 1))[order]]
    lo = torch.cat([u[:1], (u[1:] + u[:-1]) / 2])
    hi = torch.cat([(u[1:] + u[:-1]) / 2, u[-1:]])
    worst = torch.maximum((lo - level).abs(), (hi - level).abs()).max()
    return max(float(worst), float(mags[1]) if zero_exact else 0.0)


@dataclass(frozen=True, eq=False)
class QuantMap:
    """A quantisation map and the tables that encode and decode with it.

    A code is ``sign bit | magnitude index`` (the sign bit only in signed maps),
    as the dynamic tree layout writes it; ``table[code]`` is its value.

    Attributes:
        magnitudes: the map's non-negative values, sorted, float32 (the first is 0).
        table: value of every code (``2**bits`` entries), float32.
        bits: code width (8 or 4).
        signed: whether codes carry a sign bit.
        block: elements per absmax block.
        zero_exact: only an exact zero gets code 0 (positive values round up).
        max_error: the largest quantisation error as a fraction of the block absmax.
        lut: uint8 code of each float16 bit pattern of ``x / (absmax · SCALE)``.
        pairs: 4-bit maps: int64 holding the two float32 values of each packed byte.
        pack: 4-bit maps: uint8 packed byte of each little-endian int16 ``c0 + 256 c1``.
    """

    magnitudes: Tensor
    table: Tensor
    bits: int
    signed: bool
    block: int
    zero_exact: bool
    max_error: float
    lut: Tensor
    pairs: Tensor
    pack: Tensor

    @classmethod
    def from_magnitudes(cls, magnitudes: list[float], bits: int, signed: bool,
                        zero_exact: bool = False) -> QuantMap:
        """Build a map from its sorted magnitudes in ``[0, 1]``, starting at 0.

        Raises:
            ValueError: for an unsupported width, unsorted magnitudes, magnitudes
                outside [0, 1], no zero level or more than the codes can index.
        """
        if bits not in BLOCK_SIZES:
            raise ValueError(f"bits: got {bits}, expected one of {sorted(BLOCK_SIZES)}")
        m = torch.tensor(magnitudes, dtype=torch.float64)
        room = 2 ** (bits - 1 if signed else bits)
        if len(magnitudes) != room or not bool((m[1:] > m[:-1]).all()) or m[0] != 0 or m[-1] > 1:
            raise ValueError(f"magnitudes: expected {room} increasing numbers in [0, 1] from 0")
        mags = m.float()
        table = torch.cat([mags, -mags]) if signed else mags.clone()
        lut = _code_lut(mags, bits, signed, zero_exact)
        pairs, pack = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.uint8)
        if bits == 4:
            byte = torch.arange(256)
            halves = table[torch.stack([byte >> 4, byte & 15], dim=1)].contiguous()
            pairs = halves.view(torch.int64).reshape(256)
            word = torch.arange(4096)
            pack = (((word & 15) << 4) | ((word >> 8) & 15)).to(torch.uint8)
        error = _max_error(mags, lut, zero_exact)
        return cls(mags, table, bits, signed, BLOCK_SIZES[bits], zero_exact, error, lut,
                   pairs, pack)

    @classmethod
    def dynamic(cls, signed: bool, bits: int, zero_exact: bool = False) -> QuantMap:
        """The dynamic tree map of the module docstring.

        ``zero_exact``: only an exact zero gets code 0 (8-bit second moments).

        >>> qmap = QuantMap.dynamic(signed=False, bits=8)
        >>> len(qmap.table), float(qmap.table[0]), float(qmap.table[-1])
        (256, 0.0, 1.0)
        """
        return cls.from_magnitudes(_dynamic_magnitudes(bits - 1 if signed else bits), bits, signed,
                                   zero_exact)

    @classmethod
    def zero_and_linear(cls, bits: int) -> QuantMap:
        """0 and ``(2j-1)/(2^(bits+1)-3)``, ``j = 1 .. 2^bits-1``: 4-bit second moments.

        Only an exact zero gets code 0, so a positive second moment never
        decodes to zero; the top level is 1 (the absmax is kept exactly) and the
        levels are spaced so the worst error, ``1/(2^(bits+1)-3)``, is the same
        next to zero and between levels (plus the float16 rounding's 2⁻¹²).

        >>> qmap = QuantMap.zero_and_linear(4)
        >>> [round(v, 4) for v in qmap.table[:3].tolist()], round(qmap.max_error, 4)
        ([0.0, 0.0345, 0.1034], 0.0347)
        """
        count = 2**bits - 1
        return cls.from_magnitudes([0.0] + [(2 * j - 1) / (2 * count - 1)
                                            for j in range(1, count + 1)],
                                   bits, signed=False, zero_exact=True)

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
        index: 4 bytes per element, used in turn: decoding's int32 gather
            indices; when encoding ``|x|``, then in its first half the float16
            patterns (later the codes) and in its third quarter which values
            are positive (``zero_exact`` maps).
        divisor: float32, one per 128 elements (``absmax · SCALE``).
    """

    index: Tensor
    divisor: Tensor

    @classmethod
    def allocate(cls, numel: int, device: torch.device | str = "cpu") -> Scratch:
        """Buffers for chunks of up to ``numel`` elements."""
        return cls(torch.empty(numel, dtype=torch.int32, device=device),
                   torch.empty(-(-numel // min(BLOCK_SIZES.values())), device=device))

    @staticmethod
    def bytes_per_element() -> int:
        """Bytes these buffers hold per chunk element (rounded up)."""
        return 4


class BlockCodec:
    """Decodes codes into, and encodes codes from, one float32 buffer of whole blocks.

    Every view the work needs is made once here, so a chunk costs only the
    arithmetic (a handful of torch calls), whatever its position: build one
    codec per buffer and chunk length, then call :meth:`decode` and
    :meth:`encode` chunk after chunk.

    Args:
        qmap: the map.
        values: float32 buffer, a whole number of blocks.
        numel: valid elements (the rest is padding, zero after decoding).
        scratch: work buffers of at least ``values.numel()`` elements.

    Example:
        >>> qmap = QuantMap.dynamic(signed=True, bits=8)
        >>> codec = BlockCodec(qmap, torch.zeros(256), 3, Scratch.allocate(256))
        >>> codes, absmax = torch.empty(3, dtype=torch.uint8), torch.empty(1, 1)
        >>> codec.values[:3] = torch.tensor([1.0, -0.5, 0.0]); codec.encode(codes, absmax)
        >>> codec.decode(codes, absmax).tolist()
        [1.0, -0.4937500059604645, 0.0]
    """

    def __init__(self, qmap: QuantMap, values: Tensor, numel: int, scratch: Scratch) -> None:
        total = values.numel()
        self.qmap, self.values, self.valid = qmap, values, values[:numel]
        self.rows = values.view(-1, qmap.block)
        self.padding = values[numel:] if numel < total else None
        self.magnitude = scratch.index[:total].view(torch.float32)
        self.magnitude_rows = self.magnitude.view(-1, qmap.block)
        self.divisor = scratch.divisor[: total // qmap.block].view(-1, 1)
        self.scale = torch.tensor(SCALE, device=values.device)
        self.zero = torch.tensor(0.0, device=values.device)
        raw = scratch.index[:total].view(torch.uint8)
        self.half = raw[: 2 * total].view(torch.int16)
        self.half_float, self.half_bits = self.half.view(torch.float16), self.half.view(
            torch.uint16)
        self.flags = raw[2 * total: 3 * total]
        self.positive = self.flags.view(torch.bool)
        self.index = values.view(torch.int32)  # encoding: values are dead once in float16
        packed = qmap.packed_numel(numel)
        self.decode_index = scratch.index[:packed]
        if qmap.bits == 8:
            self.decoded, self.source = values[:numel], qmap.table
        else:
            self.decoded, self.source = values[: 2 * packed].view(torch.int64), qmap.pairs
        self.decoded_padding = values[2 * packed:] if qmap.bits == 4 and 2 * packed < total \
            else self.padding
        self.codes = raw[:total]
        self.words, self.pairs = self.index[:packed], self.codes.view(torch.int16)[:packed]
        self.lookup = self.index[:numel] if qmap.bits == 8 else self.index

    def decode(self, codes: Tensor, absmax: Tensor) -> Tensor:
        """Decode ``codes`` with per-block ``absmax`` (shape ``(blocks, 1)``) into the buffer.

        Returns:
            The valid elements (a view of the buffer; the padding is zero).
        """
        self.decode_index.copy_(codes)
        torch.index_select(self.source, 0, self.decode_index, out=self.decoded)
        if self.decoded_padding is not None:
            self.decoded_padding.zero_()
        self.rows.mul_(absmax)
        return self.valid

    def encode(self, codes_out: Tensor, absmax_out: Tensor) -> None:
        """Encode the buffer's valid elements into ``codes_out`` and ``absmax_out``
        (shape ``(blocks, 1)``); the buffer is overwritten."""
        if self.padding is not None:
            self.padding.zero_()
        torch.abs(self.values, out=self.magnitude)
        torch.amax(self.magnitude_rows, dim=1, keepdim=True, out=absmax_out)
        torch.mul(absmax_out, self.scale, out=self.divisor)
        self.rows.div_(self.divisor)  # all-zero block: 0/0, NaN, code 0
        if self.qmap.zero_exact:
            torch.gt(self.values, self.zero, out=self.positive)
        self.half_float.copy_(self.values)
        self.index.copy_(self.half_bits)
        if self.qmap.bits == 8:
            torch.index_select(self.qmap.lut, 0, self.lookup, out=codes_out)
            if self.qmap.zero_exact:
                flags = self.flags[: codes_out.numel()].view(codes_out.shape)
                torch.maximum(codes_out, flags, out=codes_out)
            return
        torch.index_select(self.qmap.lut, 0, self.lookup, out=self.codes)
        if self.qmap.zero_exact:
            torch.maximum(self.codes, self.flags, out=self.codes)
        self.words.copy_(self.pairs)
        torch.index_select(self.qmap.pack, 0, self.words, out=codes_out)


def encode_blocks(x: Tensor, absmax: Tensor, qmap: QuantMap, codes_out: Tensor,
                  scratch: Scratch | None = None) -> None:
    """Write the codes of ``x`` (float32, ``absmax.numel() * block`` elements) into ``codes_out``
    and its per-block absmax into ``absmax``.

    ``x`` is overwritten, so pass a buffer you no longer need.

    Args:
        x: float32 values padded to whole blocks (the padding is set to zero).
        absmax: float32 destination, one per block.
        qmap: the map.
        codes_out: uint8 codes to write: ``qmap.packed_numel(n)`` for the ``n``
            valid elements.
        scratch: buffers of at least ``x.numel()`` elements (allocated if None).
    """
    scratch = scratch or Scratch.allocate(x.numel(), x.device)
    numel = codes_out.numel() if qmap.bits == 8 else min(2 * codes_out.numel(), x.numel())
    BlockCodec(qmap, x, numel, scratch).encode(codes_out, absmax.view(-1, 1))


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
    numel = codes.numel() if qmap.bits == 8 else min(2 * codes.numel(), out.numel())
    BlockCodec(qmap, out, numel, scratch).decode(codes, absmax.view(-1, 1))
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
    absmax = torch.empty(qmap.blocks(x.numel()), device=x.device)
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
