"""The Lookahead sync in one pass: read fast and slow once, write both once.

φ ← φ + α(θ − φ); θ ← φ as two foreach ops (lerp, then copy) reads the slow
weights twice and writes them once more than needed over whole tensors: 24
bytes per float32 element instead of 16. :func:`sync_update` is the sync written
once as plain tensor code and compiled by
:class:`~steplab.optim.compiler.CompiledKernel` into one loop.

On CPU, :mod:`steplab.optim.interpolate` already runs the two foreach ops over
cache-sized blocks, so the copy reads the interpolated block from cache: one
pass to memory without a compiler, measured as fast as the compiled loop
(``benchmarks/optimizer_step.py``). The compiled sync is therefore taken where
the blocked form does not exist (GPU, through Triton) from
:data:`~steplab.optim.paths.MIN_COMPILED_ELEMENTS` elements, or anywhere under
``STEPLAB_COMPILE=always``.

>>> fast, slow = torch.full((3,), 2.0), torch.zeros(3)
>>> sync_update(fast, slow, torch.tensor([0.25]))
>>> fast, slow
(tensor([0.5000, 0.5000, 0.5000]), tensor([0.5000, 0.5000, 0.5000]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from steplab.optim.compiler import CompiledKernel
from steplab.optim.paths import COMPILE_ENV, auto_size_problem, compile_mode
from steplab.optim.single_pass import flat_alias

__all__ = ["SYNC_KERNEL", "compiled_sync", "sync_choice", "sync_update"]


def sync_update(fast: Tensor, slow: Tensor, hp: Tensor) -> None:
    """In place: slow ← slow + α(fast − slow); fast ← slow, with ``hp = [α]``.

    Args:
        fast: the fast weights (or momentum buffers), updated.
        slow: their slow copies, updated.
        hp: a 1-element tensor holding α, on the tensors' device.
    """
    synced = torch.lerp(slow, fast, hp[0])
    slow.copy_(synced)
    fast.copy_(synced)


SYNC_KERNEL = CompiledKernel("lookahead sync", sync_update, hp_index=2)


def sync_choice(elements: int, device_type: str, tensors: int = 1) -> tuple[bool, str]:
    """Whether a sync over ``elements`` on ``device_type`` takes the compiled pass, and why.

    Args:
        elements: elements the sync covers.
        device_type: where they live.
        tensors: how many tensors hold them.

    Returns:
        ``(take_it, reason)``.

    Example:
        >>> import os
        >>> os.environ.get("STEPLAB_COMPILE", "auto") != "auto" or sync_choice(10**8, "cpu")
        (False, 'blocked foreach is one pass on CPU')
    """
    mode = compile_mode()
    if mode == "never":
        return False, f"{COMPILE_ENV}=never"
    if mode == "auto" and device_type == "cpu":
        return False, "blocked foreach is one pass on CPU"
    small = auto_size_problem(elements, tensors) if mode == "auto" else None
    if small is not None:
        return False, small
    return True, f"{COMPILE_ENV}={mode}"


def compiled_sync(pairs: list[tuple[Tensor, Tensor]], alpha: float) -> bool:
    """Sync every (fast, slow) pair with the compiled kernel, if it is available.

    Every variant (dtype, device) is compiled before any tensor changes, so on a
    failed compile (one RuntimeWarning) nothing has changed and the caller runs
    its own sync.

    Args:
        pairs: matching plain tensors (checked by the caller).
        alpha: the slow step size α.

    Returns:
        True when the pairs were synced here.
    """
    hps: dict[tuple[torch.dtype, torch.device], Tensor] = {}
    for fast, _ in pairs:
        key = (fast.dtype, fast.device)
        if key not in hps:
            dtype = torch.float64 if fast.dtype == torch.float64 else torch.float32
            hp = torch.tensor([alpha], dtype=dtype, device=fast.device)
            torch._dynamo.mark_static(hp, 0)
            hps[key] = hp
            scratch = SYNC_KERNEL.scratch((fast, fast, hp))
            if not SYNC_KERNEL.ready(key, scratch, fast.device):
                return False
    written: list[Tensor] = []
    calls: dict[tuple[torch.dtype, torch.device], list[tuple[Tensor, Tensor, Tensor]]] = {}
    for fast, slow in pairs:
        key = (fast.dtype, fast.device)
        if fast.is_contiguous() and slow.is_contiguous() and fast.numel() > 0:
            calls.setdefault(key, []).append((flat_alias(fast), flat_alias(slow), hps[key]))
            written += (fast, slow)
        else:
            sync_update(fast, slow, hps[key])
    for key, group in calls.items():
        SYNC_KERNEL.run(key, group)
    torch.autograd.graph.increment_version(written)  # the aliases' writes, seen by autograd
    return True
