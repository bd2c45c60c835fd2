"""Optimizer state keyed by parameter name instead of position.

``torch.optim.Optimizer.state_dict()`` numbers parameters by their position
over all groups, and ``load_state_dict`` matches those numbers "without
additional verification" (pytorch/pytorch#1489): a reordered or extended
model silently gets the wrong moments or fails to load. The *named* state
dict keys everything by the parameter's name in the model::

    {"format": "steplab.named-optim/2",
     "optimizer": "torch.optim.adamw.AdamW",   # class of the (inner) optimizer
     "spec": "adamw(lr=0.001)" | None,          # steplab spec when known
     "param_shapes": {name: [d0, d1, ...]},
     "state": {name: {buffer: tensor | number}},  # a Lookahead's slow_param here too
     "param_groups": [{hyperparameter: value, ..., "params": [name, ...]}]}

A Lookahead keeps its state in torch's protocol (``slow_param`` /
``slow_momentum`` in each parameter's state, ``lookahead_k/alpha/pullback/step``
in each group), so it needs no section of its own. Format 1 had a separate
``"lookahead": {"k", "alpha", "pullback", "step", "slow": {name: {...}}}``;
:func:`migrate_named` turns it into format 2, and loading does so by itself.

Loading builds the positional state dict of the *current* optimizer by name
and hands it to the optimizer's own ``load_state_dict``, so torch's casting to
each parameter's dtype and device applies.

Group hyperparameters: a current group takes the saved group's
hyperparameters (lr, betas, weight decay, ...) only when both hold exactly the
same set of parameter names; otherwise it keeps its own. With
``hyperparameters="current"`` every group keeps its own. A Lookahead's ``k``,
``alpha`` and ``pullback`` always come from the current optimizer (they are
its construction settings); its step counter and slow weights come from the
saved state (parameters without saved slow weights take theirs at the next
step).

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
from steplab.optim.lookahead_state import GROUP_KEYS, SLOW_KEYS, check_settings
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
    "migrate_named",
    "named_state_dict",
    "named_state_dict_for",
]

#: format tag of a named optimizer state dict
FORMAT = "steplab.named-optim/2"
_FORMAT_1 = "steplab.named-optim/1"  # Lookahead state in a separate "lookahead" section
_LA_SETTINGS = GROUP_KEYS[:3]  # k, alpha, pullback: the current optimizer's
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
    # a subclass that keeps torch's state layout names it (steplab's single-pass
    # RMSprop/NAdam: their checkpoints load on torch's class and back)
    cls = getattr(obj, "state_class", type(obj))
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
    return named


def migrate_named(state: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a format-1 named state dict into format 2 (format 2 comes back as a copy).

    Format 1 kept a Lookahead's slow buffers and settings in a ``"lookahead"``
    section; format 2 keeps them where torch does (module docstring).

    Args:
        state: a named state dict of format 1 or 2.

    Returns:
        A format-2 named state dict (tensors shared, not copied).

    Raises:
        CheckpointError: not a named state dict, or a malformed ``"lookahead"`` section.

    Example:
        >>> old = {"format": "steplab.named-optim/1", "optimizer": "torch.optim.sgd.SGD",
        ...        "spec": None, "param_shapes": {"w": [2]}, "state": {},
        ...        "param_groups": [{"lr": 0.1, "params": ["w"]}],
        ...        "lookahead": {"k": 5, "alpha": 0.5, "pullback": "none", "step": 7,
        ...                      "slow": {"w": {"slow_param": torch.zeros(2)}}}}
        >>> new = migrate_named(old)
        >>> new["format"], sorted(new["state"]["w"]), new["param_groups"][0]["lookahead_step"]
        ('steplab.named-optim/2', ['slow_param'], 7)
    """
    if not isinstance(state, Mapping) or state.get("format") not in (FORMAT, _FORMAT_1):
        got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(
            f"optimizer state format: got {got!r}, expected {FORMAT!r} (or {_FORMAT_1!r})"
        )
    out = {**state, "format": FORMAT}
    legacy = out.pop("lookahead", None)
    if not isinstance(legacy, Mapping):
        return out
    try:
        check_settings(legacy.get("k"), legacy.get("alpha"), legacy.get("pullback"),
                       "optimizer state.lookahead.")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    slow = legacy.get("slow", {})
    if not isinstance(slow, Mapping):
        raise CheckpointError(
            f"optimizer state.lookahead.slow: got {type(slow).__name__}, expected a dict"
        )
    named_state = {name: dict(buffers) for name, buffers in dict(out.get("state", {})).items()}
    for name, buffers in slow.items():
        named_state.setdefault(name, {}).update(
            {k: v for k, v in dict(buffers).items() if k in SLOW_KEYS})
    settings = {"lookahead_k": int(legacy["k"]), "lookahead_alpha": float(legacy["alpha"]),
                "lookahead_pullback": str(legacy["pullback"]),
                "lookahead_step": int(legacy.get("step", 0))}
    out["state"] = named_state
    out["param_groups"] = [{**g, **settings} for g in out.get("param_groups", [])]
    return out


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


