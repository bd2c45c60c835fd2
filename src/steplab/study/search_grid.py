"""Search points for the per-optimizer learning-rate search: log grids and scrambled Halton.

Every optimizer gets the same number of trials (the study's ``budget``). With
the learning rate alone the points form a log grid centred on the
optimizer's sensible default; when other hyperparameters are searched too the
points are scrambled-Halton quasi-random, as the Deep Learning Tuning Playbook
and AlgoPerf recommend (Halton, 1960; digit-permutation scrambling after
Braaten and Weller, 1979, one permutation per digit position).

>>> [round(x, 4) for x in log_grid(1e-3, 1e-1, 3)]
[0.001, 0.01, 0.1]
>>> pts = scrambled_halton(4, 2, seed=0)
>>> len(pts), all(0.0 <= v < 1.0 for p in pts for v in p)
(4, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SENSIBLE_LR",
    "edge_warning",
    "log_grid",
    "lr_center",
    "scrambled_halton",
    "search_points",
]

#: Centre of the lr search per update rule: the values practitioners start from
#: (Adam's paper default 1e-3; SGD 0.1 on normalised data; heavy-ball and
#: Nesterov with momentum 0.9 take about a tenth of SGD's step).
SENSIBLE_LR: dict[str, float] = {
    "gd": 0.1,
    "sgd": 0.1,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.01,
    "rmsprop": 1e-3,
    "adam": 1e-3,
    "adamw": 1e-3,
    "amsgrad": 1e-3,
    "nadam": 2e-3,
}
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def log_grid(low: float, high: float, n: int) -> list[float]:
    """Return ``n`` log-spaced values from ``low`` to ``high`` (both included).

    Args:
        low: smallest value (> 0).
        high: largest value (>= low).
        n: number of values (>= 1); ``n == 1`` gives the geometric midpoint.

    Returns:
        The values, ascending.
    """
    if n == 1:
        return [math.sqrt(low * high)]
    return [float(v) for v in np.geomspace(low, high, n)]


def scrambled_halton(n: int, dims: int, seed: int = 0) -> list[list[float]]:
    """Return ``n`` scrambled-Halton points in ``[0, 1)^dims``.

    Point ``i`` (from 1) has coordinate ``d`` equal to the radical inverse of
    ``i`` in the ``d``-th prime base ``b``, ``sum_j pi_j(a_j) b^-(j+1)`` where
    ``a_j`` are the base-``b`` digits of ``i`` and each ``pi_j`` is a random
    permutation of the digits drawn from ``seed`` (truncated at double precision).

    Args:
        n: number of points.
        dims: dimensions (at most 12).
        seed: seed of the digit permutations.

    Returns:
        ``n`` lists of ``dims`` floats.
    """
    rng = np.random.default_rng(seed)
    points = [[0.0] * dims for _ in range(n)]
    for d in range(dims):
        base = _PRIMES[d]
        n_digits = math.ceil(53 * math.log(2) / math.log(base))
        perms = [rng.permutation(base) for _ in range(n_digits)]
        for i in range(n):
            index, value, scale = i + 1, 0.0, 1.0 / base
            for perm in perms:
                value += float(perm[index % base]) * scale
                index //= base
                scale /= base
            points[i][d] = min(value, math.nextafter(1.0, 0.0))
    return points


def lr_center(innermost_name: str, innermost_kwargs: Mapping[str, Any]) -> float:
    """The centre of the lr search: the spec's own ``lr=`` if set, else :data:`SENSIBLE_LR`.

    >>> lr_center("adam", {}), lr_center("sgd", {"lr": 0.5})
    (0.001, 0.5)
    """
    if "lr" in innermost_kwargs:
        return float(innermost_kwargs["lr"])
    return SENSIBLE_LR.get(innermost_name, 1e-3)


def search_points(
    center: float,
    span: float,
    budget: int,
    extra_space: Mapping[str, tuple[float, float, str, int]] | None = None,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Return ``budget`` hyperparameter settings for one optimizer.

    Args:
        center: lr the range is centred on.
        span: the lr range is ``[center / span, center * span]``.
        budget: number of settings.
        extra_space: other hyperparameters, ``name -> (low, high, "log"|"linear",
            min_trials)``; those with ``min_trials <= budget`` are searched with
            scrambled Halton, else the lr alone on a log grid.
        seed: Halton scrambling seed.

    Returns:
        Settings as ``{"lr": ..., other: ...}``, sorted by lr.

    >>> [round(p["lr"], 3) for p in search_points(0.01, 10.0, 3)]
    [0.001, 0.01, 0.1]
    """
    low, high = center / span, center * span
    extra = {k: v for k, v in (extra_space or {}).items() if k != "lr" and v[3] <= budget}
    if not extra:
        return [{"lr": lr} for lr in log_grid(low, high, budget)]
    names = ["lr", *sorted(extra)]
    ranges: dict[str, tuple[float, float, str]] = {"lr": (low, high, "log")}
    ranges.update({k: (float(v[0]), float(v[1]), v[2]) for k, v in extra.items()})
    settings = []
    for point in scrambled_halton(budget, len(names), seed):
        settings.append({k: _scale(u, *ranges[k]) for k, u in zip(names, point, strict=True)})
    return sorted(settings, key=lambda s: s["lr"])


def _scale(u: float, low: float, high: float, kind: str) -> float:
    if kind == "log":
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return low + u * (high - low)


def edge_warning(lrs: Sequence[float], best_lr: float) -> str | None:
    """Say so when the best lr is the smallest or largest one tried.

    >>> edge_warning([0.1, 1.0, 10.0], 10.0)
    'best lr 10 is at the upper edge of the searched range [0.1, 10]; widen lr_span'
    >>> edge_warning([0.1, 1.0, 10.0], 1.0) is None
    True
    """
    if len(lrs) < 2:
        return None
    low, high = min(lrs), max(lrs)
    side = "upper" if best_lr >= high else "lower" if best_lr <= low else None
    if side is None:
        return None
    return (
        f"best lr {best_lr:.3g} is at the {side} edge of the searched range "
        f"[{low:.3g}, {high:.3g}]; widen lr_span"
    )
