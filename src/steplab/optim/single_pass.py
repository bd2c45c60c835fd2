"""RMSprop and NAdam in one pass over memory: plain tensor code, compiled once.

torch has no fused kernel for RMSprop or NAdam: its for-loop and foreach paths
run one memory pass per tensor op (five to nine of them). The update functions
below are the same math written once as ordinary tensor code; compiled by
:class:`~steplab.optim.compiler.CompiledKernel` they become one loop that reads
parameter, gradient and state once and writes parameter and state once.

:class:`SinglePassRMSprop` and :class:`SinglePassNAdam` subclass torch's classes
and replace only ``step``: hyperparameters, parameter groups, lazily created
state and ``state_dict()`` are torch's own, so checkpoints move freely between
this path and torch's. When a step cannot take the compiled kernel (compiling
failed, ``capturable=``/``differentiable=``, sparse gradients) the whole step is
torch's.

>>> w = torch.nn.Parameter(torch.ones(3))
>>> w.grad = torch.ones(3)
>>> opt = SinglePassRMSprop([w], lr=0.01)
>>> sorted(opt.state_dict()["state"][0]) if opt.step() is None else None
['square_avg', 'step']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils.weak import WeakTensorKeyDictionary

from steplab.optim.closure import evaluate_closure
from steplab.optim.compiler import CompiledKernel

__all__ = [
    "SinglePassNAdam",
    "SinglePassRMSprop",
    "flat_alias",
    "nadam_update",
    "rmsprop_update",
    "with_l2",
]


def with_l2(grad: Tensor, param: Tensor, weight_decay: Tensor) -> Tensor:
    """``grad + λ·param``, or ``grad`` itself when λ = 0, as torch's ``if weight_decay != 0``.

    Adding ``0·param`` instead would turn an infinite parameter into NaN
    (∞·0) where torch's step leaves the gradient alone.

    Args:
        grad: the (sign-adjusted) gradient.
        param: the parameter.
        weight_decay: λ, a 0-d tensor.

    Returns:
        The gradient with the L2 term where λ ≠ 0.

    Example:
        >>> with_l2(torch.tensor([1.0]), torch.tensor([float("inf")]), torch.tensor(0.0))
        tensor([1.])
    """
    return torch.where(weight_decay != 0, grad + weight_decay * param, grad)


def rmsprop_update(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    hp: Tensor,
    grad_avg: Tensor | None = None,
    momentum_buffer: Tensor | None = None,
) -> None:
    """One RMSprop step in place, as ``torch.optim.RMSprop`` computes it.

    ``hp`` holds ``[lr, alpha, 1 − alpha, eps, weight_decay, momentum, sign]``
    (sign −1 for ``maximize``): g = sign·grad + λθ; v ← αv + (1−α)g²;
    centered: ḡ ← ḡ + (1−α)(g − ḡ), D = √(v − ḡ²) + ε, else D = √v + ε;
    momentum: b ← μb + g/D, θ ← θ − ηb; else θ ← θ − ηg/D.

    Args:
        param: parameter (updated).
        grad: its gradient.
        square_avg: v (updated).
        hp: the hyperparameters above, a 1-D tensor on the parameter's device.
        grad_avg: ḡ for ``centered=True`` (updated).
        momentum_buffer: b for ``momentum > 0`` (updated).
    """
    lr, alpha, one_minus_alpha, eps = hp[0], hp[1], hp[2], hp[3]
    weight_decay, momentum, sign = hp[4], hp[5], hp[6]
    g = with_l2(sign * grad, param, weight_decay)
    v = square_avg * alpha + one_minus_alpha * g * g  # addcmul's order: (1−α)·g first
    square_avg.copy_(v)
    if grad_avg is not None:
        g_avg = torch.lerp(grad_avg, g, one_minus_alpha)
        grad_avg.copy_(g_avg)
        denom = (v - g_avg * g_avg).sqrt() + eps
    else:
        denom = v.sqrt() + eps
    if momentum_buffer is not None:
        buf = momentum_buffer * momentum + g / denom
        momentum_buffer.copy_(buf)
        param.copy_(param - lr * buf)
    else:
        param.copy_(param - lr * g / denom)  # addcdiv's order: (η·g)/D


def nadam_update(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, hp: Tensor
) -> None:
    """One NAdam step in place, as ``torch.optim.NAdam`` computes it.

    ``hp`` holds ``[sign, decay, weight_decay, 1 − β₁, β₂, 1 − β₂, 1 − β₂ᵗ, eps,
    c_g, c_m]`` with decay = 1 − ηλ when weight decay is decoupled (else 1 and
    λ is L2), c_g = −η(1 − μ_t)/(1 − Π_t), c_m = −ημ_{t+1}/(1 − Π_t μ_{t+1}):
    θ ← decay·θ; g = sign·grad + λθ; m ← m + (1−β₁)(g − m); v ← β₂v + (1−β₂)g²;
    D = √(v/(1−β₂ᵗ)) + ε; θ ← θ + c_g·g/D + c_m·m/D.

    Args:
        param: parameter (updated).
        grad: its gradient.
        exp_avg: m (updated).
        exp_avg_sq: v (updated).
        hp: the coefficients above, a 1-D tensor on the parameter's device.
    """
    sign, decay, weight_decay, one_minus_beta1 = hp[0], hp[1], hp[2], hp[3]
    beta2, one_minus_beta2, bias_correction2, eps = hp[4], hp[5], hp[6], hp[7]
    c_grad, c_avg = hp[8], hp[9]
    theta = param * decay
    g = with_l2(sign * grad, theta, weight_decay)
    m = torch.lerp(exp_avg, g, one_minus_beta1)
    v = exp_avg_sq * beta2 + one_minus_beta2 * g * g  # addcmul's order, as torch
    exp_avg.copy_(m)
    exp_avg_sq.copy_(v)
    denom = (v / bias_correction2).sqrt() + eps
    param.copy_(theta + c_grad * g / denom + c_avg * m / denom)  # addcdiv's order


RMSPROP_KERNEL = CompiledKernel("rmsprop", rmsprop_update, hp_index=3, read_only=(1,))
NADAM_KERNEL = CompiledKernel("nadam", nadam_update, hp_index=4, read_only=(1,))

#: one call of a kernel: its positional arguments, None for an absent optional buffer
Call = tuple[Tensor | None, ...]


def _hp_dtype(param: Tensor) -> torch.dtype:
    return torch.float64 if param.dtype == torch.float64 else torch.float32


_FLAT: WeakTensorKeyDictionary = WeakTensorKeyDictionary()


def flat_alias(t: Tensor) -> Tensor:
    """A 1-D alias of a contiguous tensor's memory that is not a view.

    Compiling over ``t.view(-1)`` would guard on the view's base shape (one graph
    per rank and size); an alias made with ``set_`` has no base, so every tensor
    is just a length. Aliases are kept per tensor while its storage stays put.

    Args:
        t: a contiguous tensor.

    Returns:
        A 1-D tensor over the same memory (writes to it change ``t``).
    """
    cached = _FLAT.get(t)  # type: ignore[no-untyped-call]
    if cached is not None and cached.data_ptr() == t.data_ptr():
        return cast(Tensor, cached)
    alias = torch.empty(0, dtype=t.dtype, device=t.device)
    alias.set_(t.untyped_storage(), t.storage_offset(), (t.numel(),), (1,))
    _FLAT[t] = alias
    return alias


def _as_real(call: Call, hp_index: int) -> tuple[Call, bool]:
    """Complex tensors as real views; whether every tensor can be viewed flat."""
    real = tuple(
        t if t is None or i == hp_index else torch.view_as_real(t.detach()) if t.is_complex() else t
        for i, t in enumerate(call)
    )
    head = real[0]
    flat = head is not None and head.numel() > 0
    return real, flat and all(t is None or t.is_contiguous() for t in real)


def run_single_pass(kernel: CompiledKernel, calls: list[Call]) -> bool:
    """Run every call through the compiled kernel; False (nothing touched) if it is unavailable.

    Each variant (which optional buffers, dtype, device) is compiled before any
    real tensor is touched, so a failed compile leaves the whole step to torch.
    Tensors that cannot be viewed flat (non-contiguous, empty) run the same
    function eagerly.

    Args:
        kernel: the compiled update.
        calls: its positional arguments per parameter.

    Returns:
        True when the step was taken here.
    """
    hp_at = kernel.hp_index
    variants: dict[tuple[Any, ...], list[Call]] = {}  # flat calls by compiled variant
    eager: list[Call] = []
    for call, flat in (_as_real(call, hp_at) for call in calls):
        param = call[0]
        assert param is not None
        if not flat:
            eager.append(call)
            continue
        key = (tuple(t is None for t in call), param.dtype, param.device)
        if key not in variants:
            compiled = key in kernel.compile_seconds  # scratch tensors only for a first compile
            if not compiled and not kernel.ready(key, kernel.scratch(call), param.device):
                return False
            variants[key] = []
        variants[key].append(call)
    for call in eager:
        kernel.eager(*call)
    written = [t for group in variants.values() for call in group for t in kernel.written(call)]
    for key, group in variants.items():
        flat_calls = [tuple(t if t is None or i == hp_at else flat_alias(t)
                            for i, t in enumerate(call)) for call in group]
        kernel.run(key, flat_calls)
    # the kernel wrote through aliases, which autograd does not see: bump the version
    # counters as torch's in-place ops do, so a tensor saved for backward is caught
    torch.autograd.graph.increment_version(written)
    return True


def _plain_groups(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every group is one the kernels handle (not capturable, not differentiable)."""
    return not any(g.get("capturable") or g.get("differentiable") for g in optimizer.param_groups)


