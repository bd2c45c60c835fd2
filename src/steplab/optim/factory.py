"""Build optimizers by name: ``create_optimizer("lookahead(adamw(lr=3e-4), k=5)", model)``."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import optimizer as torch_optimizer

from steplab.errors import SpecError
from steplab.optim.lean import create_lean
from steplab.optim.lookahead import Lookahead
from steplab.optim.param_groups import NoDecayRule, is_no_decay, named_param_groups
from steplab.optim.paths import single_pass_choice
from steplab.optim.registry import OPTIMIZERS
from steplab.optim.single_pass import SinglePassNAdam, SinglePassRMSprop
from steplab.optim.spec import OptimizerSpec, SpecValue, parse_spec

__all__ = ["FASTEST_IMPLEMENTATION", "create_optimizer", "inner_optimizer"]

#: the implementation create_optimizer picks per name on CPU, measured by
#: benchmarks/optimizer_step.py (8M float32 parameters): fused where it wins; foreach
#: for plain SGD (one foreach add, ~3-6% ahead of fused); for RMSprop and NAdam, which
#: have no fused kernel, steplab's single-pass compiled step where it pays
#: (steplab.optim.paths), else torch's single-tensor for-loop (RMSprop ~1.5x ahead of
#: foreach; NAdam's foreach temporaries cost up to ~20%).
#: Off CPU, every name without a usable fused kernel takes foreach, torch's GPU default.
FASTEST_IMPLEMENTATION: dict[str, str] = {
    "gd": "foreach",
    "sgd": "foreach",
    "momentum": "fused",
    "nesterov": "fused",
    "adagrad": "fused",
    "rmsprop": "compiled",
    "adam": "fused",
    "adamw": "fused",
    "amsgrad": "fused",
    "nadam": "compiled",
}
#: torch's own fastest CPU path for the names that may take the compiled step
_TORCH_FALLBACK = "for-loop"
_SINGLE_PASS: dict[str, type[torch.optim.Optimizer]] = {
    "rmsprop": SinglePassRMSprop,
    "nadam": SinglePassNAdam,
}
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
Params = nn.Module | Iterable[Tensor] | Iterable[dict[str, Any]]


def inner_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that takes gradient steps: ``opt.optimizer`` for a Lookahead, else ``opt``.

    >>> w = torch.zeros(2, requires_grad=True)
    >>> type(inner_optimizer(create_optimizer("lookahead(sgd)", [w]))).__name__
    'SGD'
    """
    return optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer


def _groups(params: Params, no_decay: NoDecayRule | None) -> list[dict[str, Any]]:
    if isinstance(params, nn.Module):
        groups = named_param_groups(params, no_decay)
    elif isinstance(params, Tensor):
        raise SpecError("params: got a single Tensor, expected a module or an iterable of tensors")
    else:
        items = list(params)
        if items and isinstance(items[0], dict):
            groups = [dict(cast(dict[str, Any], g)) for g in items]
        else:
            groups = [{"params": items}]
    if not groups or not any(list(g["params"]) for g in groups):
        raise SpecError("params: got no trainable parameters, expected at least one tensor")
    return groups


def _fused_ok(cls: type[torch.optim.Optimizer], groups: list[dict[str, Any]]) -> bool:
    if cls not in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad):
        return False
    devices = torch_optimizer._get_fused_kernels_supported_devices()  # type: ignore[attr-defined]
    return all(
        p.device.type in devices and p.dtype in _FUSED_DTYPES and not p.is_sparse
        for g in groups
        for p in g["params"]
    )


#: hyperparameter -> (test, what is expected), checked before torch sees the value
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: v > 0, "a finite number > 0"),
    "eps": (lambda v: v >= 0, "a finite number >= 0"),
    "weight_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "lr_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "initial_accumulator_value": (lambda v: v >= 0, "a finite number >= 0"),
    "momentum_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "momentum": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "dampening": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "alpha": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "min_size": (lambda v: v >= 0 and v == int(v), "an integer >= 0"),
}


def _check_values(spec: OptimizerSpec) -> None:
    """Name the hyperparameter, its value and the allowed range before torch does."""
    for key, value in spec.kwargs.items():
        values: tuple[Any, ...] = value if isinstance(value, tuple) else (value,)
        if key == "betas" and not (isinstance(value, tuple) and len(value) == 2):
            raise SpecError(
                f"optimizer spec '{spec}': betas: got {value!r}, expected two numbers "
                "in [0, 1), e.g. betas=(0.9, 0.999)"
            )
        test, expected = _RANGES.get("beta1" if key == "betas" else key, (None, ""))
        if test is None:
            continue
        for v in values:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or not test(float(v)):
                raise SpecError(
                    f"optimizer spec '{spec}': {key}: got {value!r}, expected {expected}"
                )
    state = spec.kwargs.get("state", "fp32")
    if "min_size" in spec.kwargs and state not in ("int8", "int4"):
        raise SpecError(f"optimizer spec '{spec}': min_size: only used with state=int8 or "
                        f"state=int4, got state={state}")


def _merged_kwargs(spec: OptimizerSpec) -> dict[str, Any]:
    """The registry defaults with the spec's values, ``beta1``/``beta2`` folded into ``betas``."""
    kwargs: dict[str, Any] = {**OPTIMIZERS[spec.name].defaults, **spec.kwargs}
    beta1, beta2 = kwargs.pop("beta1", None), kwargs.pop("beta2", None)
    if beta1 is not None or beta2 is not None:
        old = tuple(kwargs["betas"])
        kwargs["betas"] = (old[0] if beta1 is None else beta1, old[1] if beta2 is None else beta2)
    return kwargs


