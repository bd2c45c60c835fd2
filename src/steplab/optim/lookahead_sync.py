"""Plan one Lookahead sync on this process's tensors, checking everything before any change.

A sync touches the parameters, the slow weights and (with ``pullback="pullback"``)
the inner momentum buffers of several groups. It is planned first: each
tensor is replaced by its local shard (FSDP2's ``DTensor`` parameters sync
shard by shard, which is exact because the update is element-wise), pairs are
checked for shape, dtype and device, and grouped into blocks. Only then does
:func:`steplab.optim.interpolate.run_sync` change values, so a mismatch found
in the last group leaves the first one untouched.

>>> p = torch.nn.Parameter(torch.ones(2))
>>> state = {p: {"slow_param": torch.zeros(2)}}
>>> blocks = plan_group(torch.optim.SGD([p], lr=0.1), state, {"lookahead_pullback": "none"}, [p])
>>> len(blocks), p.detach()  # planned, nothing changed yet
(1, tensor([1., 1.]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from steplab.errors import StateMismatchError
from steplab.optim.interpolate import Blocks, plan_sync
from steplab.optim.lookahead_state import local_tensor, momentum_buffer_name

__all__ = ["SLOW_FORMS", "keep_bf16", "plan_group", "slow_buffer"]

#: how Lookahead stores slow weights: in the parameter's dtype, or bfloat16
SLOW_FORMS = ("fp32", "bf16")


def slow_buffer(state: Any, p: Tensor, name: str, like: Tensor | None = None,
                bf16: bool = False) -> Tensor:
    """The slow buffer ``name`` of ``p``, moved to ``like``'s (default ``p``'s) device and dtype.

    Parameters moved with ``model.to(...)`` after their first step take their
    slow copies along at the next sync instead of failing in the kernel.

    Args:
        state: the optimizer state that holds ``p``'s buffers.
        p: the parameter.
        name: ``"slow_param"`` or ``"slow_momentum"``.
        like: the tensor whose device and dtype the buffer must have.
        bf16: keep the buffer in bfloat16 (``slow="bf16"``) instead of ``like``'s dtype.

    Returns:
        The buffer (replaced in ``state`` by the moved copy when it moved).

    Raises:
        StateMismatchError: ``p`` has no such buffer.
    """
    ref = p if like is None else like
    dtype = torch.bfloat16 if bf16 and ref.dtype != torch.float64 else ref.dtype
    buffers = state.get(p, {})
    if name not in buffers:
        raise StateMismatchError(
            f"state[{tuple(p.shape)} parameter]['{name}']: missing, expected the"
            " Lookahead buffer its first step creates"
        )
    slow: Tensor = buffers[name]
    if slow.device != ref.device or slow.dtype != dtype:
        slow = buffers[name] = slow.to(device=ref.device, dtype=dtype)
    return slow


def keep_bf16(groups: list[dict[str, Any]], state: Any) -> None:
    """Store the slow weights of ``slow="bf16"`` groups in bfloat16 again after a load."""
    for group in groups:
        if group.get("lookahead_slow") == "bf16":
            for p in group["params"]:
                if "slow_param" in state.get(p, {}):
                    slow_buffer(state, p, "slow_param", bf16=True)


def plan_group(optimizer: torch.optim.Optimizer, state: Any, group: dict[str, Any],
               params: list[Tensor], cache: dict[str, Any] | None = None) -> list[Blocks]:
    """Check one group's tensors and put them into blocks; changes no value.

    Args:
        optimizer: the inner optimizer (it names the momentum-like buffer).
        state: the per-parameter state holding the inner and slow buffers.
        group: the parameter group (its ``lookahead_pullback`` is read).
        params: the group's parameters whose state this process holds.
        cache: a dict kept between syncs to reuse the block views.

    Returns:
        The blocks for the weights, and for the momentum buffers under pullback.

    Raises:
        StateMismatchError: a slow buffer does not match its tensor.
    """
    cache = {} if cache is None else cache
    weights = [p for p in params if "slow_param" in state.get(p, {})]
    plans = [plan_sync([local_tensor(p) for p in weights],
                       [local_tensor(slow_buffer(state, p, "slow_param",
                                                 bf16=group.get("lookahead_slow") == "bf16"))
                        for p in weights],
                       cache.setdefault("param", {}))]
    if group["lookahead_pullback"] == "pullback":
        key = momentum_buffer_name(optimizer, group)
        bufs, slow_bufs = [], []
        for p in params:
            buf = state.get(p, {}).get(key) if key else None
            if isinstance(buf, Tensor):
                bufs.append(local_tensor(buf))
                slow_bufs.append(local_tensor(slow_buffer(state, p, "slow_momentum", like=buf)))
        plans.append(plan_sync(bufs, slow_bufs, cache.setdefault("momentum", {})))
    return plans
