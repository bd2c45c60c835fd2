"""Carry optimizer state to a changed model, for fine-tuning.

Policies:

- ``"keep"``: everything the saved state holds for a parameter, step counts
  included, as if training had never stopped.
- ``"reset"``: nothing; the optimizer stays fresh (what most fine-tuning
  scripts do by rebuilding the optimizer).
- ``"keep-second-moment"``: keep the squared-gradient statistics
  (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``, ``sum``), zero the first
  moments (``exp_avg``, ``grad_avg``) and drop momentum buffers (so SGD starts
  its momentum from the first new gradient, exactly as a fresh SGD does).

What ``keep-second-moment`` does with the step count, and why: torch keeps one
``step`` per parameter and uses it for both bias corrections,
``m_hat = m / (1 - beta1^t)`` and ``v_hat = v / (1 - beta2^t)``. Restarting it
at ``t = 0`` with ``v`` kept would divide the kept, already unbiased ``v`` by
``1 - beta2`` at the first new step (1000x for beta2 = 0.999), shrinking the
steps about 30x for hundreds of steps. So the step count is **kept**: ``v``
stays correctly scaled, and the first moment restarts from zero with a
correction near 1, so ``m_hat`` after ``n`` new steps is about
``(1 - beta1^n)`` times the mean gradient: a short ramp over roughly
``1 / (1 - beta1)`` steps (10 for beta1 = 0.9) that acts as a built-in warmup.
A Lookahead's slow weights restart at the current parameters and its step
counter at 0.

Group hyperparameters always stay the current optimizer's (the fine-tuning
run sets its own learning rate). ``rename`` maps old name prefixes to new
ones (plain string prefixes, longest first); a prefix mapped to ``None``
drops those names. Two saved names that would end under one name (say
``rename={"encoder.2.": "encoder.1."}`` while ``encoder.1.`` is saved too)
are an error naming both, never one silently overwriting the other; map or
drop the other one as well.

>>> import torch
>>> from torch import nn
>>> old = nn.Sequential(nn.Linear(2, 2)); old_opt = torch.optim.Adam(old.parameters())
>>> old(torch.ones(1, 2)).sum().backward(); old_opt.step()
>>> from steplab.state import named_state_dict
>>> saved = named_state_dict(old_opt, old)
>>> new = nn.Sequential(); new.add_module("encoder", nn.Linear(2, 2))
>>> new.add_module("head", nn.Linear(2, 1))
>>> report = transfer(saved, torch.optim.Adam(new.parameters()), new, rename={"0.": "encoder."})
>>> report.carried, report.fresh
(('encoder.weight', 'encoder.bias'), ('head.weight', 'head.bias'))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from steplab.errors import SpecError
from steplab.state.inspection import FIRST_MOMENT
from steplab.state.named import check_named_state_dict, load_named_state_dict, migrate_named
from steplab.state.names import inner_of, is_lookahead, named_parameters

#: a lean optimizer's first moment (steplab.optim.lean): its codes and block scales
_LEAN_FIRST_MOMENT = frozenset({"exp_avg_codes", "exp_avg_absmax"})

__all__ = ["POLICIES", "TransferReport", "transfer"]

Policy = Literal["keep", "reset", "keep-second-moment"]
#: the transfer policies, in order of how much state they carry
POLICIES: tuple[str, ...] = ("keep", "keep-second-moment", "reset")


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer` carried over.

    Attributes:
        policy: the policy applied.
        carried: current parameter names that received saved state.
        renamed: saved name -> current name, for names ``rename`` changed.
        dropped: saved names with no place in the model (gone or shape changed).
        fresh: current names that start with fresh state.
    """

    policy: str
    carried: tuple[str, ...]
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {"policy": self.policy, "carried": list(self.carried), "renamed": self.renamed,
                "dropped": list(self.dropped), "fresh": list(self.fresh)}


def _new_name(name: str, rules: list[tuple[str, str | None]]) -> str | None:
    for old, new in rules:
        if name.startswith(old):
            return None if new is None else new + name[len(old):]
    return name


def _mapping(names: set[str], rename: Mapping[str, str | None]) -> dict[str, str | None]:
    """Saved name -> new name (None: dropped); two names onto one raise ``SpecError``."""
    if not all(isinstance(k, str) and (v is None or isinstance(v, str))
               for k, v in rename.items()):
        raise SpecError(f"rename: got {dict(rename)!r}, "
                        "expected a dict of str prefixes -> str prefixes (or None to drop)")
    rules = sorted(rename.items(), key=lambda kv: -len(kv[0]))
    mapping = {n: _new_name(n, rules) for n in sorted(names)}
    sources: dict[str, str] = {}
    for old, new in mapping.items():
        if new is None:
            continue
        if new in sources:
            first, second = sorted((sources[new], old))
            raise SpecError(
                f"rename: saved {first!r} and {second!r} both map to {new!r}; expected one "
                "saved name per new name (rename or drop the other, e.g. {prefix: None})")
        sources[new] = old
    return mapping


