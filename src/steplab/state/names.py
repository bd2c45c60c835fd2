"""Map an optimizer's parameters to the model's parameter names.

torch keys optimizer state by position; steplab keys it by the name
``model.named_parameters()`` gives each parameter, with the wrappers'
prefixes removed (DDP and ``nn.DataParallel`` add ``module.``,
``torch.compile`` adds ``_orig_mod.``), so a checkpoint written from a wrapped
model loads into a plain one and back.

>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(2, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> optimizer_param_names(opt, model)
[['0.weight', '0.bias']]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from steplab.errors import StateMismatchError
from steplab.optim.lookahead_state import local_optimizer

__all__ = [
    "canonical_module",
    "clean_name",
    "inner_of",
    "is_lookahead",
    "named_parameters",
    "optimizer_param_names",
]

_COMPILE_SEGMENT = "_orig_mod."


def canonical_module(model: nn.Module) -> nn.Module:
    """Unwrap DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            inner = model._orig_mod
            assert isinstance(inner, nn.Module)
            model = inner
        else:
            return model


def clean_name(name: str) -> str:
    """Remove ``_orig_mod.`` segments that compiled submodules add to a name.

    >>> clean_name("encoder._orig_mod.layer.weight")
    'encoder.layer.weight'
    """
    return name.replace("." + _COMPILE_SEGMENT, ".").removeprefix(_COMPILE_SEGMENT)


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by clean name (tied parameters under their first name)."""
    return {clean_name(n): p for n, p in canonical_module(model).named_parameters()}


def is_lookahead(optimizer: torch.optim.Optimizer) -> bool:
    """True for a steplab ``Lookahead`` (or anything with its ``optimizer``/``slow_state``).

    A ``ZeroRedundancyOptimizer`` whose local optimizers are Lookaheads counts too.
    """
    optimizer = local_optimizer(optimizer)
    return hasattr(optimizer, "slow_state") and isinstance(
        getattr(optimizer, "optimizer", None), torch.optim.Optimizer
    )


def inner_of(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that owns the per-parameter state (a Lookahead's inner one)."""
    inner = getattr(optimizer, "optimizer", None)
    if is_lookahead(optimizer) and isinstance(inner, torch.optim.Optimizer):
        return inner
    return optimizer


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    """Names of the optimizer's parameters, group by group, in the optimizer's order.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (a Lookahead too).
        model: the module whose parameters the optimizer updates.

    Returns:
        One list of names per parameter group.

    Raises:
        StateMismatchError: if the optimizer holds a tensor that is not a
            parameter of ``model``.
    """
    by_id = {id(p): n for n, p in named_parameters(model).items()}
    groups: list[list[str]] = []
    for g_index, group in enumerate(optimizer.param_groups):
        names: list[str] = []
        for p_index, param in enumerate(group["params"]):
            name = by_id.get(id(param))
            if name is None:
                raise StateMismatchError(
                    f"param_groups[{g_index}].params[{p_index}]: tensor of shape "
                    f"{tuple(param.shape)} is not a parameter of {type(model).__name__}; "
                    "expected the optimizer to be built from this model's parameters"
                )
            names.append(name)
        groups.append(names)
    return groups


def group_hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    """A parameter group's settings without ``params`` / ``param_names``."""
    return {k: v for k, v in group.items() if k not in ("params", "param_names")}
