"""Where Lookahead keeps its state, in torch's own optimizer-state protocol.

A :class:`~steplab.optim.Lookahead` stores nothing beside the inner
optimizer's ``state`` and ``param_groups``, so every engine that speaks that
protocol (``torch.distributed.checkpoint``'s ``get/set_optimizer_state_dict``,
``ZeroRedundancyOptimizer``'s consolidation, FSDP2, Lightning, ``torch.save``)
carries it without a special case:

- per parameter, in ``optimizer.state[p]`` beside the inner buffers:
  ``"slow_param"`` (the slow weights φ) and, with ``pullback="pullback"``,
  ``"slow_momentum"`` (the slow copy of the momentum-like buffer);
- per parameter group: ``"lookahead_k"``, ``"lookahead_alpha"``,
  ``"lookahead_pullback"`` and ``"lookahead_step"`` (inner steps taken).

steplab before this layout wrote one extra top-level key,
``"lookahead": {"k", "alpha", "pullback", "step", "slow": {index: {...}}}``;
:func:`migrate_state_dict` turns such a dict into the current layout.

>>> old = {"state": {0: {"momentum_buffer": torch.ones(2)}},
...        "param_groups": [{"lr": 0.1, "params": [0]}],
...        "lookahead": {"k": 5, "alpha": 0.5, "pullback": "none", "step": 3,
...                      "slow": {0: {"slow_param": torch.zeros(2)}}}}
>>> new = migrate_state_dict(old)
>>> sorted(new["state"][0]), new["param_groups"][0]["lookahead_step"]
(['momentum_buffer', 'slow_param'], 3)
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from steplab.errors import SpecError, StateMismatchError


def _loaded(module: str, name: str) -> Any:
    """``module.name`` if ``module`` is already imported, else None.

    An object can only be a ZeRO optimizer or a ``DTensor`` once their modules
    are imported, so steplab never imports them itself (``torch.distributed.optim``
    pulls in FSDP: seconds of start-up for every process that never uses it).
    """
    found = sys.modules.get(module)
    return None if found is None else getattr(found, name, None)


__all__ = [
    "GROUP_KEYS",
    "PULLBACK_MODES",
    "SLOW_KEYS",
    "check_loadable",
    "check_pullback",
    "check_settings",
    "is_initialising_step",
    "local_optimizer",
    "local_tensor",
    "migrate_state_dict",
    "momentum_buffer_name",
]

#: what happens to the inner optimizer's state at each sync
PULLBACK_MODES: tuple[str, ...] = ("none", "reset", "pullback")
#: Lookahead's entries in each parameter's optimizer state
SLOW_KEYS: tuple[str, ...] = ("slow_param", "slow_momentum")
#: Lookahead's entries in each parameter group
GROUP_KEYS: tuple[str, ...] = (
    "lookahead_k", "lookahead_alpha", "lookahead_pullback", "lookahead_step",
)
_LEGACY_KEY = "lookahead"


def momentum_buffer_name(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> str | None:
    """Name of the momentum-like buffer ``optimizer`` keeps for ``group``, or None.

    SGD and RMSprop keep ``momentum_buffer`` when ``momentum != 0``; the Adam
    family (Adam, AdamW, NAdam, RAdam, Adamax) keeps ``exp_avg``. A
    ``ZeroRedundancyOptimizer`` answers for its local optimizer.

    >>> p = torch.zeros(2, requires_grad=True)
    >>> momentum_buffer_name(torch.optim.Adam([p]), {})
    'exp_avg'
    >>> momentum_buffer_name(torch.optim.SGD([p]), {"momentum": 0.0}) is None
    True
    """
    optimizer = local_optimizer(optimizer)
    adam_family = (
        torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam,
        torch.optim.Adamax,
    )
    if isinstance(optimizer, adam_family):
        return "exp_avg"
    if isinstance(optimizer, (torch.optim.SGD, torch.optim.RMSprop)) and group.get("momentum"):
        return "momentum_buffer"
    return None


def local_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds this process's per-parameter state.

    A ``ZeroRedundancyOptimizer`` keeps the state of its shard in a local
    optimizer (``.optim``); everything else holds its own.
    """
    zero = _loaded("torch.distributed.optim", "ZeroRedundancyOptimizer")
    if zero is not None and isinstance(optimizer, zero):
        local: torch.optim.Optimizer = optimizer.optim
        return local
    return optimizer


def local_tensor(t: Tensor) -> Tensor:
    """This process's shard of a ``DTensor`` (a view that shares its storage), else ``t``."""
    dtensor = _loaded("torch.distributed.tensor", "DTensor")
    if dtensor is not None and isinstance(t, dtensor):
        local: Tensor = t.to_local()
        return local
    return t


