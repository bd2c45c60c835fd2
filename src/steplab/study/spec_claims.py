"""The statistical fields of a study spec: claims, equivalence margins, selection, level.

A claim in TOML (an array of tables under ``[study]``, or at the top level
when every key is)::

    [[study.claims]]
    optimizer = "lookahead(adam)"
    baseline = "adam"
    quantity = "steps_to_target"   # or "final"
    at_least = 0.30                # reaches the target at least 30% sooner
    at_most = 0.50                 # optional upper end
    text = "Lookahead converges 30-50% faster"

>>> claim, = parse_claims([{"optimizer": "b", "baseline": "a", "quantity": "final",
...                         "at_least": 0.01}])
>>> claim.describe()
'b vs a: at least 0.01 (higher final metric)'

>>> parse_margins({"final": 0.02})
(('final', 0.02), ('steps_to_target', 0.1))
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from typing import Any

from steplab.errors import SpecError
from steplab.study.verdicts.decide import QUANTITIES, Claim

__all__ = [
    "DEFAULT_MARGINS",
    "SELECTIONS",
    "claims_to_toml",
    "parse_claims",
    "parse_margins",
    "resolve_selection",
]

#: equivalence margins: an absolute final-metric difference, a fraction of steps
DEFAULT_MARGINS: tuple[tuple[str, float], ...] = (("final", 0.01), ("steps_to_target", 0.10))
#: what a search selects its best setting by (``auto``: what the claims are about)
SELECTIONS = ("auto", "final", "steps_to_target", "auc")
_CLAIM_KEYS = {f.name for f in dataclasses.fields(Claim)}


def _number(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{field}: got {value!r}, expected a finite number")
    return float(value)


def _claim(index: int, item: Any) -> Claim:
    where = f"claims[{index}]"
    if isinstance(item, Claim):
        return item
    if not isinstance(item, dict):
        raise SpecError(f"{where}: got {item!r}, expected a table with optimizer, baseline, ...")
    unknown = sorted(set(item) - _CLAIM_KEYS)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown key; expected one of {sorted(_CLAIM_KEYS)}")
    for key in ("optimizer", "baseline", "quantity"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise SpecError(f"{where}.{key}: got {item.get(key)!r}, expected a non-empty string")
    if item["quantity"] not in QUANTITIES:
        raise SpecError(
            f"{where}.quantity: got {item['quantity']!r}, expected one of {list(QUANTITIES)}"
        )
    low = _number(f"{where}.at_least", item.get("at_least"))
    high = _number(f"{where}.at_most", item.get("at_most"))
    if low is None and high is None:
        raise SpecError(f"{where}: got neither at_least nor at_most, expected at least one")
    if low is not None and high is not None and low > high:
        raise SpecError(f"{where}: at_least {low} > at_most {high}, expected at_least <= at_most")
    task, text = item.get("task"), item.get("text", "")
    if task is not None and not isinstance(task, str):
        raise SpecError(f"{where}.task: got {task!r}, expected a task name")
    if not isinstance(text, str):
        raise SpecError(f"{where}.text: got {text!r}, expected a string")
    return Claim(item["optimizer"], item["baseline"], item["quantity"], low, high, task, text)


def parse_claims(value: Any) -> tuple[Claim, ...]:
    """Claims from a list of TOML tables (or :class:`Claim` values).

    Raises:
        SpecError: not a list, an unknown key, a missing or bad field.
    """
    if isinstance(value, dict | str) or not isinstance(value, Iterable):
        raise SpecError(f"claims: got {value!r}, expected a list of [[study.claims]] tables")
    return tuple(_claim(i, item) for i, item in enumerate(value))


def parse_margins(value: Any) -> tuple[tuple[str, float], ...]:
    """Equivalence margins by quantity, defaults filled in.

    Raises:
        SpecError: an unknown quantity or a margin that is not a positive number.
    """
    items = value.items() if isinstance(value, dict) else value
    try:
        given = {str(k): v for k, v in items}
    except (TypeError, ValueError) as exc:
        raise SpecError(f"margins: got {value!r}, expected a table quantity = margin") from exc
    out = dict(DEFAULT_MARGINS)
    for key, margin in given.items():
        if key not in QUANTITIES:
            raise SpecError(f"margins: got quantity {key!r}, expected one of {list(QUANTITIES)}")
        number = _number(f"margins.{key}", margin)
        if number is None or number <= 0:
            raise SpecError(f"margins.{key}: got {margin!r}, expected a number > 0")
        out[key] = number
    return tuple(sorted(out.items()))


def resolve_selection(selection: str, claims: Iterable[Claim]) -> str:
    """The selection criterion in force: ``auto`` follows the claims' quantity.

    >>> resolve_selection("auto", [Claim("a", "b", "steps_to_target", 0.3)])
    'steps_to_target'
    >>> resolve_selection("auto", [])
    'final'
    """
    if selection != "auto":
        return selection
    quantities = {c.quantity for c in claims}
    return "steps_to_target" if "steps_to_target" in quantities else "final"


def claims_to_toml(claims: Iterable[Claim]) -> str:
    """``[[study.claims]]`` tables that :func:`parse_claims` reads back."""
    blocks = []
    for claim in claims:
        lines = ["[[study.claims]]"]
        for key, value in dataclasses.asdict(claim).items():
            if value is not None and value != "":
                lines.append(f"{key} = {json.dumps(value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
