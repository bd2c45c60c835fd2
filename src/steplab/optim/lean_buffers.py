"""How a lean optimizer stores one state buffer, and how a chunk of it is read and written.

A buffer (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``)
is kept in one of three forms in the optimizer's per-parameter state:

- ``fp32``: ``state[name]``, a float32 tensor shaped like the parameter (the
  ``state=fp32`` default, and every tensor under ``min_size`` elements, by
  default :data:`~steplab.optim.quantize.MIN_QUANTIZED_NUMEL`; a one-element
  tensor always, since its codes would not tell their width apart);
- ``bf16``: ``state[name]``, a bfloat16 tensor shaped like the parameter;
- ``int8`` / ``int4``: ``state[name + "_codes"]`` (uint8, flat, two codes a byte
  for 4-bit) and ``state[name + "_absmax"]`` (float32, one per block).

Every form holds plain tensors under string keys, so named state dicts,
transfer and safetensors checkpoints carry them unchanged (uint8 + float32 +
bfloat16), and a resume is bit-exact.

>>> buf = LeanBuffer("exp_avg", "int8", 5000)
>>> state = buf.zeros("cpu")
>>> sorted(state), state["exp_avg_codes"].dtype, state["exp_avg_absmax"].numel()
(['exp_avg_absmax', 'exp_avg_codes'], torch.uint8, 20)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Literal

import torch
from torch import Tensor

from steplab.optim.quantize import (
    MIN_QUANTIZED_NUMEL,
    BlockCodec,
    QuantMap,
    Scratch,
    decode_blocks,
)

__all__ = ["STATE_KINDS", "LeanBuffer", "StateKind", "Workspace", "load_chunk", "qmap_for",
           "read_buffer", "store_chunk"]

StateKind = Literal["fp32", "bf16", "int8", "int4"]
#: every value ``state=`` accepts
STATE_KINDS: tuple[str, ...] = ("fp32", "bf16", "int8", "int4")
#: buffers holding squared gradients (unsigned maps); the rest are signed
SECOND_MOMENTS = frozenset({"exp_avg_sq", "max_exp_avg_sq"})
CODES, ABSMAX = "_codes", "_absmax"


@cache
def qmap_for(name: str, bits: int) -> QuantMap:
    """The map a buffer is quantised with: dynamic signed for first moments and momentum,
    dynamic unsigned (8-bit) or zero plus 15 linear levels (4-bit) for second
    moments, where only an exact zero gets code 0.

    >>> qmap_for("exp_avg_sq", 4).signed, qmap_for("exp_avg", 4).signed
    (False, True)
    """
    if name not in SECOND_MOMENTS:
        return QuantMap.dynamic(signed=True, bits=bits)
    if bits == 8:  # a positive second moment never decodes to 0 (m / (√0 + ε) explodes)
        return QuantMap.dynamic(signed=False, bits=8, zero_exact=True)
    return QuantMap.zero_and_linear(4)


@dataclass(frozen=True)
class LeanBuffer:
    """One buffer of one parameter: its name, the form it is kept in and its size.

    Attributes:
        name: torch's buffer name (``"exp_avg"``...).
        kind: the requested ``state=``; tensors under ``min_size`` elements
            (and one-element tensors) fall back to ``fp32`` for ``int8``/``int4``.
        numel: elements of the parameter.
        min_size: the smallest tensor quantised (``min_size=`` hyperparameter).
    """

    name: str
    kind: str
    numel: int
    min_size: int = MIN_QUANTIZED_NUMEL

    @cached_property
    def form(self) -> str:
        """The form actually used: ``fp32``, ``bf16``, ``int8`` or ``int4``."""
        if self.kind in ("int8", "int4") and self.numel < max(self.min_size, 2):
            return "fp32"
        return self.kind

    @cached_property
    def qmap(self) -> QuantMap:
        """The quantisation map (only for ``int8``/``int4`` forms)."""
        return qmap_for(self.name, 8 if self.form == "int8" else 4)

    @property
    def block(self) -> int:
        """Chunk boundaries must be multiples of this."""
        return self.qmap.block if self.form in ("int8", "int4") else 1

    def state_keys(self) -> tuple[str, ...]:
        """The state keys this buffer occupies."""
        if self.form in ("int8", "int4"):
            return (self.name + CODES, self.name + ABSMAX)
        return (self.name,)

    def zeros(self, device: torch.device | str,
              shape: torch.Size | None = None) -> dict[str, Tensor]:
        """The buffer's state entries for an all-zero buffer."""
        if self.form in ("int8", "int4"):
            q = self.qmap
            return {self.name + CODES: torch.zeros(q.packed_numel(self.numel), dtype=torch.uint8,
                                                   device=device),
                    self.name + ABSMAX: torch.zeros(q.blocks(self.numel), dtype=torch.float32,
                                                    device=device)}
        dtype = torch.bfloat16 if self.form == "bf16" else torch.float32
        return {self.name: torch.zeros(shape or (self.numel,), dtype=dtype, device=device)}

    def bytes(self) -> int:
        """Bytes the buffer's state entries hold."""
        if self.form == "fp32":
            return 4 * self.numel
        if self.form == "bf16":
            return 2 * self.numel
        q = self.qmap
        return q.packed_numel(self.numel) + 4 * q.blocks(self.numel)

    def pieces(self, state: dict[str, Any], chunk: int, start: int = 0,
               stop: int | None = None) -> list[tuple[Tensor, ...]]:
        """Elements ``start:stop`` of the buffer's state cut into chunks of ``chunk``.

        ``chunk`` and ``start`` are multiples of 256. Each piece is ``(values,)``
        for fp32/bf16, else ``(codes, absmax)`` with ``absmax`` shaped
        ``(blocks, 1)`` as :class:`BlockCodec` takes it, and for 8-bit codes of
        an even count a third view, the codes' pairs as uint16.
        """
        stop = self.numel if stop is None else stop
        if self.form in ("fp32", "bf16"):
            return [(t,) for t in state[self.name].view(-1)[start:stop].split(chunk)]
        q = self.qmap
        codes = state[self.name + CODES][q.packed_numel(start): q.packed_numel(stop)]
        absmax = state[self.name + ABSMAX][start // q.block: -(-stop // q.block)]
        split: list[tuple[Tensor, ...]] = [codes.split(q.packed_numel(chunk)),
                                           absmax.view(-1, 1).split(chunk // q.block)]
        if q.bits == 8 and codes.numel() % 2 == 0:
            split.append(torch.split(codes.view(torch.uint16), chunk // 2))
        return list(zip(*split, strict=True))

    def codec(self, out: Tensor, length: int, scratch: Scratch) -> BlockCodec:
        """A codec for this buffer alone, chunks of ``length`` elements decoded into ``out``."""
        return BlockCodec([self.qmap], out, length, scratch)

    def load(self, state: dict[str, Any], out: Tensor, scratch: Scratch) -> Tensor:
        """The whole buffer as float32: the fp32 state itself, else decoded into ``out``
        (``numel`` rounded up to whole blocks of room)."""
        if self.form == "fp32":
            flat: Tensor = state[self.name].view(-1)
            return flat
        if self.form == "bf16":
            return out[: self.numel].copy_(state[self.name].view(-1))
        (piece,) = self.pieces(state, out.numel())
        return self.codec(out, self.numel, scratch).decode([piece])[0]

    def store(self, state: dict[str, Any], out: Tensor, scratch: Scratch) -> None:
        """Write the whole buffer back from ``out`` (as :meth:`load` left it, updated);
        ``out`` is overwritten for quantised forms."""
        if self.form == "bf16":
            state[self.name].view(-1).copy_(out[: self.numel])
        elif self.form != "fp32":
            (piece,) = self.pieces(state, out.numel())
            self.codec(out, self.numel, scratch).encode([piece])


@dataclass
class Workspace:
    """Float32 scratch for one chunk: the moments' rows, parameter and gradient copies.

    Attributes:
        values: ``count`` rows of ``chunk`` elements, flat (a quantised chunk of
            ``n`` elements uses its first ``count`` rows of ``n`` rounded up to
            whole blocks, so one torch call spans every moment).
        count: moments per parameter (at most).
        param: a float32 copy of a bf16/fp16 parameter's chunk (else empty).
        grad: likewise its gradient.
        scratch: the quantiser's buffers (quantised forms only).
    """

    values: Tensor
    count: int
    param: Tensor
    grad: Tensor
    scratch: Scratch | None

    @property
    def moments(self) -> list[Tensor]:
        """One ``chunk``-element row of :attr:`values` per moment."""
        return list(self.values.view(self.count, -1))

    @classmethod
    def allocate(cls, chunk: int, n_moments: int, low_precision: bool, quantised: bool,
                 device: torch.device) -> Workspace:
        """Buffers for chunks of ``chunk`` elements (parameter copies only for bf16/fp16
        parameters, the quantiser's scratch only for quantised forms)."""
        extra = chunk if low_precision else 0
        return cls(torch.empty(n_moments * chunk, device=device), n_moments,
                   torch.empty(extra, device=device), torch.empty(extra, device=device),
                   Scratch.allocate(chunk, device, n_moments) if quantised else None)


def load_chunk(form: str, pieces: list[tuple[Tensor, ...]], n: int, outs: list[Tensor],
               codecs: dict[int, BlockCodec]) -> list[Tensor]:
    """One chunk's ``n`` moments as float32: the fp32 state itself, or converted or
    decoded into ``outs`` (``codecs[n]``: the codec of every buffer, quantised forms)."""
    if form == "fp32":
        return [piece[0] for piece in pieces]
    if form == "bf16":  # one call converts every moment
        moments = [out[:n] for out in outs]
        torch._foreach_copy_(moments, [piece[0] for piece in pieces])
        return moments
    return codecs[n].decode(pieces)


def store_chunk(form: str, pieces: list[tuple[Tensor, ...]], moments: list[Tensor],
                codecs: dict[int, BlockCodec]) -> None:
    """Write one chunk's updated moments (from :func:`load_chunk`) back into the state."""
    if form == "bf16":
        torch._foreach_copy_([piece[0] for piece in pieces], moments)
    elif form != "fp32":
        codecs[moments[0].numel()].encode(pieces)


def read_buffer(state: dict[str, Any], name: str, numel: int) -> Tensor | None:
    """Buffer ``name`` as a flat float32 tensor, whatever form it is kept in (None if absent).

    The form is read off the entries: ``name`` (fp32 or bf16), or
    ``name_codes`` and ``name_absmax`` (8-bit when there is one code byte per
    element, else 4-bit). Used to report and convert state.

    >>> buf = LeanBuffer("exp_avg", "int4", 4096)
    >>> state = buf.zeros("cpu")
    >>> read_buffer(state, "exp_avg", 4096).abs().sum().item()
    0.0
    """
    dense = state.get(name)
    if isinstance(dense, Tensor):
        return dense.detach().reshape(-1).float()
    codes, absmax = state.get(name + CODES), state.get(name + ABSMAX)
    if not isinstance(codes, Tensor) or not isinstance(absmax, Tensor):
        return None
    bits = 8 if codes.numel() == numel else 4
    q = qmap_for(name, bits)
    out = torch.empty(absmax.numel() * q.block, dtype=torch.float32, device=codes.device)
    return decode_blocks(codes, absmax.float(), q, out)[:numel]
