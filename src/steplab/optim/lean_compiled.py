"""Adam/AdamW/AMSGrad with bf16 moments in one compiled pass over memory.

The pure path (:mod:`steplab.optim.lean_chunks`) widens each chunk's bf16
moments into float32 scratch, runs torch's fused kernel and rounds them back:
on CPU torch's fused AdamW is bound by its arithmetic (a square root and two
divisions per element), and the four conversion passes add most of a fused
step on top. :func:`bf16_adam_update` is the same step written once as plain
tensor code; compiled by :class:`~steplab.optim.compiler.CompiledKernel` it
reads θ, g and the bf16 moments once, computes in float32 with the operand
order of torch's fused CPU kernel, and writes θ and the moments rounded to
nearest even (``copy_`` into bf16, as the pure path's ``_foreach_copy_``), 20
bytes per element instead of fused fp32's 28.

It is taken where :func:`steplab.optim.paths.compile_choice` says a compile
pays (``STEPLAB_COMPILE``: ``auto`` from 1M parameter elements, ``always``,
``never``), for float32 parameters with dense float32 gradients; a failed
compile warns once and the step takes the pure path. The state layout and
step counter are the pure path's, so checkpoints move freely between the two.

>>> p, g = torch.ones(2), torch.ones(2)
>>> m, v = torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16)
>>> hp = torch.tensor(adam_coefficients({"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8,
...     "weight_decay": 0.0, "maximize": False}, 1.0, decoupled=True))
>>> bf16_adam_update(p, g, m, v, hp)  # Adam's first step moves θ by η
>>> p, m
(tensor([0.9000, 0.9000]), tensor([0.1001, 0.1001], dtype=torch.bfloat16))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from steplab.optim.compiler import CompiledKernel
from steplab.optim.single_pass import Call, with_l2

__all__ = ["BF16_ADAM_KERNEL", "adam_coefficients", "bf16_adam_call", "bf16_adam_update"]


def bf16_adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                     hp: Tensor, max_exp_avg_sq: Tensor | None = None) -> None:
    """One Adam/AdamW step in place on float32 ``param`` with bf16 moments.

    ``hp`` holds ``[sign, decay, λ_L2, 1 − β₁, β₂, 1 − β₂, √(1 − β₂ᵗ), ε, −η/(1 − β₁ᵗ)]``
    (:func:`adam_coefficients`); in float32::

        θ ← decay·θ;  g ← sign·grad + λ_L2·θ
        m ← m + (1−β₁)(g − m);  v ← β₂v + (1−β₂)g²;  v̂ ← max(v̂, v) (amsgrad)
        θ ← θ − η/(1−β₁ᵗ) · m / (√v̂ / √(1−β₂ᵗ) + ε)

    and m, v (and v̂) are stored rounded to bf16.

    Args:
        param: θ, float32 (updated).
        grad: its float32 gradient.
        exp_avg: m, bf16 (updated).
        exp_avg_sq: v, bf16 (updated).
        hp: the coefficients above, a float32 1-D tensor.
        max_exp_avg_sq: v̂, bf16, for ``amsgrad=True`` (updated).
    """
    sign, decay, l2, one_minus_beta1 = hp[0], hp[1], hp[2], hp[3]
    beta2, one_minus_beta2, bias_correction2_sqrt, eps = hp[4], hp[5], hp[6], hp[7]
    neg_step_size = hp[8]
    theta = param * decay
    g = with_l2(sign * grad, theta, l2)
    m = torch.lerp(exp_avg.float(), g, one_minus_beta1)
    v = exp_avg_sq.float() * beta2 + one_minus_beta2 * g * g  # torch's operand order
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    if max_exp_avg_sq is not None:
        v = torch.maximum(max_exp_avg_sq.float(), v)
        max_exp_avg_sq.copy_(v)
    denom = v.sqrt() / bias_correction2_sqrt + eps
    param.copy_(theta + neg_step_size * m / denom)


BF16_ADAM_KERNEL = CompiledKernel("adam(state=bf16)", bf16_adam_update, hp_index=4,
                                  read_only=(1,), wide_lowp=True)


def adam_coefficients(group: dict[str, Any], step: float, decoupled: bool) -> tuple[float, ...]:
    """The ``hp`` vector of :func:`bf16_adam_update` for one group at step ``step``.

    Computed in double precision like torch's fused kernel.

    Args:
        group: the parameter group (``lr``, ``betas``, ``eps``, ``weight_decay``,
            ``maximize``).
        step: the step t this update takes (after the increment).
        decoupled: AdamW's decoupled weight decay (else Adam's L2 term).

    Returns:
        The nine coefficients.

    Example:
        >>> group = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.5,
        ...          "maximize": True}
        >>> [round(c, 4) for c in adam_coefficients(group, 1.0, True)][:3]
        [-1.0, 0.95, 0.0]
    """
    lr, weight_decay = float(group["lr"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    return (-1.0 if group["maximize"] else 1.0,
            1.0 - lr * weight_decay if decoupled else 1.0,
            0.0 if decoupled else weight_decay,
            1.0 - beta1, beta2, 1.0 - beta2, (1.0 - beta2**step) ** 0.5,
            float(group["eps"]), -lr / (1.0 - beta1**step))


def bf16_adam_call(p: Tensor, state: dict[str, Any], hp: Tensor, amsgrad: bool) -> Call | None:
    """The kernel's arguments for ``p``, or None where the compiled step does not apply.

    It applies to a float32 parameter with a dense float32 gradient of its
    shape and bf16 moments (a bf16 parameter keeps Kahan compensation on the
    pure path).

    Args:
        p: the parameter.
        state: its optimizer state (``exp_avg``, ``exp_avg_sq``[, ``max_exp_avg_sq``]).
        hp: the group's coefficients for this step.
        amsgrad: whether ``max_exp_avg_sq`` is kept.

    Returns:
        ``(param, grad, exp_avg, exp_avg_sq, hp, max_exp_avg_sq or None)`` or None.
    """
    grad = p.grad
    names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())
    moments = [state.get(name) for name in names]
    if (p.dtype != torch.float32 or grad is None or grad.is_sparse
            or grad.dtype != torch.float32 or grad.shape != p.shape
            or not grad.is_contiguous() or "kahan_comp" in state
            or not all(isinstance(m, Tensor) and m.dtype == torch.bfloat16 for m in moments)):
        return None
    return (p.detach(), grad.detach(), moments[0], moments[1], hp,
            moments[2] if amsgrad else None)
