"""Study arms: an optimizer together with its own run settings, under a name.

Most studies compare optimizers that share every run setting, so an entry of
``optimizers`` is an optimizer spec string. Some questions are about a run
setting instead (Adam with and without linear warmup): an **arm** names an
optimizer together with the run settings that differ, and the name stands in
``optimizers`` (and in ``baseline`` and claims) like any optimizer::

    [study]
    optimizers = ["adam(lr=0.01)", "adam+warmup"]

    [study.arms."adam+warmup"]
    optimizer = "adam(lr=0.01)"
    warmup_steps = 60          # replaces the study's warmup_steps for this arm
    schedule = "constant"      # replaces the study's schedule for this arm

The settings an arm may set are :data:`ARM_SETTINGS`; the others stay the
study's. An arm searches the same learning rates as its optimizer would (the
grid is centred on the optimizer's ``lr=``), so an arm and its plain
optimizer run at the same (lr, seed) points and pair up. An arm whose
optimizer is also in the study is compared with it by default.

>>> arms = parse_arms({"adam+warmup": {"optimizer": "adam", "warmup_steps": 50}})
>>> arms[0].name, arms[0].optimizer, arms[0].settings
('adam+warmup', 'adam', (('warmup_steps', 50),))
>>> parse_arms({"w": {"optimizer": "adam", "warmup": 5}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
steplab.errors.SpecError: arms.w.warmup: unknown key; expected one of ...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steplab.errors import SpecError

__all__ = ["ARM_SETTINGS", "Arm", "arms_to_toml", "canonical_name", "parse_arms"]

#: run settings an arm may set, with what each must be
ARM_SETTINGS: dict[str, str] = {
    "schedule": "a schedule name (constant, cosine, ...)",
    "warmup_steps": "an integer >= 0",
    "clip_norm": "a finite number > 0",
}


@dataclass(frozen=True)
class Arm:
    """One named arm of a study.

    Attributes:
        name: how ``optimizers``, ``baseline`` and claims refer to it.
        optimizer: the optimizer spec string its runs use.
        settings: ``(run setting, value)`` pairs replacing the study's, sorted.
    """

    name: str
    optimizer: str
    settings: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """``{"optimizer": ..., <setting>: value, ...}`` as plain JSON values."""
        return {"optimizer": self.optimizer, **dict(self.settings)}


def _setting(where: str, key: str, value: Any) -> Any:
    """Check one run setting of an arm; return it."""
    if key == "warmup_steps":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpecError(f"{where}.{key}: got {value!r}, expected {ARM_SETTINGS[key]}")
    elif key == "clip_norm":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            raise SpecError(f"{where}.{key}: got {value!r}, expected {ARM_SETTINGS[key]}")
        value = float(value)
    else:
        from steplab.train.schedules import SCHEDULES

        if value not in SCHEDULES:
            raise SpecError(f"{where}.{key}: got {value!r}, expected one of {', '.join(SCHEDULES)}")
    return value


def _arm(name: Any, table: Any) -> Arm:
    where = f"arms.{name}"
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"arms: got arm name {name!r}, expected a non-empty name")
    if isinstance(table, Arm):
        return table
    if not isinstance(table, Mapping):
        raise SpecError(f"{where}: got {table!r}, expected a table with optimizer = \"...\"")
    for key in table:
        if key != "optimizer" and key not in ARM_SETTINGS:
            raise SpecError(
                f"{where}.{key}: unknown key; expected one of "
                f"{['optimizer', *ARM_SETTINGS]}"
            )
    optimizer = table.get("optimizer")
    if not isinstance(optimizer, str) or not optimizer.strip():
        raise SpecError(f"{where}.optimizer: got {optimizer!r}, expected an optimizer spec")
    from steplab.optim import parse_spec

    parse_spec(optimizer)  # a bad spec raises its own one-line SpecError
    try:
        parse_spec(name)
    except SpecError:
        pass
    else:
        raise SpecError(
            f"arms: got arm name {name!r}, which is itself an optimizer spec; expected a name "
            "that is not (e.g. 'adam+warmup')"
        )
    settings = tuple(sorted((k, _setting(where, k, v)) for k, v in table.items()
                            if k != "optimizer"))
    return Arm(name, optimizer, settings)


def parse_arms(value: Any) -> tuple[Arm, ...]:
    """Arms from a TOML table ``{name = {optimizer = ..., <setting> = ...}}`` or Arm values.

    Raises:
        SpecError: not a table, a bad name, optimizer or setting (one line naming it).
    """
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, Iterable) and not isinstance(value, str):
        items = [(a.name, a) if isinstance(a, Arm) else _pair(a) for a in value]
    else:
        raise SpecError(f"arms: got {value!r}, expected a table of name = {{optimizer = ...}}")
    arms = tuple(sorted((_arm(n, t) for n, t in items), key=lambda a: a.name))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise SpecError(f"arms: got duplicate names in {names}")
    return arms


def _pair(item: Any) -> tuple[Any, Any]:
    if isinstance(item, list | tuple) and len(item) == 2:
        return item[0], item[1]
    raise SpecError(f"arms: got {item!r}, expected a table of name = {{optimizer = ...}}")


def canonical_name(name: str, arms: Iterable[Arm] = ()) -> str:
    """How an ``optimizers`` entry is matched: an arm by its name, else the parsed spec.

    >>> canonical_name("adam( lr = 0.01 )"), canonical_name("w", [Arm("w", "adam")])
    ('adam(lr=0.01)', 'w')
    """
    if any(a.name == name for a in arms):
        return name
    from steplab.optim import parse_spec

    return str(parse_spec(name))


def arms_to_toml(arms: Iterable[Arm]) -> str:
    """``[study.arms."name"]`` tables that :func:`parse_arms` reads back."""
    import json

    blocks = []
    for arm in arms:
        lines = [f"[study.arms.{json.dumps(arm.name)}]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in arm.to_dict().items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
