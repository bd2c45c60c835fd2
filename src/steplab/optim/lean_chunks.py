"""The chunked machinery under steplab's lean optimizers (:mod:`steplab.optim.lean`).

:class:`LeanOptimizer` keeps each parameter's buffers in the form ``state=``
asks for (:mod:`steplab.optim.lean_buffers`), sizes chunks so the scratch of
a step stays within :data:`PEAK_FRACTION` of the state, runs an update kernel
chunk by chunk (decode, update, encode), applies Kahan compensation to
bf16/fp16 parameters and loads state dicts saved in any form.

>>> check_state("int4"), check_min_size(0)
('int4', 0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from steplab.errors import SpecError
from steplab.optim.lean_buffers import (
    SECOND_MOMENTS,
    STATE_KINDS,
    LeanBuffer,
    Workspace,
    load_chunk,
    read_buffer,
    store_chunk,
)
from steplab.optim.quantize import BlockCodec, Scratch

__all__ = ["PEAK_FRACTION", "LeanOptimizer", "check_min_size", "check_state"]

#: scratch of a step is at most this fraction of the optimizer's state bytes
PEAK_FRACTION = 0.05
#: chunks are sized to this fraction, leaving room for the allocator's own overhead
#: (page rounding, mmap headers, small temporaries): measured peak RSS stays under 5%
_SIZING_FRACTION = 0.045
#: chunk bounds: below 8K elements a chunk's dozen torch calls cost more than its
#: arithmetic; above 256K its float32 scratch no longer stays in a core's L2 cache
_MIN_CHUNK, _MAX_CHUNK, _ALIGN = 8192, 1 << 18, 256
#: chunks whose views are made at once (more would hold memory for views: ~400 B each)
_GROUP = 16
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def check_state(state: object) -> str:
    """``state`` if it is one of :data:`STATE_KINDS`.

    Raises:
        SpecError: naming the value and the allowed ones.
    """
    if state not in STATE_KINDS:
        raise SpecError(f"state: got {state!r}, expected one of {', '.join(STATE_KINDS)}")
    return str(state)


def check_min_size(min_size: object) -> int:
    """``min_size`` as an int if it is an integer >= 0.

    Raises:
        SpecError: naming the value and what is expected.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or not (
            math.isfinite(min_size) and min_size >= 0 and int(min_size) == min_size):
        raise SpecError(f"min_size: got {min_size!r}, expected an integer >= 0")
    return int(min_size)


