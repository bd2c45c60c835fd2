"""Search spaces for ``steplab tune``: the ``--space`` grammar, defaults, and conversions.

Grammar (items separated by commas; whitespace is ignored)::

    space := item ("," item)*
    item  := name "=" range
    name  := hyperparameter ["." index]       lr, weight_decay, beta1, betas.0
    range := "log(" low "," high ")"          log-uniform, 0 < low < high
           | "(" low "," high ")"             uniform (also "linear(" low "," high ")")
           | "int(" low "," high ")"          uniform integer
           | "[" value ("," value)* "]"       a categorical choice

``betas.0`` sets element 0 of the tuple hyperparameter ``betas`` (the other
elements keep the spec's or the default's value). A name belongs to the
*innermost* optimizer that takes it, else to the wrapper that does: for
``lookahead(adam)``, ``lr`` and ``betas.0`` are Adam's and ``k`` and ``alpha``
are Lookahead's own (``--space "lr=log(1e-4, 1e-2), k=int(3, 10), alpha=(0.3, 0.9)"``).

Default spaces come from the optimizer registry (``OptimizerInfo.search_space``)
and grow with the trial budget as the Deep Learning Tuning Playbook advises for
Adam: the learning rate always, β₁ from 10 trials, ε from 25, β₂ from 50.

References:
    V. Godbole, G. E. Dahl, J. Gilmer, C. J. Shallue, Z. Nado, "Deep Learning
    Tuning Playbook", 2023, github.com/google-research/tuning_playbook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from steplab.errors import SpecError
from steplab.optim import OPTIMIZERS, OptimizerSpec

__all__ = ["Dimension", "SearchSpace", "default_space", "parse_space", "resolve_space"]

Value = float | int | str | bool

_NAME = r"(?P<name>[A-Za-z_]\w*(?:\.\d+)?)"
_NUM = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_RANGE = re.compile(rf"^{_NAME}\s*=\s*(?P<kind>log|linear|int)?\s*\({_NUM},{_NUM}\)$")
_CHOICE = re.compile(rf"^{_NAME}\s*=\s*\[(?P<items>[^\]]*)\]$")
_FORMS = "name=log(low, high), name=(low, high), name=int(low, high) or name=[a, b, ...]"


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter.

    Attributes:
        name: as written in the space (``"lr"``, ``"beta1"``, ``"betas.0"``).
        low: lower bound (ignored for choices).
        high: upper bound (ignored for choices).
        log: sample uniformly in log space.
        integer: sample integers.
        choices: the values of a categorical dimension, else None.
    """

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[Value, ...] | None = None

    def __str__(self) -> str:
        if self.choices is not None:
            return f"{self.name}=[{', '.join(repr(c) for c in self.choices)}]"
        kind = "int" if self.integer else "log" if self.log else ""
        low, high = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        return f"{self.name}={kind}({low!r}, {high!r})"


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space over the innermost optimizer's hyperparameters.

    Example:
        >>> from steplab.optim import parse_spec
        >>> space = parse_space("lr=log(1e-4, 1e-1), betas.0=(0.8, 0.99)", parse_spec("adam"))
        >>> str(space)
        'lr=log(0.0001, 0.1), betas.0=(0.8, 0.99)'
        >>> str(space.apply(parse_spec("adam"), {"lr": 0.01, "betas.0": 0.85}))
        'adam(betas=(0.85, 0.999), lr=0.01)'
    """

    dims: tuple[Dimension, ...]

    def __str__(self) -> str:
        return ", ".join(str(d) for d in self.dims)

    @property
    def names(self) -> tuple[str, ...]:
        """The dimension names in order."""
        return tuple(d.name for d in self.dims)

    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions keyed by dimension name."""
        import optuna.distributions as od

        out: dict[str, Any] = {}
        for d in self.dims:
            if d.choices is not None:
                out[d.name] = od.CategoricalDistribution(list(d.choices))
            elif d.integer:
                out[d.name] = od.IntDistribution(int(d.low), int(d.high), log=d.log)
            else:
                out[d.name] = od.FloatDistribution(d.low, d.high, log=d.log)
        return out

    def to_ray(self) -> dict[str, Any]:
        """Ray Tune sampling domains keyed by dimension name."""
        from ray import tune

        out: dict[str, Any] = {}
        for d in self.dims:
            if d.choices is not None:
                out[d.name] = tune.choice(list(d.choices))
            elif d.integer:
                out[d.name] = tune.randint(int(d.low), int(d.high) + 1)
            else:
                out[d.name] = (tune.loguniform if d.log else tune.uniform)(d.low, d.high)
        return out

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample every dimension from an Optuna ``trial`` (define-by-run)."""
        out: dict[str, Any] = {}
        for d in self.dims:
            if d.choices is not None:
                out[d.name] = trial.suggest_categorical(d.name, list(d.choices))
            elif d.integer:
                out[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
            else:
                out[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.log)
        return out

    def at_boundary(self, values: Mapping[str, Any], margin: float = 0.05) -> list[str]:
        """Names whose value lies within ``margin`` of the range's width of a bound.

        The Tuning Playbook's check: a best point on the boundary means the
        range should grow. Widths of log dimensions are measured in log space.
        """
        near = []
        for d in self.dims:
            if d.choices is not None or d.name not in values:
                continue
            f = math.log if d.log else float
            lo, hi, v = f(d.low), f(d.high), f(float(values[d.name]))
            if min(v - lo, hi - v) <= margin * (hi - lo):
                near.append(d.name)
        return near

    def apply(self, spec: OptimizerSpec, values: Mapping[str, Any]) -> OptimizerSpec:
        """Return ``spec`` with the sampled ``values`` set on the optimizer each belongs to."""
        levels = _levels(spec)
        overrides: list[dict[str, Any]] = [{} for _ in levels]
        for name, value in values.items():
            base, _, index = name.partition(".")
            depth = _owner(base, levels)
            level = levels[depth]
            plain = value.item() if hasattr(value, "item") else value
            if not index:
                overrides[depth][base] = plain
                continue
            defaults = OPTIMIZERS[level.name].defaults
            current = overrides[depth].get(base, level.kwargs.get(base, defaults.get(base)))
            items = list(current) if isinstance(current, (tuple, list)) else []
            items[int(index)] = plain
            overrides[depth][base] = tuple(items)
        return _rebuild(levels, overrides)


def _levels(spec: OptimizerSpec) -> list[OptimizerSpec]:
    """The spec's levels, innermost first: ``lookahead(adam)`` -> [adam, lookahead(adam)]."""
    chain = [spec]
    while chain[-1].inner is not None:
        chain.append(chain[-1].inner)
    return chain[::-1]