class _HyperCache:
    """One hyperparameter tensor per (values, dtype, device) within a step."""

    def __init__(self) -> None:
        self._made: dict[tuple[Any, ...], Tensor] = {}

    def get(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        dtype = _hp_dtype(torch.view_as_real(like) if like.is_complex() else like)
        key = (values, dtype, like.device)
        if key not in self._made:
            hp = torch.tensor(values, dtype=dtype, device=like.device)
            torch._dynamo.mark_static(hp, 0)  # a fixed length: no symbol, no guard on it
            self._made[key] = hp
        return self._made[key]


class SinglePassRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` whose step is one compiled pass over memory.

    Same arguments, defaults, parameter groups and state dict as torch's class
    (see :func:`rmsprop_update` for the math); only the step is computed
    differently, and it falls back to torch's own step where the kernel is not
    available.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = SinglePassRMSprop([w], lr=0.1, momentum=0.9, centered=True)
        >>> w.grad = torch.tensor([0.5, 0.5])
        >>> opt.step()
        >>> sorted(opt.state[w])
        ['grad_avg', 'momentum_buffer', 'square_avg', 'step']
    """

    #: the class whose state layout this one keeps (checkpoints record it)
    state_class: type[torch.optim.Optimizer] = torch.optim.RMSprop

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one step; see ``torch.optim.RMSprop.step``.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or None.
        """
        if not _plain_groups(self):
            return cast(float | None, super().step(closure))
        loss = evaluate_closure(closure)
        calls: list[Call] = []
        steps: list[Tensor] = []
        hyper = _HyperCache()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            avgs: list[Tensor] = []
            bufs: list[Tensor] = []
            g_avgs: list[Tensor] = []
            self._init_group(group, params, grads, avgs, bufs, g_avgs, steps)  # type: ignore[no-untyped-call]
            alpha, momentum = float(group["alpha"]), float(group["momentum"])
            values = (
                float(group["lr"]),
                alpha,
                1.0 - alpha,
                float(group["eps"]),
                float(group["weight_decay"]),
                momentum,
                -1.0 if group["maximize"] else 1.0,
            )
            for i, p in enumerate(params):
                calls.append(
                    (
                        p,
                        grads[i],
                        avgs[i],
                        hyper.get(values, p),
                        g_avgs[i] if group["centered"] else None,
                        bufs[i] if momentum > 0 else None,
                    )
                )
        if not run_single_pass(RMSPROP_KERNEL, calls):
            super().step()
            return loss
        if steps:
            torch._foreach_add_(steps, 1.0)
        return loss


def _nadam_coefficients(group: dict[str, Any], step: float, mu_product: float) -> tuple[float, ...]:
    """The hyperparameter vector of :func:`nadam_update` for one parameter's step t."""
    lr, (beta1, beta2) = float(group["lr"]), group["betas"]
    weight_decay, psi = float(group["weight_decay"]), float(group["momentum_decay"])
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * psi))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * psi))
    decoupled = bool(group["decoupled_weight_decay"])
    return (
        -1.0 if group["maximize"] else 1.0,
        1.0 - lr * weight_decay if decoupled else 1.0,
        0.0 if decoupled else weight_decay,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        1.0 - beta2**step,
        float(group["eps"]),
        -lr * (1.0 - mu) / (1.0 - mu_product),
        (-lr * mu_next) / (1.0 - mu_product * mu_next),
    )


class SinglePassNAdam(torch.optim.NAdam):
    """``torch.optim.NAdam`` whose step is one compiled pass over memory.

    Same arguments, defaults, parameter groups and state dict as torch's class
    (see :func:`nadam_update` for the math); ``step`` and ``mu_product`` stay
    torch's float32 scalars, updated exactly as torch does.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = SinglePassNAdam([w], lr=0.1)
        >>> w.grad = torch.tensor([0.5, 0.5])
        >>> opt.step()
        >>> sorted(opt.state[w])
        ['exp_avg', 'exp_avg_sq', 'mu_product', 'step']
    """

    #: the class whose state layout this one keeps (checkpoints record it)
    state_class: type[torch.optim.Optimizer] = torch.optim.NAdam

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one step; see ``torch.optim.NAdam.step``.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or None.
        """
        if not _plain_groups(self):
            return cast(float | None, super().step(closure))
        loss = evaluate_closure(closure)
        calls: list[Call] = []
        steps: list[Tensor] = []
        products: list[tuple[Tensor, Tensor]] = []
        hyper = _HyperCache()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            avgs: list[Tensor] = []
            sqs: list[Tensor] = []
            mus: list[Tensor] = []
            group_steps: list[Tensor] = []
            self._init_group(group, params, grads, avgs, sqs, mus, group_steps)  # type: ignore[no-untyped-call]
            beta1 = group["betas"][0]
            memo: dict[tuple[float, float], tuple[Tensor, tuple[float, ...]]] = {}
            for i, p in enumerate(params):
                key = (group_steps[i].item() + 1.0, mus[i].item())
                if key not in memo:
                    mu = beta1 * (1.0 - 0.5 * 0.96 ** (key[0] * group["momentum_decay"]))
                    new_product = mus[i] * mu  # float32, as torch's `mu_product *= mu`
                    coeffs = _nadam_coefficients(group, key[0], new_product.item())
                    memo[key] = (new_product, coeffs)
                new_product, coeffs = memo[key]
                calls.append((p, grads[i], avgs[i], sqs[i], hyper.get(coeffs, p)))
                products.append((mus[i], new_product))
            steps.extend(group_steps)
        if not run_single_pass(NADAM_KERNEL, calls):
            super().step()
            return loss
        if steps:
            torch._foreach_add_(steps, 1.0)
        for product, new_product in products:
            product.copy_(new_product)
        return loss
