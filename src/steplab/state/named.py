"""Optimizer state keyed by parameter name instead of position.

``torch.optim.Optimizer.state_dict()`` numbers parameters by their position
over all groups, and ``load_state_dict`` matches those numbers "without
additional verification" (pytorch/pytorch#1489): a reordered or extended
model silently gets the wrong moments or fails to load. The *named* state
dict keys everything by the parameter's name in the model::

    {"format": "steplab.named-optim/1",
     "optimizer": "torch.optim.adamw.AdamW",   # class of the (inner) optimizer
     "spec": "adamw(lr=0.001)" | None,          # steplab spec when known
     "param_shapes": {name: [d0, d1, ...]},
     "state": {name: {buffer: tensor | number}},
     "param_groups": [{hyperparameter: value, ..., "params": [name, ...]}],
     "lookahead": {"k", "alpha", "pullback", "step",   # only for a Lookahead
                   "slow": {name: {"slow_param": tensor, ...}}}}

Loading builds the positional state dict of the *current* optimizer by name
and hands it to the optimizer's own ``load_state_dict``, so torch's casting to
each parameter's dtype and device applies.

Group hyperparameters: a current group takes the saved group's
hyperparameters (lr, betas, weight decay, ...) only when both hold exactly the
same set of parameter names; otherwise it keeps its own. With
``hyperparameters="current"`` every group keeps its own. A Lookahead's ``k``,
``alpha`` and ``pullback`` always come from the current optimizer (they are
its construction settings); its step counter and slow weights come from the
saved state.

>>> from torch import nn
>>> model = nn.Linear(3, 2)
>>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
>>> model(torch.ones(1, 3)).sum().backward(); opt.step()
>>> named = named_state_dict(opt, model)
>>> sorted(named["state"]), sorted(named["state"]["weight"])
(['bias', 'weight'], ['exp_avg', 'exp_avg_sq', 'step'])
>>> fresh = torch.optim.AdamW([model.bias, model.weight], lr=1e-3)  # other order
>>> load_named_state_dict(fresh, model, named).loaded
('bias', 'weight')
>>> torch.equal(fresh.state[model.weight]["exp_avg"], opt.state[model.weight]["exp_avg"])
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from steplab.errors import CheckpointError, StateMismatchError
from steplab.state.names import (
    group_hyperparameters,
    inner_of,
    is_lookahead,
    named_parameters,
    optimizer_param_names,
)

__all__ = [
    "FORMAT",
    "NamedLoadReport",
    "check_named_state_dict",
    "load_named_state_dict",
    "named_state_dict",
    "named_state_dict_for",
]

#: format tag of a named optimizer state dict
FORMAT = "steplab.named-optim/1"
_SHOWN = 5  # names listed in one-line messages


@dataclass(frozen=True)
class NamedLoadReport:
    """What :func:`load_named_state_dict` did.

    Attributes:
        loaded: names whose saved state was loaded.
        missing: current parameters the saved state does not know (start fresh).
        unexpected: saved names the model does not have (ignored).
        shape_mismatched: names whose saved shape differs (start fresh).
        groups_from_saved: indices of current groups that took the saved hyperparameters.
        notes: other things worth knowing (optimizer class changed, Lookahead dropped).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shape_mismatched: tuple[str, ...] = ()
    groups_from_saved: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """True when every parameter's state was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.shape_mismatched or self.notes)


def _class_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def named_state_dict(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """Return the optimizer's state keyed by the model's parameter names.

    Tensors are the optimizer's own (not copies): clone them before the next
    ``step()`` if you keep the dict in memory.

    Args:
        optimizer: any ``torch.optim.Optimizer``, a steplab ``Lookahead`` included.
        model: the module whose parameters the optimizer updates (DDP and
            ``torch.compile`` wrappers are looked through).

    Returns:
        The named state dict described in the module docstring.

    Raises:
        StateMismatchError: if the optimizer holds a tensor that is not a
            parameter of ``model``.
    """
    return named_state_dict_for(optimizer, optimizer_param_names(optimizer, model))


def named_state_dict_for(
    optimizer: torch.optim.Optimizer, group_names: list[list[str]]
) -> dict[str, Any]:
    """:func:`named_state_dict` with the names given group by group instead of a model."""
    flat = [name for names in group_names for name in names]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = optimizer.state_dict()
    state = {flat[i]: dict(buffers) for i, buffers in saved["state"].items()}
    groups = [
        {**group_hyperparameters(group), "params": list(names)}
        for group, names in zip(saved["param_groups"], group_names, strict=True)
    ]
    spec = getattr(optimizer, "steplab_spec", None)
    named: dict[str, Any] = {
        "format": FORMAT,
        "optimizer": _class_name(inner_of(optimizer)),
        "spec": None if spec is None else str(spec),
        "param_shapes": {name: list(p.shape) for name, p in zip(flat, params, strict=True)},
        "state": state,
        "param_groups": groups,
    }
    lookahead = saved.get("lookahead")
    if isinstance(lookahead, Mapping):
        slow = {flat[int(i)]: dict(bufs) for i, bufs in lookahead.get("slow", {}).items()}
        named["lookahead"] = {**{k: v for k, v in lookahead.items() if k != "slow"}, "slow": slow}
    return named


def _check_format(state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(f"optimizer state format: got {got!r}, expected {FORMAT!r}")
    for key, kind in (("state", Mapping), ("param_groups", list), ("param_shapes", Mapping)):
        if not isinstance(state.get(key), kind):
            raise CheckpointError(
                f"optimizer state.{key}: got {type(state.get(key)).__name__}, "
                f"expected a {kind.__name__}"
            )


def _shorten(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _match_names(
    state: Mapping[str, Any], current: dict[str, nn.Parameter]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Split names into (loadable, missing, unexpected, shape_mismatched)."""
    saved_names = [n for g in state["param_groups"] for n in g.get("params", [])]
    saved_set = set(saved_names) | set(state["state"])
    shapes = state["param_shapes"]
    mismatched = [
        n for n in current if n in saved_set and list(shapes.get(n, [])) != list(current[n].shape)
    ]
    loadable = [n for n in current if n in saved_set and n not in mismatched]
    missing = [n for n in current if n not in saved_set]
    unexpected = sorted(n for n in saved_set if n not in current)
    return loadable, missing, unexpected, mismatched