def _tunable(level: OptimizerSpec) -> list[str]:
    fixed = ("foreach", "fused", "maximize")
    return [k for k in OPTIMIZERS[level.name].accepts() if k not in fixed]


def _owner(base: str, levels: list[OptimizerSpec]) -> int:
    """Index of the innermost level that takes ``base`` (-1 when none does)."""
    return next((i for i, level in enumerate(levels) if base in _tunable(level)), -1)


def _rebuild(levels: list[OptimizerSpec], overrides: list[dict[str, Any]]) -> OptimizerSpec:
    inner: OptimizerSpec | None = None
    for level, extra in zip(levels, overrides, strict=True):
        inner = OptimizerSpec(level.name, {**level.kwargs, **extra}, inner)
    assert inner is not None
    return inner


def _number(text: str, field: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SpecError(f"space: {field} got {text!r}, expected a finite number")
    return value


def _choice_value(text: str) -> Value:
    text = text.strip().strip("'\"")
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _check_name(name: str, spec: OptimizerSpec) -> None:
    levels = _levels(spec)
    base, _, index = name.partition(".")
    depth = _owner(base, levels)
    if depth < 0:
        tunable = [f"{k} ({level.name})" if i else k
                   for i, level in enumerate(levels) for k in _tunable(level)]
        raise SpecError(
            f"space: {name!r} is not a hyperparameter of {spec}; "
            f"expected one of {', '.join(tunable)}"
        )
    level = levels[depth]
    if index:
        default = level.kwargs.get(base, OPTIMIZERS[level.name].defaults.get(base))
        if not isinstance(default, (tuple, list)) or int(index) >= len(default):
            raise SpecError(
                f"space: {name!r} indexes {base!r} of {level.name}, whose value is "
                f"{default!r}; expected a tuple with more than {index} elements"
            )


def _parse_item(item: str) -> Dimension:
    match = _RANGE.match(item)
    if match:
        kind, name = match["kind"] or "linear", match["name"]
        low, high = _number(match[3], f"{name} low"), _number(match[4], f"{name} high")
        if not low < high:
            raise SpecError(
                f"space: {name} bounds ({low:g}, {high:g}) are in the wrong order or equal; "
                "expected low < high"
            )
        if kind == "log" and low <= 0:
            raise SpecError(f"space: {name}=log({low:g}, {high:g}) needs low > 0")
        if kind == "int" and not (low.is_integer() and high.is_integer()):
            raise SpecError(f"space: {name}=int({low:g}, {high:g}) needs integer bounds")
        return Dimension(name, low, high, log=kind == "log", integer=kind == "int")
    match = _CHOICE.match(item)
    if match:
        values = tuple(_choice_value(v) for v in match["items"].split(",") if v.strip())
        if not values:
            raise SpecError(f"space: {match['name']}=[] is empty; expected at least one value")
        return Dimension(match["name"], choices=values)
    raise SpecError(f"space: cannot read {item!r}; expected {_FORMS}")


def _split_items(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    return items


def parse_space(text: str, spec: OptimizerSpec) -> SearchSpace:
    """Parse a ``--space`` string and check every name against ``spec``'s optimizer.

    Args:
        text: e.g. ``"lr=log(1e-5, 1), betas.0=(0.8, 0.99), nesterov=[True, False]"``.
        spec: the optimizer spec the space tunes (its innermost optimizer is checked).

    Returns:
        The :class:`SearchSpace`, dimensions in the order written.

    Raises:
        SpecError: a malformed item, a name the optimizer does not have, bounds in
            the wrong order, a non-positive log bound, or a name given twice.

    Example:
        >>> from steplab.optim import parse_spec
        >>> parse_space("lr=log(1, 1e-3)", parse_spec("sgd"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steplab.errors.SpecError: space: lr bounds (1, 0.001) are in the wrong order...
    """
    if not text.strip():
        raise SpecError(f"space: got an empty string; expected {_FORMS}")
    dims: list[Dimension] = []
    for item in _split_items(text):
        if not item:
            raise SpecError(f"space: empty item in {text!r}; expected items separated by ','")
        dim = _parse_item(item)
        _check_name(dim.name, spec)
        if dim.name in (d.name for d in dims):
            raise SpecError(f"space: {dim.name!r} given twice in {text!r}")
        dims.append(dim)
    return SearchSpace(tuple(dims))


def default_space(spec: OptimizerSpec, trials: int) -> SearchSpace:
    """The registry's search space for ``spec``, for a trial budget.

    A hyperparameter joins once ``trials`` reaches its ``min_trials`` (Tuning
    Playbook: learning rate always; β₁ from 10 trials, ε from 25, β₂ from 50).
    The innermost optimizer's come first, then a wrapper's own (Lookahead's
    ``alpha`` from 10 trials, ``k`` from 25). Hyperparameters the spec fixes
    explicitly are left out.

    Example:
        >>> from steplab.optim import parse_spec
        >>> str(default_space(parse_spec("adam"), 12))
        'lr=log(1e-05, 0.1), beta1=(0.8, 0.99)'
        >>> str(default_space(parse_spec("adam(lr=0.01)"), 12))
        'beta1=(0.8, 0.99)'
        >>> str(default_space(parse_spec("lookahead(sgd, k=5)"), 30))
        'lr=log(0.0001, 1.0), alpha=(0.3, 0.9)'
    """
    dims: list[Dimension] = []
    for level in _levels(spec):
        info = OPTIMIZERS[level.name]
        for name, (low, high, scale, min_trials) in info.search_space.items():
            fixed = name in level.kwargs or (
                name in ("beta1", "beta2") and "betas" in level.kwargs)
            if trials < min_trials or fixed or name in (d.name for d in dims):
                continue
            default = info.defaults.get(name)
            integer = isinstance(default, int) and not isinstance(default, bool)
            dims.append(Dimension(name, float(low), float(high), scale == "log", integer))
    return SearchSpace(tuple(dims))


def resolve_space(text: str | None, spec: OptimizerSpec, trials: int) -> SearchSpace:
    """``parse_space(text)`` when given, else :func:`default_space`; never empty.

    Raises:
        SpecError: as :func:`parse_space`, or the default space is empty (every
            hyperparameter is fixed by the spec).
    """
    space = parse_space(text, spec) if text is not None else default_space(spec, trials)
    if not space.dims:
        raise SpecError(
            f"space: nothing to tune for {spec} with {trials} trials "
            "(the spec fixes every default hyperparameter); pass --space"
        )
    return space
