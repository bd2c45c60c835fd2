"""Block-wise quantisation of optimizer state (Dettmers et al. 2021, arXiv:2110.02861).

A tensor is cut into blocks of ``block`` consecutive elements (256 for 8-bit,
128 for 4-bit codes). Each block keeps its absolute maximum ``a`` as a float32
scale and each element a code: the index of a value in a sorted quantisation
map ``Q`` of numbers in ``[-1, 1]``::

    y      = x / a                             (float32 division)
    bucket = y's sign, exponent and first 10 mantissa bits (bits 13..31 of its pattern)
    code   = level of Q nearest the middle of the bucket's interval (ties to the
             smaller), the bucket's sign bit in signed maps; 0 for NaN (0/0 in an
             all-zero block)
    x̃      = Q[code] · a

A bucket is the interval of reals that share those 19 leading bits: ``y``
truncated to 11 significant bits. One 524,288-entry table indexed by the
bucket gives the code (a shift, a mask and one gather per element, no search,
and no float16 rounding whose range would swallow tiny values); the bucket is
at most 2⁻¹¹ of the absmax wide where ``|y| <= 1``, which adds at most 0.05 %
of the absmax to the map's own rounding error. :attr:`QuantMap.max_error` is
the exact worst case of the whole scheme (every bucket's worst point).

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
the dynamic map (a positive value takes at least its smallest level, 10⁻⁷ of
the absmax): rounded to zero, they made AdamW with ``min_size=0`` diverge on
half the seeds of mnist1d-cnn at lr 0.01. Every map has 0 as a level: zero quantises to
exactly zero.

"Only an exact zero" is exact down to ``|y| >= 2⁻¹³⁶`` (the first bucket holds
0 and the float32 values below that): a second moment that small beside its
block's maximum decodes to 0, and its square root is below 2⁻⁶⁸ · √a, far
under any ε an optimizer uses. With ``torch.set_flush_denormal(True)`` the
bound is 2⁻¹²⁶ instead: the division then flushes smaller ratios to zero.

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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

__all__ = [
    "BLOCK_SIZES",
    "BUCKET_BITS",
    "MIN_QUANTIZED_NUMEL",
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
#: the leading bits of ``y``'s float32 pattern that pick its bucket (sign, exponent, 10 mantissa)
BUCKET_BITS = 19
_SHIFT = 32 - BUCKET_BITS
_MASK = (1 << BUCKET_BITS) - 1

def _dynamic_magnitudes(n: int) -> list[float]:
    """Zero and the dynamic map's ``2^n - 1`` positive values for ``n`` magnitude bits."""
    magnitudes = [0.0]
    for e in range(n):
        count = 2 ** (n - 1 - e)
        magnitudes += [10.0**-e * (0.1 + 0.9 * j / count) for j in range(1, count + 1)]
    return sorted(magnitudes)


def _float32_of(bits: Tensor) -> Tensor:
    """float64 values of the float32 bit patterns ``bits`` (int64 holding 0 .. 2^31 - 1)."""
    return bits.to(torch.int32).view(torch.float32).double()