class LeanOptimizer(torch.optim.Optimizer):
    """Shared machinery: buffers per parameter, chunking, state loading, compensation."""

    buffer_names: tuple[str, ...] = ()

    def _buffers(self, group: dict[str, Any], p: Tensor) -> list[LeanBuffer]:
        return [LeanBuffer(name, group["state"], p.numel(), group["min_size"])
                for name in self.buffer_names]

    def _init_state(self, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
        state: dict[str, Any] = self.state[p]
        for buf in self._buffers(group, p):
            state.update(buf.zeros(p.device, p.shape))
        if p.dtype in _LOW_PRECISION:
            state["kahan_comp"] = torch.zeros_like(p)
        return state

    def _complete(self, group: dict[str, Any], p: Tensor) -> bool:
        """Whether ``p``'s state holds every buffer (transfer may drop momentum buffers)."""
        state = self.state[p]
        keys = [k for b in self._buffers(group, p) for k in b.state_keys()]
        return bool(state) and all(k in state for k in keys)

    def state_bytes(self) -> int:
        """Bytes of every tensor in the per-parameter state."""
        return sum(t.numel() * t.element_size() for s in self.state.values()
                   for t in s.values() if isinstance(t, Tensor))

    def _forms(self) -> set[str]:
        return {b.form for g in self.param_groups for p in g["params"]
                for b in self._buffers(g, p)}

    def _per_element(self) -> float:
        """Scratch bytes per chunk element: float32 moments, the quantiser's work
        buffers, and float32 copies of a low-precision parameter and its gradient."""
        forms = self._forms()
        per_element = 4.0 * len(self.buffer_names)
        if forms & {"int8", "int4"}:
            per_element += Scratch.bytes_per_element(len(self.buffer_names))
        if any(p.dtype in _LOW_PRECISION for g in self.param_groups for p in g["params"]):
            per_element += 8
        return per_element

    def workspace_bytes(self) -> int:
        """Bytes of the scratch one :meth:`step` allocates (its peak extra memory)."""
        largest = max((p.numel() for g in self.param_groups for p in g["params"]), default=0)
        chunk = min(self._chunk(), -(-largest // _ALIGN) * _ALIGN)
        return math.ceil(chunk * self._per_element())

    def _chunk(self) -> int:
        """Elements per chunk: cache-sized, and within ``PEAK_FRACTION`` of the state."""
        fraction = min(PEAK_FRACTION, _SIZING_FRACTION)
        budget = int(fraction * self.state_bytes() / self._per_element()) // _ALIGN * _ALIGN
        return min(max(budget, _MIN_CHUNK), _MAX_CHUNK)

    def _run_chunks(self, group: dict[str, Any], p: Tensor, work: Workspace, chunk: int,
                    kernel: Callable[[Tensor, Tensor, list[Tensor]], None]) -> None:
        """Decode, update with ``kernel(param, grad, moments)`` and encode ``p`` chunk by chunk.

        Views are made ahead, :data:`_GROUP` chunks at a time (so their own
        memory stays bounded), with codecs for full chunks and the last one: a
        chunk costs a few torch calls.
        """
        state, buffers = self.state[p], self._buffers(group, p)
        assert p.grad is not None
        flat_p, flat_g = p.detach().view(-1), p.grad.detach().reshape(-1)
        if buffers[0].form == "bf16" and "kahan_comp" not in state:
            self._run_bf16([state[b.name].view(-1) for b in buffers], flat_p, flat_g,
                           work.moments[: len(buffers)], chunk, kernel)
            return
        comp = state.get("kahan_comp")
        flat_c = comp.view(-1) if comp is not None else None
        numel, form, outs = p.numel(), buffers[0].form, work.moments[: len(buffers)]
        codecs: dict[int, BlockCodec] = {}
        if form in ("int8", "int4"):
            assert work.scratch is not None
            codecs = {n: BlockCodec([b.qmap for b in buffers], work.values, n, work.scratch)
                      for n in {min(chunk, numel), (numel - 1) % chunk + 1}}
            if flat_c is None:
                self._run_quantised(buffers, state, flat_p, flat_g, codecs, chunk, kernel)
                return
        for start in range(0, numel, _GROUP * chunk):
            stop = min(start + _GROUP * chunk, numel)
            params = torch.split(flat_p[start:stop], chunk)
            grads = torch.split(flat_g[start:stop], chunk)
            comps = (torch.split(flat_c[start:stop], chunk) if flat_c is not None
                     else [None] * len(params))
            pieces = [b.pieces(state, chunk, start, stop) for b in buffers]
            for i, (param, grad, c) in enumerate(zip(params, grads, comps, strict=True)):
                moments = load_chunk(form, [piece[i] for piece in pieces], param.numel(),
                                     outs, codecs)
                low = param
                if c is not None:  # θ + c in float32, the compensated value of the parameter
                    param = work.param[: param.numel()].copy_(param).add_(c)
                    grad = work.grad[: param.numel()].copy_(grad)
                kernel(param, grad, moments)
                if c is not None:
                    low.copy_(param)
                    c.copy_(param.sub_(low))
                store_chunk(form, [piece[i] for piece in pieces], moments, codecs)

    @staticmethod
    def _run_quantised(buffers: list[LeanBuffer], state: dict[str, Any], flat_p: Tensor,
                       flat_g: Tensor, codecs: dict[int, BlockCodec], chunk: int,
                       kernel: Callable[[Tensor, Tensor, list[Tensor]], None]) -> None:
        """:meth:`_run_chunks` for quantised moments and a float32 parameter: per chunk,
        one decode, the kernel and one encode (the chunk's loop is most of a step's
        Python, so it does nothing else)."""
        numel = flat_p.numel()
        for start in range(0, numel, _GROUP * chunk):
            stop = min(start + _GROUP * chunk, numel)
            params = torch.split(flat_p[start:stop], chunk)
            grads = torch.split(flat_g[start:stop], chunk)
            pieces = zip(*[b.pieces(state, chunk, start, stop) for b in buffers], strict=True)
            for param, grad, piece in zip(params, grads, pieces, strict=True):
                codec = codecs[param.numel()]
                kernel(param, grad, codec.decode(piece))
                codec.encode(piece)

    @staticmethod
    def _run_bf16(moments: list[Tensor], flat_p: Tensor, flat_g: Tensor, outs: list[Tensor],
                  chunk: int, kernel: Callable[[Tensor, Tensor, list[Tensor]], None]) -> None:
        """:meth:`_run_chunks` for bf16 moments and a float32 parameter, in two calls a chunk.

        A chunk's moments are widened into the float32 scratch, updated by
        ``kernel`` and rounded back (``copy_``: round to nearest even). On CPU one
        ``_foreach_copy_`` writes the previous chunk back and widens this one (it
        copies its pairs in list order, so the scratch is written back before it
        is refilled): the step's Python and dispatch cost, a large share of it at
        cache-sized chunks, drops by a third.
        """
        numel = flat_p.numel()
        merge = flat_p.device.type == "cpu"
        scratch = {n: [out[:n] for out in outs] for n in {min(chunk, numel),
                                                          (numel - 1) % chunk + 1}}
        pending: list[Tensor] = []  # the previous chunk's bf16 moments, then its scratch
        for start in range(0, numel, _GROUP * chunk):
            stop = min(start + _GROUP * chunk, numel)
            params = torch.split(flat_p[start:stop], chunk)
            grads = torch.split(flat_g[start:stop], chunk)
            pieces = [torch.split(m[start:stop], chunk) for m in moments]
            for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
                low, wide = [piece[i] for piece in pieces], scratch[param.numel()]
                if pending and merge:
                    torch._foreach_copy_(pending[: len(low)] + wide, pending[len(low):] + low)
                else:
                    if pending:
                        torch._foreach_copy_(pending[: len(low)], pending[len(low):])
                    torch._foreach_copy_(wide, low)
                kernel(param, grad, wide)
                pending = low + wide
        if pending:
            torch._foreach_copy_(pending[: len(moments)], pending[len(moments):])

    def _prepare(self) -> tuple[list[tuple[dict[str, Any], Tensor]], Workspace | None, int]:
        todo = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise SpecError(f"{type(self).__name__}: sparse gradients are not supported")
                if not p.is_contiguous():
                    raise SpecError(f"{type(self).__name__}: parameters must be contiguous")
                if not self._complete(group, p):
                    self._init_state(group, p)
                todo.append((group, p))
        if not todo:
            return todo, None, 0
        chunk = min(self._chunk(), -(-max(p.numel() for _, p in todo) // _ALIGN) * _ALIGN)
        low = any(p.dtype in _LOW_PRECISION for _, p in todo)
        quantised = bool(self._forms() & {"int8", "int4"})
        work = Workspace.allocate(chunk, len(self.buffer_names), low, quantised,
                                   todo[0][1].device)
        return todo, work, chunk

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state, keeping each buffer's dtype exactly (torch would cast bf16 to the
        parameter's dtype) and converting buffers saved in another form to this one's
        (fp32 AdamW state into ``state=int8``, ...). Each group keeps its own ``state=``.

        Raises:
            ValueError: as ``torch.optim.Optimizer.load_state_dict``.
        """
        saved = state_dict.get("state", {})
        ours = {i: self._own_keys(b) for i, b in saved.items()}
        others = {i: {k: v for k, v in b.items() if k not in ours[i]} for i, b in saved.items()}
        kinds = [(g["state"], g["min_size"]) for g in self.param_groups]
        super().load_state_dict({**state_dict, "state": others})  # step, Lookahead's buffers
        for group, (kind, min_size) in zip(self.param_groups, kinds, strict=True):
            for key, value in self.defaults.items():  # a torch AdamW state dict lacks ours
                group.setdefault(key, value)
            # the form is the optimizer's own construction setting
            group["state"], group["min_size"] = kind, min_size
        ids = [(g, p) for g in self.param_groups for p in g["params"]]
        for i, bufs in saved.items():
            group, p = ids[int(i)]
            state = self.state[p]
            for buf in self._buffers(group, p):
                if all(isinstance(bufs.get(k), Tensor) for k in buf.state_keys()) and all(
                        bufs[k].dtype == v.dtype for k, v in buf.zeros("meta").items()):
                    state.update({k: bufs[k].to(p.device, copy=True) for k in buf.state_keys()})
                else:
                    self._convert_into(state, buf, bufs, p)
            if p.dtype in _LOW_PRECISION:
                comp = bufs.get("kahan_comp")
                state["kahan_comp"] = (comp.to(p.device, p.dtype, copy=True)
                                       if isinstance(comp, Tensor) else torch.zeros_like(p))

    def _own_keys(self, buffers: dict[str, Any]) -> set[str]:
        """Keys of ``buffers`` this optimizer loads itself (moments in any form, kahan_comp)."""
        names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
        forms = {n + suffix for n in names for suffix in ("", "_codes", "_absmax")}
        return {k for k in buffers if k in forms or k == "kahan_comp"}

    @staticmethod
    def _convert_into(state: dict[str, Any], buf: LeanBuffer, bufs: dict[str, Any],
                      p: Tensor) -> None:
        """Re-encode a buffer saved in another form (fp32 AdamW state into int8, ...)."""
        values = read_buffer(bufs, buf.name, p.numel())
        state.update(buf.zeros(p.device, p.shape))
        if values is None:
            return
        least = float(values.min()) if buf.name in SECOND_MOMENTS and values.numel() else 0.0
        if least < 0:
            raise ValueError(f"{buf.name}: got a negative value ({least:g}) in "
                             "the loaded state; a second moment is >= 0")
        chunk = -(-p.numel() // _ALIGN) * _ALIGN
        work, scratch = torch.zeros(chunk, device=p.device), Scratch.allocate(chunk, p.device)
        buf.load(state, work, scratch).copy_(values.to(p.device))
        buf.store(state, work, scratch)