def _renamed(state: Mapping[str, Any], rename: Mapping[str, str | None]
             ) -> tuple[dict[str, Any], dict[str, str], tuple[str, ...]]:
    """``state`` under new names; also the renames and the saved names dropped by ``None``."""
    state = migrate_named(state)
    names = set(state.get("param_shapes", {})) | set(state.get("state", {}))
    mapping = _mapping(names, rename)
    keep = {n: m for n, m in mapping.items() if m is not None}
    out = dict(state)
    out["state"] = {keep[n]: v for n, v in state["state"].items() if n in keep}
    out["param_shapes"] = {keep.get(n, n): v for n, v in state["param_shapes"].items()
                           if mapping.get(n, n) is not None}
    out["param_groups"] = [{**g, "params": [keep.get(n, n) for n in g["params"]
                                            if mapping.get(n, n) is not None]}
                           for g in state["param_groups"]]
    dropped = tuple(n for n, m in mapping.items() if m is None)
    return out, {old: new for old, new in keep.items() if old != new}, dropped


def _restart_first_moments(optimizer: torch.optim.Optimizer, model: nn.Module,
                           names: tuple[str, ...]) -> None:
    params = named_parameters(model)
    inner = inner_of(optimizer)
    with torch.no_grad():
        for name in names:
            buffers = inner.state.get(params[name], {})
            buffers.pop("momentum_buffer", None)  # None is how torch's SGD marks a fresh buffer
            for key in ("momentum_buffer_codes", "momentum_buffer_absmax"):  # lean state's form
                buffers.pop(key, None)
            for key in (FIRST_MOMENT | _LEAN_FIRST_MOMENT) & set(buffers):
                buffers[key].zero_()  # lean codes and scales of 0 decode to a zero moment
        if is_lookahead(optimizer):
            for param, slow in optimizer.slow_state.items():  # type: ignore[attr-defined]
                slow["slow_param"].copy_(param)
                if "slow_momentum" in slow:
                    slow["slow_momentum"].zero_()
            optimizer.la_step = 0  # type: ignore[attr-defined]


def transfer(state: Mapping[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module,
             policy: Policy = "keep", rename: Mapping[str, str | None] | None = None
             ) -> TransferReport:
    """Load saved optimizer state into the optimizer of a changed model.

    Args:
        state: a named state dict (:func:`steplab.state.named_state_dict`, or the
            ``"optimizer"`` of a checkpoint).
        optimizer: the new model's optimizer (its hyperparameters are kept).
        model: the new model.
        policy: ``"keep"``, ``"reset"`` or ``"keep-second-moment"`` (module docstring).
        rename: old name prefix -> new name prefix, for renamed layers; ``None``
            drops the names under that prefix.

    Returns:
        A :class:`TransferReport`.

    Raises:
        SpecError: for an unknown policy, a malformed ``rename``, or a ``rename``
            that maps two saved names onto one (the message names both).
        CheckpointError: if ``state`` is not a named state dict.
    """
    if policy not in POLICIES:
        raise SpecError(f"policy: got {policy!r}, expected one of {', '.join(POLICIES)}")
    state, renamed, removed = _renamed(state, rename or {})
    back = {new: old for old, new in renamed.items()}  # report saved names as saved
    loadable, missing, unexpected, mismatched, _ = check_named_state_dict(
        optimizer, model, state, strict=False)
    saved_mismatched = tuple(n for n in state["param_shapes"] if n in mismatched)
    if policy == "reset":
        current = tuple(loadable + missing + mismatched)
        saved = tuple(back.get(n, n) for g in state["param_groups"] for n in g["params"])
        return TransferReport(policy, (), renamed, removed + saved, current)
    report = load_named_state_dict(optimizer, model, state, strict=False,
                                   hyperparameters="current")
    if policy == "keep-second-moment":
        _restart_first_moments(optimizer, model, report.loaded)
    dropped = removed + tuple(back.get(n, n) for n in (*unexpected, *saved_mismatched))
    return TransferReport(policy, report.loaded, renamed, dropped,
                          report.missing + report.shape_mismatched)