@cache
def _buckets() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every bucket's ``(lo, hi, negative, finite)``: ``|y|`` in ``[lo, hi)``, float64.

    Bucket ``b`` holds the float32 numbers whose pattern shifted right by
    ``32 - BUCKET_BITS`` is ``b``; its top bit is the sign. Buckets of NaN and
    infinity are not ``finite``.
    """
    index = torch.arange(1 << BUCKET_BITS, dtype=torch.int64)
    low = (index << _SHIFT) & 0x7FFFFFFF
    infinity = 0x7F800000
    finite = low < infinity
    lo = _float32_of(torch.where(finite, low, 0))
    hi = _float32_of(torch.clamp(low + (1 << _SHIFT), max=infinity))
    return lo, hi, (index >> (BUCKET_BITS - 1)) == 1, finite


def _code_lut(mags: Tensor, bits: int, signed: bool, zero_exact: bool) -> Tensor:
    """uint8 code of every bucket of ``y``: the level nearest the bucket's middle.

    NaN and infinity (0/0 in an all-zero block) give code 0, whose value is +0.
    """
    lo, hi, negative, finite = _buckets()
    middle = torch.clamp((lo + hi) / 2, max=2.0)
    between = (mags[1:].double() + mags[:-1].double()) / 2
    codes = torch.searchsorted(between, middle, right=False)  # ties: the smaller level
    if zero_exact:
        codes = torch.where((lo > 0) & (codes == 0), 1, codes)
    if signed:
        codes = codes | (negative.long() << (bits - 1))
    codes[~finite] = 0
    return codes.to(torch.uint8)


def _max_error(mags: Tensor, lut: Tensor) -> float:
    """Worst ``|x/a - Q[code]|`` over ``x/a`` in [0, 1]: every point of every bucket
    that meets [0, 1] is given that bucket's level."""
    lo, hi, negative, finite = _buckets()
    keep = ~negative & finite & (lo <= 1)
    level = mags.double()[lut.long()[keep] & (mags.numel() - 1)]
    worst = torch.maximum((lo[keep] - level).abs(), (torch.clamp(hi[keep], max=1.0) - level).abs())
    return float(worst.max())


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
        lut: uint8 code of each bucket of ``y = x / absmax`` (``2**BUCKET_BITS`` entries).
        pairs: int64 holding the two float32 values of each pair of codes: indexed
            by the little-endian uint16 ``c0 + 256 c1`` of two 8-bit codes, or by
            the packed byte of two 4-bit codes (element ``2i`` in the high nibble).
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
        pack = torch.empty(0, dtype=torch.uint8)
        if bits == 8:
            word = torch.arange(65536)
            first, second = word & 255, word >> 8
        else:
            byte = torch.arange(256)
            first, second = byte >> 4, byte & 15
            word = torch.arange(4096)
            pack = (((word & 15) << 4) | ((word >> 8) & 15)).to(torch.uint8)
        pairs = table[torch.stack([first, second], dim=1)].contiguous().view(torch.int64).view(-1)
        error = _max_error(mags, lut)
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
    """Reusable work buffers of :class:`BlockCodec` (one chunk of up to ``buffers`` buffers).

    Attributes:
        index: int32, half an element: the last buffer's gather indices when
            decoding (the others' wait in the last buffer's row of the work
            area, not yet decoded); a 4-bit buffer's codes before packing.
        low: float32, one per 128 elements per buffer: block minima of signed buffers.
    """

    index: Tensor
    low: Tensor

    @classmethod
    def allocate(cls, numel: int, device: torch.device | str = "cpu",
                 buffers: int = 1) -> Scratch:
        """Buffers for chunks of up to ``numel`` elements of ``buffers`` buffers."""
        whole = -(-numel // max(BLOCK_SIZES.values())) * max(BLOCK_SIZES.values())
        return cls(torch.empty(whole // 2, dtype=torch.int32, device=device),
                   torch.empty(buffers * -(-numel // min(BLOCK_SIZES.values())), device=device))

    @staticmethod
    def bytes_per_element(buffers: int = 1) -> float:
        """Bytes these buffers hold per chunk element, for ``buffers`` buffers."""
        return 2 + 4 * buffers / min(BLOCK_SIZES.values())


class BlockCodec:
    """Decodes and encodes one chunk of a parameter's quantised buffers, all at once.

    The buffers (a parameter's moments: ``exp_avg``, ``exp_avg_sq``...) share
    the chunk's layout: a float32 work area ``(buffers, whole blocks)`` holds
    their values, so the elementwise passes run over all of them in one torch
    call, and every view the work needs is made once here. Build one codec per
    chunk length and call :meth:`decode` and :meth:`encode` chunk after chunk:
    a chunk then costs about a dozen torch calls for two buffers, four of them
    table lookups.

    Unsigned maps take values >= 0 (second moments): their block scale is the
    block's maximum, which is its largest magnitude only then.

    Args:
        qmaps: each buffer's map; one code width, signed maps first.
        work: float32, at least ``len(qmaps)`` times ``numel`` rounded up to whole blocks.
        numel: valid elements per buffer (the rest of each row is padding).
        scratch: work buffers for at least ``numel`` elements of ``len(qmaps)`` buffers.

    Raises:
        ValueError: maps of different widths, a signed map after an unsigned one,
            or more than three buffers.

    Example:
        >>> qmap = QuantMap.dynamic(signed=True, bits=8)
        >>> codec = BlockCodec([qmap], torch.zeros(256), 3, Scratch.allocate(256))
        >>> codes, absmax = torch.empty(3, dtype=torch.uint8), torch.empty(1, 1)
        >>> codec.values[0][:] = torch.tensor([1.0, -0.5, 0.0])
        >>> codec.encode([(codes, absmax)])
        >>> codec.decode([(codes, absmax)])[0].tolist()
        [1.0, -0.4937500059604645, 0.0]
    """

    def __init__(self, qmaps: Sequence[QuantMap], work: Tensor, numel: int,
                 scratch: Scratch) -> None:
        first = qmaps[0]
        signed = [q.signed for q in qmaps]
        if (any(q.bits != first.bits for q in qmaps) or signed != sorted(signed, reverse=True)
                or len(qmaps) > 3):
            raise ValueError("qmaps: expected one code width, signed maps first, at most 3")
        count, block, self.bits = len(qmaps), first.block, first.bits
        total = -(-numel // block) * block
        blocks, half = total // block, total // 2
        self.qmaps = list(qmaps)
        values = work[: count * total].view(count, total)
        self.values = [row[:numel] for row in values]
        self.block_rows = [row.view(blocks, block) for row in values]
        self.padding = values[:, numel:] if numel < total else None
        self.ints = values.view(torch.int32)
        n_signed = sum(signed)
        self.low = list(torch.split(scratch.low[: n_signed * blocks].view(-1, 1), blocks)
                        ) if n_signed else []
        self.zero = torch.zeros((), device=work.device)
        # 0-dim operands: a Python int would be wrapped into a new tensor at every call
        self.shift = torch.tensor(_SHIFT, dtype=torch.int32, device=work.device)
        self.mask = torch.tensor(_MASK, dtype=torch.int32, device=work.device)
        # decoding: buffer i < last keeps its indices in the last buffer's row (decoded
        # last), the last buffer in the scratch; each buffer's pairs, then its odd code
        self.pairs = numel // 2 if self.bits == 8 else -(-numel // 2)
        self.odd = self.bits == 8 and numel % 2 == 1
        slots = [self.ints[count - 1, i * half: (i + 1) * half] for i in range(count - 1)]
        slots.append(scratch.index[:half])
        self.decode_index = [slot[: self.pairs] for slot in slots]
        self.single_index = [slot[self.pairs: self.pairs + 1] for slot in slots]
        self.decode_out = [row.view(torch.int64)[: self.pairs] for row in values]
        self.single_out = [row[numel - 1: numel] for row in values]
        self.lookup = [row[:numel] for row in self.ints] if self.bits == 8 else list(self.ints)
        self.unpacked = scratch.index.view(torch.uint8)[:total]
        self.unpacked_words = self.unpacked.view(torch.uint16)
        self.words = [row[:half] for row in self.ints]

    def decode(self, pieces: Sequence[tuple[Tensor, ...]]) -> list[Tensor]:
        """Decode each buffer's ``(codes, absmax)`` (absmax shaped ``(blocks, 1)``).

        A piece may carry a third tensor: its 8-bit codes' pairs viewed as
        uint16 (:meth:`LeanBuffer.pieces` makes them for many chunks at once).

        Returns:
            Each buffer's valid elements (views of the work area; the padding is zero).
        """
        if self.bits == 8:
            sources = [piece[2] if len(piece) > 2 else
                       piece[0][: 2 * self.pairs].view(torch.uint16) for piece in pieces]
        else:
            sources = [piece[0] for piece in pieces]
        if self.odd:  # the last code of an odd-length chunk has no partner
            torch._foreach_copy_(self.decode_index + self.single_index,
                                 sources + [piece[0][-1:] for piece in pieces])
        else:
            torch._foreach_copy_(self.decode_index, sources)
        for i, qmap in enumerate(self.qmaps):
            torch.index_select(qmap.pairs, 0, self.decode_index[i], out=self.decode_out[i])
            if self.odd:
                torch.index_select(qmap.table, 0, self.single_index[i], out=self.single_out[i])
        if self.padding is not None:
            self.padding.zero_()
        torch._foreach_mul_(self.block_rows, [piece[1] for piece in pieces])
        return self.values

    def encode(self, pieces: Sequence[tuple[Tensor, ...]]) -> None:
        """Encode the work area's valid elements into each buffer's ``(codes, absmax)``;
        the work area is overwritten."""
        if self.padding is not None:
            self.padding.zero_()
        scales = [piece[1] for piece in pieces]
        for rows, absmax in zip(self.block_rows, scales, strict=True):
            torch.amax(rows, dim=1, keepdim=True, out=absmax)
        # signed buffers (the first ones, one ``low`` each): |x| peaks at max(max x, -min x)
        for rows, absmax, low in zip(self.block_rows, scales, self.low, strict=False):
            torch.amin(rows, dim=1, keepdim=True, out=low)
            torch.sub(self.zero, low, out=low)  # 0 - 0 is +0, where -0 would be -0
            torch.maximum(low, absmax, out=absmax)  # ties give the first: +0
        torch._foreach_div_(self.block_rows, scales)  # all-zero block: 0/0, NaN, code 0
        self.ints.bitwise_right_shift_(self.shift)  # arithmetic: a negative y's sign spreads,
        self.ints.bitwise_and_(self.mask)  # which the mask clears back to one sign bit
        if self.bits == 8:
            for qmap, lookup, piece in zip(self.qmaps, self.lookup, pieces, strict=True):
                torch.index_select(qmap.lut, 0, lookup, out=piece[0])
            return
        for qmap, lookup, words, piece in zip(self.qmaps, self.lookup, self.words, pieces,
                                              strict=True):
            torch.index_select(qmap.lut, 0, lookup, out=self.unpacked)
            words.copy_(self.unpacked_words)  # this buffer's row is free once looked up
            torch.index_select(qmap.pack, 0, words[: self.pairs], out=piece[0])


def encode_blocks(x: Tensor, absmax: Tensor, qmap: QuantMap, codes_out: Tensor,
                  scratch: Scratch | None = None) -> None:
    """Write the codes of ``x`` (float32, ``absmax.numel() * block`` elements) into ``codes_out``
    and its per-block absmax into ``absmax``.

    ``x`` is overwritten, so pass a buffer you no longer need.

    Args:
        x: float32 values padded to whole blocks (the padding is set to zero; for
            4-bit codes of an odd count, the element after the last is coded too
            and must be zero, as :func:`quantize_blockwise` leaves it).
        absmax: float32 destination, one per block.
        qmap: the map.
        codes_out: uint8 codes to write: ``qmap.packed_numel(n)`` for the ``n``
            valid elements.
        scratch: buffers of at least ``x.numel()`` elements (allocated if None).
    """
    scratch = scratch or Scratch.allocate(x.numel(), x.device)
    numel = codes_out.numel() if qmap.bits == 8 else min(2 * codes_out.numel(), x.numel())
    BlockCodec([qmap], x, numel, scratch).encode([(codes_out, absmax.view(-1, 1))])


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
    BlockCodec([qmap], out, numel, scratch).decode([(codes, absmax.view(-1, 1))])
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