def _lookahead_notes(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> list[str]:
    has_saved, is_la = isinstance(state.get("lookahead"), Mapping), is_lookahead(optimizer)
    if has_saved and not is_la:
        return ["lookahead: saved state has Lookahead slow weights; the optimizer is no Lookahead"]
    if is_la and not has_saved:
        return ["lookahead: the optimizer is a Lookahead; saved state has no slow weights"]
    return []


def _class_notes(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> list[str]:
    current = _class_name(inner_of(optimizer))
    saved = state.get("optimizer")
    if saved is not None and saved != current:
        return [f"optimizer: saved state is from {saved}, the optimizer is {current}"]
    return []


def _maybe_clone(value: Any, copy: bool) -> Any:
    if copy and isinstance(value, torch.Tensor):
        return value.detach().clone()
    return value


def _lookahead_section(
    optimizer: torch.optim.Optimizer,
    saved: Mapping[str, Any] | None,
    index: dict[str, int],
    loadable: set[str],
    copy: bool,
) -> dict[str, Any]:
    """The positional ``"lookahead"`` entry: saved slow weights by name, fresh for the rest."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_slow = saved.get("slow", {}) if saved is not None else {}
    slow: dict[int, dict[str, Any]] = {}
    for name, i in index.items():
        if name in loadable and name in saved_slow:
            slow[i] = {k: _maybe_clone(v, copy) for k, v in saved_slow[name].items()}
        else:  # a fresh Lookahead starts its slow weights at the current parameters
            slow[i] = {"slow_param": params[i].detach().clone()}
        if getattr(optimizer, "pullback", None) == "pullback":  # its slow momentum starts at zero
            slow[i].setdefault("slow_momentum", torch.zeros_like(params[i]))
    step = int(saved.get("step", 0)) if saved is not None else 0
    settings = {k: getattr(optimizer, k) for k in ("k", "alpha", "pullback")}
    return {**settings, "step": step, "slow": slow}


def check_named_state_dict(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    state: Mapping[str, Any],
    strict: bool = True,
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """Compare a named state dict with the optimizer without changing anything.

    Args:
        optimizer: the optimizer the state would be loaded into.
        model: the module whose parameters ``optimizer`` updates.
        state: a named state dict.
        strict: raise instead of returning when anything disagrees.

    Returns:
        ``(loadable, missing, unexpected, shape_mismatched, notes)``, names in
        the optimizer's order.

    Raises:
        CheckpointError: if ``state`` is not a named state dict.
        StateMismatchError: in strict mode, when anything disagrees.
    """
    _check_format(state)
    current = named_parameters(model)
    group_names = optimizer_param_names(optimizer, model)
    active = {n: current[n] for names in group_names for n in names}
    loadable, missing, unexpected, mismatched = _match_names(state, active)
    notes = _class_notes(optimizer, state) + _lookahead_notes(optimizer, state)
    if strict and (missing or unexpected or mismatched or notes):
        parts = [f"{label}: {_shorten(names)}" for label, names in (
            ("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)
        ) if names]
        raise StateMismatchError("optimizer state: " + "; ".join(parts + notes))
    return loadable, missing, unexpected, mismatched, notes


def load_named_state_dict(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    state: Mapping[str, Any],
    strict: bool = True,
    *,
    hyperparameters: Literal["match", "current"] = "match",
    copy: bool = True,
) -> NamedLoadReport:
    """Load a named state dict into ``optimizer``, matching parameters by name.

    Parameters may have been added, removed, reordered or moved between
    groups since the state was saved. In strict mode any difference in names
    or shapes raises before anything changes; otherwise what matches is
    loaded, the rest starts fresh, and the report lists it.

    Args:
        optimizer: the optimizer to load into (a Lookahead too).
        model: the module whose parameters ``optimizer`` updates.
        state: a dict from :func:`named_state_dict` (or read from a checkpoint).
        strict: raise on any missing, unexpected or shape-mismatched name, a
            different optimizer class, or Lookahead state on one side only.
        hyperparameters: ``"match"``: a group whose parameter names equal a
            saved group's takes the saved hyperparameters; ``"current"``: every
            group keeps its own.
        copy: clone the saved tensors (set False when ``state`` is discarded
            afterwards, e.g. freshly read from disk, to save memory).

    Returns:
        A :class:`NamedLoadReport`.

    Raises:
        CheckpointError: if ``state`` is not a named state dict.
        StateMismatchError: in strict mode, listing what disagrees.
    """
    loadable, missing, unexpected, mismatched, notes = check_named_state_dict(
        optimizer, model, state, strict
    )
    group_names = optimizer_param_names(optimizer, model)
    saved_groups = {frozenset(g.get("params", [])): g for g in state["param_groups"]}
    loadable_set, positional_groups, from_saved = set(loadable), [], []
    index: dict[str, int] = {}
    positional_state: dict[int, dict[str, Any]] = {}
    for g_index, (group, names) in enumerate(zip(optimizer.param_groups, group_names, strict=True)):
        saved_group = saved_groups.get(frozenset(names)) if hyperparameters == "match" else None
        hyper = group_hyperparameters(saved_group if saved_group is not None else group)
        if saved_group is not None:
            from_saved.append(g_index)
        start = len(index)
        for offset, name in enumerate(names):
            index[name] = start + offset
            if name in loadable_set and name in state["state"]:
                buffers = state["state"][name]
                positional_state[start + offset] = {
                    k: _maybe_clone(v, copy) for k, v in buffers.items()
                }
        positional_groups.append({**hyper, "params": list(range(start, start + len(names)))})
    positional: dict[str, Any] = {"state": positional_state, "param_groups": positional_groups}
    if is_lookahead(optimizer):
        saved_la = state.get("lookahead")
        la = saved_la if isinstance(saved_la, Mapping) else None
        positional["lookahead"] = _lookahead_section(optimizer, la, index, loadable_set, copy)
    try:
        optimizer.load_state_dict(positional)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        kind = type(optimizer).__name__
        raise CheckpointError(f"optimizer state: rejected by {kind} ({exc})") from None
    return NamedLoadReport(
        loaded=tuple(loadable), missing=tuple(missing), unexpected=tuple(unexpected),
        shape_mismatched=tuple(mismatched), groups_from_saved=tuple(from_saved), notes=tuple(notes),
    )
