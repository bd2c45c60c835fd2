"""Adam, AdamW, AMSGrad and SGD momentum with their state in bf16, 8 or 4 bits.

The update rule is torch's own fused CPU/GPU kernel (``torch._fused_adam_``,
``_fused_adamw_``, ``_fused_sgd_``), run over the parameter in chunks: each
chunk's moments are decoded to float32 scratch, updated by the kernel exactly
as ``torch.optim.AdamW(fused=True)`` would, and encoded back (rounded to
bf16, or block-wise quantised, see :mod:`steplab.optim.quantize`). Chunks are
sized so the scratch of a step stays within :data:`PEAK_FRACTION` of the state
(for states of more than about 2.5 MB; smaller ones use chunks of 8,192
elements, about 120 KiB of scratch, since per-chunk overhead dominates there),
and at most 262,144 elements, so a chunk's float32 moments stay in cache
while a chunk is decoded, updated and encoded (each pass over a chunk is then
a cache pass, not a memory one). All views a chunk needs are made before the
loop, and one :class:`~steplab.optim.quantize.BlockCodec` codes all of a
parameter's moments together: a quantised chunk costs about fifteen torch
calls for Adam's two moments, four of them table lookups.

With ``state=bf16`` and float32 parameters, Adam/AdamW/AMSGrad take the
compiled single-pass step of :mod:`steplab.optim.lean_compiled` where
``STEPLAB_COMPILE`` says a compile pays (decided when the optimizer is
built): one loop reads and writes each element once, where the chunked path
adds four bf16 conversion passes to torch's kernel.

bf16 and fp16 *parameters* are updated with Kahan-compensated summation
(Zamirai et al. 2020, arXiv:2010.06192): the state keeps ``kahan_comp``, the
rounding error of the last write in the parameter's dtype, the kernel updates
``θ + c`` in float32 and the result is split again into ``θ = round(θ')`` and
``c = round(θ' − θ)``. Stochastic rounding would save those 2 bytes per
parameter but draws a random number per element per step (slow on CPU) and
makes a bit-exact resume depend on a generator state; compensation is
deterministic and keeps updates far below one bf16 ulp (see
docs/benchmarks.md, "lean state").

>>> model = torch.nn.Linear(64, 128)
>>> opt = LeanAdam(model.parameters(), lr=1e-3, weight_decay=0.01, decoupled=True, state="int8")
>>> model(torch.ones(2, 64)).sum().backward(); opt.step()
>>> sorted(opt.state[model.weight])
['exp_avg_absmax', 'exp_avg_codes', 'exp_avg_sq_absmax', 'exp_avg_sq_codes', 'step']
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from steplab.errors import SpecError
from steplab.optim.closure import evaluate_closure
from steplab.optim.lean_buffers import LeanBuffer, read_buffer
from steplab.optim.lean_chunks import (
    PEAK_FRACTION,
    LeanOptimizer,
    check_min_size,
    check_state,
)
from steplab.optim.lean_compiled import BF16_ADAM_KERNEL, adam_coefficients, bf16_adam_call
from steplab.optim.paths import compile_choice
from steplab.optim.quantize import MIN_QUANTIZED_NUMEL
from steplab.optim.single_pass import Call, run_single_pass

__all__ = ["PEAK_FRACTION", "LeanAdam", "LeanSGD", "create_lean", "lean_bytes_per_param",
           "read_buffer"]


def lean_bytes_per_param(buffers: Iterable[str], state: str, numel: int = 1 << 22) -> float:
    """State bytes per parameter element of a tensor of ``numel`` elements.

    >>> round(lean_bytes_per_param(("exp_avg", "exp_avg_sq"), "int8"), 4)
    2.0312
    >>> round(lean_bytes_per_param(("exp_avg", "exp_avg_sq"), "int4"), 4)
    1.0625
    """
    return sum(LeanBuffer(b, state, numel).bytes() for b in buffers) / numel


def _adam_chunk(fused: Any, options: dict[str, Any], steps: list[Tensor], param: Tensor,
                grad: Tensor, moments: list[Tensor]) -> None:
    """torch's fused Adam/AdamW kernel on one chunk (``options``: its keyword arguments)."""
    fused([param], [grad], moments[:1], moments[1:2], moments[2:], steps, **options)