def _torch_kwargs(
    spec: OptimizerSpec, cls: type[torch.optim.Optimizer], groups: list[dict[str, Any]]
) -> dict[str, Any]:
    kwargs = _merged_kwargs(spec)
    kwargs.pop("state", None)
    kwargs.pop("min_size", None)
    if "fused" not in kwargs and "foreach" not in kwargs:
        impl = FASTEST_IMPLEMENTATION[spec.name]
        impl = _TORCH_FALLBACK if impl == "compiled" else impl
        on_cpu = all(p.device.type == "cpu" for g in groups for p in g["params"])
        damped = kwargs.get("dampening", 0) != 0 or any(g.get("dampening", 0) for g in groups)
        if impl == "fused" and _fused_ok(cls, groups) and not (cls is torch.optim.SGD and damped):
            kwargs["fused"] = True
        else:
            kwargs["foreach"] = not (on_cpu and impl == "for-loop")
    return kwargs


def _with_single_pass(
    spec: OptimizerSpec, cls: type[torch.optim.Optimizer], groups: list[dict[str, Any]]
) -> type[torch.optim.Optimizer]:
    """steplab's single-pass class when the rule has one and it pays here, else ``cls``."""
    single = _SINGLE_PASS.get(spec.name)
    flags = ("fused", "foreach", "capturable", "differentiable")
    if single is None or any(spec.kwargs.get(flag) is not None for flag in flags):
        return cls
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    if len(devices) != 1:
        return cls
    take, _ = single_pass_choice(spec.name, sum(p.numel() for p in params), devices.pop(),
                                 len(params))
    return single if take else cls


def create_optimizer(
    spec: str | OptimizerSpec,
    params: Params,
    *,
    no_decay: NoDecayRule | None = is_no_decay,
    **overrides: SpecValue,
) -> torch.optim.Optimizer:
    """Build an optimizer from a spec, on the fastest implementation torch has.

    Picks ``fused=True`` where torch has a fused kernel for the parameters'
    device and dtype (SGD family, Adagrad, Adam, AdamW on CPU and GPU); else
    ``foreach=True``; on CPU, plain SGD takes foreach and RMSprop and NAdam
    torch's single-tensor loop, which measured faster there
    (:data:`FASTEST_IMPLEMENTATION`). RMSprop and NAdam take steplab's
    single-pass compiled step (:class:`~steplab.optim.single_pass.SinglePassRMSprop`,
    same state dict as torch's) where it pays (:mod:`steplab.optim.paths`).
    A spec's ``fused=``/``foreach=`` wins and pins torch's own path.
    When ``params`` is a module, parameters with ``ndim <= 1`` (biases, norm
    weights) go to a group with ``weight_decay=0.0`` and every group carries
    ``"param_names"``. The result has ``steplab_spec`` (the spec, overrides
    applied).

    Args:
        spec: a spec string or :class:`OptimizerSpec` (see :func:`parse_spec`).
        params: a module, an iterable of tensors or of torch param-group dicts.
        no_decay: for a module, ``(name, param) -> bool`` choosing the no-decay
            parameters; None puts every parameter in one decayed group.
        **overrides: hyperparameters merged into the innermost optimizer's kwargs.

    Returns:
        A ``torch.optim.Optimizer`` (a :class:`Lookahead` for ``lookahead(...)``).

    Raises:
        SpecError: a bad spec, override or hyperparameter value, or no parameters.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> opt = create_optimizer("adamw(lr=3e-4)", model, weight_decay=0.1)
        >>> type(opt).__name__, opt.defaults["fused"], [g["weight_decay"] for g in opt.param_groups]
        ('AdamW', True, [0.1, 0.0])
        >>> str(opt.steplab_spec)
        'adamw(lr=0.0003, weight_decay=0.1)'
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if overrides:
        parsed = parsed.with_overrides(**overrides)
    if parsed.name == "lookahead":
        assert parsed.inner is not None
        inner = create_optimizer(parsed.inner, params, no_decay=no_decay)
        opt: torch.optim.Optimizer = Lookahead(inner, **cast(dict[str, Any], parsed.kwargs))
    else:
        _check_values(parsed)
        info = OPTIMIZERS[parsed.name]
        module_name, _, class_name = info.torch_class.rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        groups = _groups(params, no_decay)
        lean = parsed.kwargs.get("state", "fp32") != "fp32"  # moments in bf16/int8/int4
        if not lean:
            kwargs = _torch_kwargs(parsed, cls, groups)
            cls = _with_single_pass(parsed, cls, groups)
        try:
            if lean:
                opt = create_lean(parsed.name, groups, _merged_kwargs(parsed))
            else:
                opt = cls(groups, **kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise SpecError(f"optimizer spec '{parsed}': {exc}") from exc
    if isinstance(opt, torch.optim.SGD) and opt.defaults.get("fused"):
        opt.register_step_pre_hook(_init_fused_momentum)
    opt.steplab_spec = parsed  # type: ignore[attr-defined]
    return opt


def _init_fused_momentum(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Give fused SGD a zero momentum buffer before its first step.

    torch's fused SGD allocates the buffer with ``empty_like`` and lets the
    kernel fill it on the first step; when a GradScaler skips that step
    (inf/NaN gradients) the kernel writes nothing and the uninitialised memory
    becomes the momentum. Starting from zeros is the same rule with dampening 0
    (``b = 0.9 * 0 + g = g`` exactly), so we do that; damped SGD never takes the
    fused path (see ``_torch_kwargs``).
    """
    for group in opt.param_groups:
        if group["momentum"] == 0:
            continue
        for p in group["params"]:
            if p.grad is not None and "momentum_buffer" not in opt.state[p]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
