"""The Lookahead sync as foreach ops: slow ← slow + α(fast − slow); fast ← slow.

>>> fast, slow = [torch.full((3,), 2.0)], [torch.zeros(3)]
>>> lerp_and_copy_(fast, slow, 0.25)
>>> fast[0], slow[0]
(tensor([0.5000, 0.5000, 0.5000]), tensor([0.5000, 0.5000, 0.5000]))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from steplab.errors import StateMismatchError
from steplab.optim.paths import compile_mode
from steplab.optim.sync_kernel import compiled_sync, sync_choice

__all__ = ["Blocks", "lerp_and_copy_", "plan_sync", "run_sync"]

#: bytes per foreach call in the CPU sync: fits L2 with room to spare (measured best of
#: 64 KiB..4 MiB on 8M float32 parameters; see benchmarks/optimizer_step.py)
_CPU_BLOCK_BYTES = 256 * 1024


def _cpu_blocks(
    fast: list[Tensor], slow: list[Tensor]
) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
    """Split matching tensors into batches of flat views of about _CPU_BLOCK_BYTES each."""
    batch: tuple[list[Tensor], list[Tensor]] = ([], [])
    size = 0
    for f, s in zip(fast, slow, strict=True):
        pieces = [(f, s)]
        if f.is_contiguous() and s.is_contiguous():
            step = max(1, _CPU_BLOCK_BYTES // f.element_size())
            pieces = list(
                zip(torch.split(f.view(-1), step), torch.split(s.view(-1), step), strict=True)
            )
        for f_piece, s_piece in pieces:
            batch[0].append(f_piece)
            batch[1].append(s_piece)
            size += f_piece.numel() * f_piece.element_size()
            if size >= _CPU_BLOCK_BYTES:
                yield batch
                batch, size = ([], []), 0
    if batch[0]:
        yield batch


Blocks = list[tuple[list[Tensor], list[Tensor]]]


def _plan(fast: list[Tensor], slow: list[Tensor]) -> Blocks:
    for f, s in zip(fast, slow, strict=True):
        bf16_slow = s.dtype == torch.bfloat16 and f.dtype == torch.float32  # slow="bf16"
        if f.shape != s.shape or f.device != s.device or (f.dtype != s.dtype and not bf16_slow):
            raise StateMismatchError(
                f"slow buffer: shape {tuple(s.shape)} {s.dtype} on {s.device}, expected"
                f" {tuple(f.shape)} {f.dtype} on {f.device} like the tensor it follows"
            )
    grouped = _group_tensors_by_device_and_dtype([fast, slow])  # type: ignore[list-item]
    blocks: Blocks = []
    for (device, _), ((fast_list, slow_list), _) in grouped.items():
        fast_t, slow_t = cast(list[Tensor], fast_list), cast(list[Tensor], slow_list)
        if device.type == "cpu":
            blocks.extend(_cpu_blocks(fast_t, slow_t))
        else:
            blocks.append((fast_t, slow_t))
    return blocks


def _key(tensors: list[Tensor]) -> tuple[object, ...]:
    return tuple((t.data_ptr(), t.dtype, t.device, t.shape, t.stride()) for t in tensors)


def plan_sync(fast: list[Tensor], slow: list[Tensor], cache: dict[str, Any] | None = None
              ) -> Blocks:
    """Check and group matching plain tensors for :func:`run_sync`; changes nothing.

    Args:
        fast: tensors to receive the interpolated values (parameters or buffers).
        slow: their slow copies.
        cache: a dict the caller keeps between calls to reuse the block views;
            they are rebuilt whenever a tensor's storage, shape or layout changed.

    Returns:
        The blocks :func:`run_sync` walks.

    Raises:
        StateMismatchError: a pair differs in shape, dtype or device.
    """
    if not fast:
        return []
    key = _key(fast + slow)
    if cache is not None and cache.get("key") == key:
        cached: Blocks = cache["blocks"]
        return cached
    blocks = _plan(fast, slow)
    if cache is not None:
        cache.update(key=key, blocks=blocks)
    return blocks


@torch.no_grad()
def run_sync(blocks: Blocks, alpha: float) -> None:
    """In place, block by block: slow ← slow + α(fast − slow), then fast ← slow.

    Where :func:`steplab.optim.sync_kernel.sync_choice` says so (GPU, or
    ``STEPLAB_COMPILE=always``), the compiled one-pass kernel does the work.
    A bfloat16 slow block (``slow="bf16"``) is interpolated in the fast dtype:
    fast ← fast + (1 − α)(slow − fast), then slow ← bf16(fast).
    """
    mixed = any(sb and sb[0].dtype != fb[0].dtype for fb, sb in blocks)
    if blocks and blocks[0][0] and not mixed:
        device_type = blocks[0][0][0].device.type
        if compile_mode() != "never" and (device_type != "cpu" or compile_mode() == "always"):
            pairs = [(f, s) for fb, sb in blocks for f, s in zip(fb, sb, strict=True)]
            take, _ = sync_choice(sum(f.numel() for f, _ in pairs), device_type, len(pairs))
            if take and compiled_sync(pairs, alpha):
                return
    for fast_block, slow_block in blocks:
        if slow_block and slow_block[0].dtype != fast_block[0].dtype:
            wide = [s.to(f.dtype) for s, f in zip(slow_block, fast_block, strict=True)]
            torch._foreach_lerp_(fast_block, wide, 1.0 - alpha)
            torch._foreach_copy_(slow_block, fast_block)
            continue
        torch._foreach_lerp_(slow_block, fast_block, alpha)
        torch._foreach_copy_(fast_block, slow_block)


@torch.no_grad()
def lerp_and_copy_(
    fast: list[Tensor], slow: list[Tensor], alpha: float, cache: dict[str, Any] | None = None
) -> None:
    """In place: slow ← slow + α(fast − slow), then fast ← slow, grouped by device and dtype.

    On CPU the two foreach ops run over cache-sized blocks (flat views), so the
    copy reads the freshly interpolated block from cache instead of memory:
    about a third less time than two passes over whole tensors (measured on
    8M float32 parameters). Elsewhere each group is one pair of foreach calls.
    Everything is checked before anything changes. Pass plain tensors (a
    ``DTensor``'s local shard, not the ``DTensor``).

    Args:
        fast: tensors to receive the interpolated values (parameters or buffers).
        slow: their slow copies, same shapes, devices and dtypes.
        alpha: the slow step size α.
        cache: see :func:`plan_sync`.

    Raises:
        StateMismatchError: a pair differs in shape, dtype or device.
    """
    run_sync(plan_sync(fast, slow, cache), alpha)