class LeanAdam(LeanOptimizer):
    r"""Adam / AdamW / AMSGrad with moments kept in fp32, bf16, int8 or int4.

    The rule is torch's (``decoupled=False``: Adam, L2 added to g; ``True``: AdamW)::

        m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  [v_max ← max(v_max, v)]
        θ ← θ − η m/(1−β₁ᵗ) / (√(v[_max]/(1−β₂ᵗ)) + ε)

    with ``m``, ``v`` (and ``v_max``) decoded before and encoded after each step.

    Args:
        params: tensors or param-group dicts.
        lr: learning rate η (default 1e-3).
        betas: (β₁, β₂) (default (0.9, 0.999)).
        eps: ε (default 1e-8).
        weight_decay: λ (default 0).
        amsgrad: keep ``max_exp_avg_sq`` (default False).
        decoupled: AdamW's decoupled decay θ ← θ(1 − ηλ) (default False).
        state: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``"int4"`` (default ``"int8"``).
        maximize: ascend instead of descend (default False).
        min_size: tensors with fewer elements keep float32 moments under
            ``int8``/``int4`` (default 4096, as bitsandbytes' ``min_8bit_size``).

    Raises:
        SpecError: a bad ``state``, ``min_size`` or hyperparameter.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(8192))
        >>> opt = LeanAdam([w], lr=0.1, state="int4")
        >>> w.grad = torch.ones(8192); opt.step()
        >>> round(w[0].item(), 4), opt.state_bytes()
        (0.9, 8708)
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, decoupled: bool = False,
                 state: str = "int8", maximize: bool = False,
                 min_size: int = MIN_QUANTIZED_NUMEL) -> None:
        if not (lr > 0 and eps >= 0 and weight_decay >= 0 and all(0 <= b < 1 for b in betas)):
            raise SpecError(f"LeanAdam: got lr={lr}, betas={betas}, eps={eps}, weight_decay="
                            f"{weight_decay}; expected lr > 0, betas in [0, 1), eps, decay >= 0")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "decoupled": decoupled, "state": check_state(state),
                    "maximize": maximize, "min_size": check_min_size(min_size)}
        super().__init__(params, defaults)
        held = [p for g in self.param_groups for p in g["params"]]
        #: bf16 groups take the single-pass compiled step (decided once: same spec, same path)
        self._compile = any(g["state"] == "bf16" for g in self.param_groups) and bool(
            held) and compile_choice(sum(p.numel() for p in held), held[0].device.type,
                                     len(held))[0]

    def _compiled_call(self, group: dict[str, Any], p: Tensor, step: float,
                       hps: dict[tuple[int, float], Tensor]) -> Call | None:
        """The compiled bf16 kernel's call for ``p``, or None for the chunked path."""
        if group["state"] != "bf16":
            return None
        key = (id(group), step)
        if key not in hps:
            hp = torch.tensor(adam_coefficients(group, step, group["decoupled"]),
                              dtype=torch.float32, device=p.device)
            torch._dynamo.mark_static(hp, 0)
            hps[key] = hp
        return bf16_adam_call(p, self.state[p], hps[key], group["amsgrad"])

    def _buffers(self, group: dict[str, Any], p: Tensor) -> list[LeanBuffer]:
        names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
        return [LeanBuffer(name, group["state"], p.numel(), group["min_size"]) for name in names]

    @property
    def buffer_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """Moment buffers (with ``max_exp_avg_sq`` when any group uses AMSGrad)."""
        ams = any(g["amsgrad"] for g in self.param_groups)
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if ams else ())

    def _init_state(self, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
        step = self.state[p].get("step")
        state = super()._init_state(group, p)
        state["step"] = step if isinstance(step, Tensor) else torch.tensor(
            0.0, dtype=torch.float32, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One Adam step for every parameter with a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or None.
        """
        loss = evaluate_closure(closure)
        todo, work, chunk = self._prepare()
        calls: list[Call] = []
        pure, compiled = [], []
        hps: dict[tuple[int, float], Tensor] = {}
        for group, p in todo:
            step = self.state[p]["step"]
            step.add_(1)
            call = self._compiled_call(group, p, float(step), hps) if self._compile else None
            if call is None:
                pure.append((group, p))
            else:
                calls.append(call)
                compiled.append((group, p))
        if calls and not run_single_pass(BF16_ADAM_KERNEL, calls):
            pure += compiled  # the compile failed (one warning): nothing was touched
        for group, p in pure:
            assert work is not None
            step = self.state[p]["step"]
            fused = torch._fused_adamw_ if group["decoupled"] else torch._fused_adam_
            options = {"amsgrad": group["amsgrad"], "lr": float(group["lr"]),
                       "beta1": group["betas"][0], "beta2": group["betas"][1],
                       "weight_decay": group["weight_decay"], "eps": group["eps"],
                       "maximize": group["maximize"], "grad_scale": None, "found_inf": None}
            self._run_chunks(group, p, work, chunk,
                             functools.partial(_adam_chunk, fused, options, [step]))
        return loss


class LeanSGD(LeanOptimizer):
    r"""SGD with momentum (heavy ball or Nesterov) and its buffer in fp32, bf16, int8 or int4.

    The rule is torch's: ``b ← μb + (1−τ)g`` (``b = g`` at the first step);
    ``θ ← θ − η(g + μb)`` with Nesterov, else ``θ ← θ − ηb``; L2 decay adds λθ to g.

    Args:
        params: tensors or param-group dicts.
        lr: learning rate η (default 0.01).
        momentum: μ, > 0 (default 0.9).
        dampening: τ (default 0).
        weight_decay: λ (default 0).
        nesterov: Nesterov's form (default False).
        state: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``"int4"`` (default ``"int8"``).
        maximize: ascend instead of descend (default False).
        min_size: tensors with fewer elements keep a float32 buffer under
            ``int8``/``int4`` (default 4096).

    Raises:
        SpecError: a bad ``state``, ``min_size`` or hyperparameter.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(8192))
        >>> opt = LeanSGD([w], lr=0.1, momentum=0.9, state="int8")
        >>> w.grad = torch.ones(8192); opt.step(); opt.step()
        >>> round(w[0].item(), 4)
        0.71
    """

    buffer_names = ("momentum_buffer",)

    def __init__(self, params: Iterable[Any], lr: float = 0.01, momentum: float = 0.9,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 state: str = "int8", maximize: bool = False,
                 min_size: int = MIN_QUANTIZED_NUMEL) -> None:
        if not (lr > 0 and 0 < momentum <= 1 and 0 <= dampening <= 1 and weight_decay >= 0):
            raise SpecError(f"LeanSGD: got lr={lr}, momentum={momentum}, dampening={dampening},"
                            f" weight_decay={weight_decay}; expected lr > 0, momentum in (0, 1],"
                            " dampening in [0, 1], weight_decay >= 0")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov,
                    "state": check_state(state), "maximize": maximize,
                    "min_size": check_min_size(min_size)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One momentum step for every parameter with a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or None.
        """
        loss = evaluate_closure(closure)
        fresh = {p for g in self.param_groups for p in g["params"] if not self._complete(g, p)}
        todo, work, chunk = self._prepare()
        for group, p in todo:
            assert work is not None

            def kernel(param: Tensor, grad: Tensor, moments: list[Tensor],
                       group: dict[str, Any] = group, first: bool = p in fresh) -> None:
                torch._fused_sgd_([param], [grad], moments, weight_decay=group["weight_decay"],
                                  momentum=group["momentum"], lr=float(group["lr"]),
                                  dampening=group["dampening"], nesterov=group["nesterov"],
                                  maximize=group["maximize"], is_first_step=first,
                                  grad_scale=None, found_inf=None)

            self._run_chunks(group, p, work, chunk, kernel)
        return loss


def create_lean(name: str, groups: list[dict[str, Any]],
                kwargs: dict[str, Any]) -> LeanAdam | LeanSGD:
    """Build the lean optimizer for a registry name and its merged hyperparameters.

    Args:
        name: ``adam``, ``adamw``, ``amsgrad``, ``momentum`` or ``nesterov``.
        groups: torch param-group dicts.
        kwargs: registry defaults merged with the spec's values (``state`` included).

    Returns:
        A :class:`LeanAdam` or :class:`LeanSGD`.

    Raises:
        SpecError: ``fused=``/``foreach=`` given (lean state always runs chunked
            through torch's fused kernel), a bad ``state`` or a bad value.

    Example:
        >>> w = torch.zeros(3, requires_grad=True)
        >>> opt = create_lean("adamw", [{"params": [w]}],
        ...                   {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
        ...                    "weight_decay": 0.01, "state": "bf16"})
        >>> type(opt).__name__, opt.defaults["decoupled"]
        ('LeanAdam', True)
    """
    options = dict(kwargs)
    for flag in ("fused", "foreach"):
        if options.pop(flag, None) is not None:
            raise SpecError(f"{flag}: not used with state={options['state']} (lean state "
                            "always runs torch's fused kernel chunk by chunk); drop it")
    if name in ("adam", "adamw", "amsgrad"):
        return LeanAdam(groups, decoupled=name == "adamw", **options)
    return LeanSGD(groups, **options)