def _saved_lookahead(state: Mapping[str, Any]) -> bool:
    return any("lookahead_step" in g for g in state["param_groups"])


def _lookahead_notes(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> list[str]:
    has_saved, is_la = _saved_lookahead(state), is_lookahead(optimizer)
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


def _lookahead_groups(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                      groups: list[dict[str, Any]], matched: list[Mapping[str, Any] | None]
                      ) -> None:
    """Set each positional group's Lookahead entries: settings current, step counter saved."""
    saved_steps = [g["lookahead_step"] for g in state["param_groups"] if "lookahead_step" in g]
    for group, current, saved in zip(groups, optimizer.param_groups, matched, strict=True):
        for key in GROUP_KEYS:
            group.pop(key, None)
        if not is_lookahead(optimizer):
            continue
        group.update({key: current[key] for key in _LA_SETTINGS})
        if saved is not None and "lookahead_step" in saved:
            group["lookahead_step"] = int(saved["lookahead_step"])
        else:  # a group the saved state does not have as a whole: the run's counter
            group["lookahead_step"] = int(max(saved_steps, default=current["lookahead_step"]))


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
    state = migrate_named(state)
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
    state = migrate_named(state)
    dropped = () if is_lookahead(optimizer) else SLOW_KEYS  # slow weights only for a Lookahead
    all_saved = {frozenset(g.get("params", [])): g for g in state["param_groups"]}
    group_names = optimizer_param_names(optimizer, model)
    saved_groups = {frozenset(g.get("params", [])): g for g in state["param_groups"]}
    loadable_set, positional_groups, from_saved = set(loadable), [], []
    index: dict[str, int] = {}
    positional_state: dict[int, dict[str, Any]] = {}
    matched: list[Mapping[str, Any] | None] = []
    for g_index, (group, names) in enumerate(zip(optimizer.param_groups, group_names, strict=True)):
        matched.append(all_saved.get(frozenset(names)))
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
                    k: _maybe_clone(v, copy) for k, v in buffers.items() if k not in dropped
                }
        positional_groups.append({**hyper, "params": list(range(start, start + len(names)))})
    _lookahead_groups(optimizer, state, positional_groups, matched)
    positional: dict[str, Any] = {"state": positional_state, "param_groups": positional_groups}
    try:
        optimizer.load_state_dict(positional)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        kind = type(optimizer).__name__
        raise CheckpointError(f"optimizer state: rejected by {kind} ({exc})") from None
    return NamedLoadReport(
        loaded=tuple(loadable), missing=tuple(missing), unexpected=tuple(unexpected),
        shape_mismatched=tuple(mismatched), groups_from_saved=tuple(from_saved), notes=tuple(notes),
    )