def check_settings(k: object, alpha: object, pullback: object, where: str = "") -> None:
    """Raise :class:`SpecError` unless k, alpha and pullback are valid Lookahead settings.

    Args:
        k: inner steps per sync, an integer >= 1.
        alpha: the slow step size, a number in (0, 1].
        pullback: one of :data:`PULLBACK_MODES`.
        where: a prefix for the field names in the message (``"param_groups[1]."``).

    Raises:
        SpecError: naming the bad field, its value and what was expected.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise SpecError(f"{where}k: got {k!r}, expected an integer >= 1")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not 0.0 < float(alpha) <= 1.0
    ):
        raise SpecError(f"{where}alpha: got {alpha!r}, expected a number in (0, 1]")
    if pullback not in PULLBACK_MODES:
        raise SpecError(
            f"{where}pullback: got {pullback!r}, expected one of {', '.join(PULLBACK_MODES)}"
        )


def check_pullback(optimizer: torch.optim.Optimizer, group: Mapping[str, Any], pullback: str
                   ) -> None:
    """Raise :class:`SpecError` when ``pullback`` needs state ``optimizer`` does not keep.

    ``"pullback"`` needs a momentum-like buffer; ``"reset"`` needs any state
    (plain SGD keeps none). Under ZeRO the local optimizer is the one asked.
    """
    if pullback == "none":
        return
    local = local_optimizer(optimizer)
    no_momentum = momentum_buffer_name(local, group) is None
    stateless = isinstance(local, torch.optim.SGD) and not group.get("momentum")
    if no_momentum if pullback == "pullback" else stateless:
        raise SpecError(
            f"pullback: got {pullback!r} with optimizer {type(local).__name__}"
            f"(momentum={group.get('momentum', 'n/a')}), which keeps no "
            f"{'momentum-like buffer' if pullback == 'pullback' else 'state to reset'};"
            " expected pullback='none' (or an optimizer with momentum / exp_avg)"
        )


def _legacy_entry(slow: Mapping[Any, Any], index: Any, needed: tuple[str, ...]) -> dict[str, Any]:
    entry = slow.get(index, slow.get(str(index)))
    if not isinstance(entry, Mapping) or any(n not in entry for n in needed):
        raise StateMismatchError(
            f"state_dict['lookahead']['slow'][{index}]: missing, expected {' and '.join(needed)}"
        )
    return {n: entry[n] for n in needed}


def migrate_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a state dict of the old ``"lookahead"``-key layout into the current one.

    A dict already in the current layout is returned as a shallow copy.

    Args:
        state_dict: a Lookahead state dict, positional (``state`` keyed by
            parameter index) as ``Lookahead.state_dict()`` wrote it.

    Returns:
        A new dict: slow buffers merged into ``state``, the settings and step
        counter copied into every parameter group, no ``"lookahead"`` key.

    Raises:
        StateMismatchError: the old section lacks a parameter's slow buffers.
        SpecError: its k, alpha or pullback are invalid.
    """
    out = dict(state_dict)
    legacy = out.pop(_LEGACY_KEY, None)
    if not isinstance(legacy, Mapping):
        return out
    check_settings(legacy.get("k"), legacy.get("alpha"), legacy.get("pullback"))
    pullback = str(legacy["pullback"])
    needed = SLOW_KEYS if pullback == "pullback" else SLOW_KEYS[:1]
    settings = {
        "lookahead_k": int(legacy["k"]), "lookahead_alpha": float(legacy["alpha"]),
        "lookahead_pullback": pullback, "lookahead_step": int(legacy.get("step", 0)),
    }
    slow = legacy.get("slow", {})
    state = {key: dict(value) for key, value in dict(out.get("state", {})).items()}
    groups = []
    for group in out.get("param_groups", []):
        for index in group.get("params", []):
            state.setdefault(index, {}).update(_legacy_entry(slow, index, needed))
        groups.append({**group, **settings})
    out["state"], out["param_groups"] = state, groups
    return out


def check_loadable(state_dict: Mapping[str, Any], param_groups: list[dict[str, Any]]) -> None:
    """Raise unless ``state_dict`` (current layout) is a Lookahead's and fits ``param_groups``.

    Args:
        state_dict: the dict about to be loaded (``state`` keyed like its groups' ``params``).
        param_groups: the optimizer's current groups.

    Raises:
        StateMismatchError: another group count, a group without Lookahead's
            entries (a plain optimizer's dict), or a slow buffer of the wrong shape.
        SpecError: invalid k, alpha or pullback in a group.
    """
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(param_groups):
        raise StateMismatchError(
            f"state_dict['param_groups']: got {type(groups).__name__} of"
            f" {len(groups) if isinstance(groups, list) else '?'} groups, expected"
            f" {len(param_groups)}"
        )
    saved_ids = [i for g in groups for i in g.get("params", [])]
    params = dict(zip(saved_ids, [p for g in param_groups for p in g["params"]], strict=False))
    for j, group in enumerate(groups):
        if any(key not in group for key in GROUP_KEYS):
            raise StateMismatchError(
                f"state_dict['param_groups'][{j}]: no lookahead_k/alpha/pullback/step,"
                " expected the state dict of a Lookahead (this is a plain optimizer's)"
            )
        check_settings(group["lookahead_k"], group["lookahead_alpha"],
                       group["lookahead_pullback"], f"param_groups[{j}].lookahead_")
    for i, buffers in dict(state_dict.get("state", {})).items():
        param = params.get(i)
        for name in SLOW_KEYS:
            value = (buffers or {}).get(name)
            if isinstance(value, Tensor) and param is not None and tuple(
                    value.shape) != tuple(param.shape):
                raise StateMismatchError(
                    f"state_dict['state'][{i}]['{name}']: shape {tuple(value.shape)},"
                    f" expected {tuple(param.shape)}"
                )


def _is_zero(value: object) -> bool:
    return bool(float(value) == 0.0) if isinstance(value, (int, float, Tensor)) else False


def is_initialising_step(param_groups: list[dict[str, Any]], params: list[Tensor]) -> bool:
    """True for the zero-lr, zero-gradient step DCP takes to build lazy optimizer state.

    ``torch.distributed.checkpoint.state_dict`` runs one ``step()`` with every
    lr 0 and zero gradients on an optimizer that has no state yet; Lookahead
    must not count it (it changes no weight). Callers ask only when no
    parameter has state yet.

    >>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.zeros(2)
    >>> is_initialising_step([{"lr": 0.0, "params": [p]}], [p])
    True
    """
    if not all(_is_zero(g.get("lr", 1.0)) for g in param_groups):
        return False
    return all(p.grad is None or not bool(p.grad.count_nonzero()) for p in params)
