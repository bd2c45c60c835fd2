"""Lookahead's k-th step around Adam/AdamW as one pass: the inner update and the sync fused.

Every k-th step of ``Lookahead(AdamW)`` runs the inner step (read θ, g, m, v;
write θ, m, v: 28 bytes per float32 element) and then the sync (read θ, φ;
write θ, φ: 16 more). :func:`adam_sync_update` is both written once as plain
tensor code; compiled by :class:`~steplab.optim.compiler.CompiledKernel` it
reads θ, g, m, v, φ once and writes θ, m, v, φ once: 36 bytes instead of 44,
so a whole k=5 cycle moves 5·28 + 8 bytes per element instead of 5·28 + 16.

The math is torch's own AdamW step (``torch.optim.Adam``/``AdamW`` with the
operand order of torch's fused CPU kernel), then the Lookahead sync of
:mod:`steplab.optim.lookahead`; torch's state layout is untouched (``step``,
``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``slow_param``,
``slow_momentum``), so checkpoints move freely between this path and the
unfused one. :func:`fused_sync_step` takes the step only where every piece
fits (see its docstring); anywhere else it changes nothing and the caller
takes the unfused path.

>>> p, slow = torch.ones(2), torch.zeros(2)
>>> m, v = torch.zeros(2), torch.zeros(2)
>>> hp = torch.tensor([1.0, 1.0, 0.0, 0.1, 0.999, 0.001, 0.001 ** 0.5, 1e-8, -1.0, 0.5])
>>> adam_sync_update(p, torch.ones(2), m, v, slow, hp)  # η = 0.1: Adam's first step, θ = 0.9
>>> p, slow  # then φ ← φ + ½(θ − φ) and θ ← φ
(tensor([0.4500, 0.4500]), tensor([0.4500, 0.4500]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from steplab.optim.compiler import CompiledKernel
from steplab.optim.interpolate import run_sync
from steplab.optim.lookahead_sync import plan_group
from steplab.optim.paths import fused_step_choice
from steplab.optim.single_pass import Call, run_single_pass, with_l2

__all__ = [
    "FUSED_KERNEL",
    "adam_sync_coefficients",
    "adam_sync_update",
    "fused_sync_step",
    "inner_problem",
]

#: the inner optimizers whose k-th step can be fused (exact classes: a subclass may change step)
FUSABLE = (torch.optim.Adam, torch.optim.AdamW)
_DTYPES = (torch.float32, torch.float64)


def adam_sync_update(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    slow: Tensor,
    hp: Tensor,
    max_exp_avg_sq: Tensor | None = None,
    slow_momentum: Tensor | None = None,
) -> None:
    """One Adam/AdamW step followed by the Lookahead sync, in place.

    ``hp`` holds ``[sign, decay, λ_L2, 1 − β₁, β₂, 1 − β₂, √(1 − β₂ᵗ), ε, −η/(1 − β₁ᵗ), α]``
    with decay = 1 − ηλ for AdamW (1 when λ = 0 or for Adam) and λ_L2 = λ for
    Adam (0 for AdamW)::

        θ ← decay·θ;  g ← sign·grad + λ_L2·θ
        m ← m + (1−β₁)(g − m);  v ← β₂v + (1−β₂)g²;  v̂ ← max(v̂, v) (amsgrad)
        θ ← θ − η/(1−β₁ᵗ) · m / (√v̂ / √(1−β₂ᵗ) + ε)
        φ ← φ + α(θ − φ);  θ ← φ
        pullback: m_slow ← m_slow + α(m − m_slow);  m ← m_slow

    Args:
        param: θ (updated).
        grad: its gradient.
        exp_avg: m (updated).
        exp_avg_sq: v (updated).
        slow: φ, the slow weights (updated).
        hp: the coefficients above, a 1-D tensor on the parameter's device.
        max_exp_avg_sq: v̂ for ``amsgrad=True`` (updated).
        slow_momentum: m_slow for ``pullback="pullback"`` (updated).
    """
    sign, decay, l2, one_minus_beta1 = hp[0], hp[1], hp[2], hp[3]
    beta2, one_minus_beta2, bias_correction2_sqrt, eps = hp[4], hp[5], hp[6], hp[7]
    neg_step_size, alpha = hp[8], hp[9]
    theta = param * decay
    g = with_l2(sign * grad, theta, l2)
    m = torch.lerp(exp_avg, g, one_minus_beta1)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g  # torch's operand order
    exp_avg_sq.copy_(v)
    if max_exp_avg_sq is not None:
        v = torch.maximum(max_exp_avg_sq, v)
        max_exp_avg_sq.copy_(v)
    denom = v.sqrt() / bias_correction2_sqrt + eps
    synced = torch.lerp(slow, theta + neg_step_size * m / denom, alpha)
    slow.copy_(synced)
    param.copy_(synced)
    if slow_momentum is not None:
        m = torch.lerp(slow_momentum, m, alpha)
        slow_momentum.copy_(m)
    exp_avg.copy_(m)


FUSED_KERNEL = CompiledKernel("lookahead(adam) k-th", adam_sync_update, hp_index=5, read_only=(1,))


def adam_sync_coefficients(
    group: dict[str, Any], step: float, decoupled: bool
) -> tuple[float, ...]:
    """The ``hp`` vector of :func:`adam_sync_update` for one group at inner step ``step``.

    Computed in double precision like torch's fused kernel, then stored in the
    parameter's dtype.

    Args:
        group: the parameter group (Adam's hyperparameters and ``lookahead_alpha``).
        step: the inner step t this update takes (after the increment).
        decoupled: AdamW's decoupled weight decay (else Adam's L2 term).

    Returns:
        The ten coefficients.

    Example:
        >>> group = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
        ...          "maximize": False, "lookahead_alpha": 0.5}
        >>> [round(c, 4) for c in adam_sync_coefficients(group, 1.0, True)][-2:]
        [-1.0, 0.5]
    """
    lr, weight_decay = float(group["lr"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    return (
        -1.0 if group["maximize"] else 1.0,
        1.0 - lr * weight_decay if decoupled else 1.0,
        0.0 if decoupled else weight_decay,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        (1.0 - beta2**step) ** 0.5,
        float(group["eps"]),
        -lr / (1.0 - beta1**step),
        float(group["lookahead_alpha"]),
    )


def inner_problem(inner: torch.optim.Optimizer) -> str | None:
    """Why the k-th step around ``inner`` cannot be fused, or None when it can.

    Args:
        inner: the Lookahead's inner optimizer.

    Returns:
        A short reason, or None.

    Example:
        >>> inner_problem(torch.optim.SGD([torch.zeros(1, requires_grad=True)]))
        'the inner optimizer is SGD, not Adam or AdamW'
    """
    if type(inner) not in FUSABLE:  # ZeRO, a subclass, another rule
        return f"the inner optimizer is {type(inner).__name__}, not Adam or AdamW"
    from torch.optim import optimizer as torch_optimizer

    hooks = (inner._optimizer_step_pre_hooks, inner._optimizer_step_post_hooks,
             torch_optimizer._global_optimizer_pre_hooks,
             torch_optimizer._global_optimizer_post_hooks)
    if any(hooks):
        return "the inner optimizer has step hooks, which only its own step runs"
    if any(getattr(inner, key, None) is not None for key in ("grad_scale", "found_inf")):
        return "a GradScaler drives the inner optimizer's step"
    for group in inner.param_groups:
        if group.get("capturable") or group.get("differentiable"):
            return "capturable=/differentiable= groups"
        if group.get("lookahead_slow", "fp32") != "fp32":
            return "slow weights kept in bfloat16"
    return None


def _buffers_fit(p: Tensor, buffers: dict[str, Any], keys: Sequence[str]) -> bool:
    """Whether ``p``'s buffers ``keys`` exist with ``p``'s shape, dtype and device."""
    for key in keys:
        t = buffers.get(key)
        if not isinstance(t, Tensor) or t.shape != p.shape or t.dtype != p.dtype or (
                t.device != p.device):
            return False
    return True


def _param_fits(p: Tensor, buffers: dict[str, Any], keys: Sequence[str]) -> bool:
    grad = p.grad
    return (
        type(p) in (Tensor, torch.nn.Parameter)  # no DTensor or other subclass: it falls back
        and p.dtype in _DTYPES
        and grad is not None
        and not grad.is_sparse
        and grad.dtype == p.dtype
        and grad.shape == p.shape
        and grad.device == p.device
        and isinstance(buffers.get("step"), Tensor)
        and _buffers_fit(p, buffers, keys)
    )


def _plan(
    inner: torch.optim.Optimizer, state: Any, groups: list[tuple[dict[str, Any], list[Tensor]]]
) -> tuple[list[Call], list[Tensor], list[tuple[dict[str, Any], list[Tensor]]]] | None:
    """The kernel calls, the step counters to bump, and each group's parameters without a
    gradient (synced only); None when some parameter does not fit."""
    calls: list[Call] = []
    steps: list[Tensor] = []
    idle: list[tuple[dict[str, Any], list[Tensor]]] = []
    decoupled_default = isinstance(inner, torch.optim.AdamW)
    for group, params in groups:
        amsgrad, pullback = bool(group["amsgrad"]), group["lookahead_pullback"] == "pullback"
        keys = ["exp_avg", "exp_avg_sq", "slow_param"]
        keys += ["max_exp_avg_sq"] if amsgrad else []
        keys += ["slow_momentum"] if pullback else []
        decoupled = bool(group.get("decoupled_weight_decay", decoupled_default))
        hps: dict[tuple[float, torch.dtype, torch.device], Tensor] = {}
        no_grad: list[Tensor] = []
        for p in params:
            buffers = state.get(p, {})
            if p.grad is None:
                no_grad.append(p)
                continue
            if not _param_fits(p, buffers, keys):
                return None
            t = float(buffers["step"]) + 1.0
            key = (t, p.dtype, p.device)
            if key not in hps:
                hp = torch.tensor(adam_sync_coefficients(group, t, decoupled), dtype=p.dtype,
                                  device=p.device)
                torch._dynamo.mark_static(hp, 0)
                hps[key] = hp
            calls.append((p, p.grad, buffers["exp_avg"], buffers["exp_avg_sq"],
                          buffers["slow_param"], hps[key],
                          buffers["max_exp_avg_sq"] if amsgrad else None,
                          buffers["slow_momentum"] if pullback else None))
            steps.append(buffers["step"])
        idle.append((group, no_grad))
    return calls, steps, idle


@torch.no_grad()
def fused_sync_step(
    inner: torch.optim.Optimizer, state: Any, groups: list[tuple[dict[str, Any], list[Tensor]]]
) -> bool:
    """Take the inner Adam/AdamW step and the Lookahead sync of every group in one pass.

    Taken only when the inner optimizer is a plain ``Adam``/``AdamW``
    (:func:`inner_problem`), every parameter with a gradient has its full
    state (no lazy initialisation due), is a plain float32/float64 tensor
    whose gradient and buffers match it, and
    :func:`~steplab.optim.paths.fused_step_choice` takes it (``STEPLAB_COMPILE``
    and the size threshold of the single-pass steps; ``auto`` keeps CPU unfused).
    Parameters without a gradient are only synced, as the unfused path does.
    The step counters advance as torch's do. Anything else, or a failed
    compile (one ``RuntimeWarning``), returns False with nothing changed.
    The caller advances ``lookahead_step`` and applies ``"reset"``.

    Args:
        inner: the Lookahead's inner optimizer.
        state: its per-parameter state (with the slow buffers).
        groups: every group with its parameters.

    Returns:
        True when the step and the sync were taken here.
    """
    if inner_problem(inner) is not None:
        return False
    params = [p for _, ps in groups for p in ps]
    devices = {p.device.type for p in params}
    if len(devices) != 1 or not fused_step_choice(sum(p.numel() for p in params),
                                                  devices.pop(), len(params))[0]:
        return False
    plan = _plan(inner, state, groups)
    if plan is None or not plan[0]:
        return False
    calls, steps, idle = plan
    # parameters without a gradient take no inner step but are synced: checked before any change
    idle_blocks = [(float(group["lookahead_alpha"]), blocks) for group, ps in idle if ps
                   for blocks in plan_group(inner, state, group, ps)]
    if not run_single_pass(FUSED_KERNEL, calls):
        return False
    torch._foreach_add_(steps, 1.0)
    for alpha, blocks in idle_blocks:
        run_sync(blocks, alpha)
    return True
