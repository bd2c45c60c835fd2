"""Per-optimizer statistics of a study: t-intervals over seeds, steps-to-target, AUC.

Comparisons between optimizers live in :mod:`steplab.study.verdicts`.

* Mean and 95% t-interval over seeds: ``m ± t_{0.975, n-1} · s / sqrt(n)``.
* Steps-to-target: the first evaluated step whose metric meets the target.
* AUC of the training loss: trapezoid area over steps divided by the step
  range, i.e. the average training loss, comparable across run lengths.

>>> ci = mean_ci([1.0, 2.0, 3.0])
>>> round(ci.mean, 3), round(ci.low, 3), round(ci.high, 3)
(2.0, -0.484, 4.484)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Interval",
    "loss_auc",
    "mean_ci",
    "meets_target",
    "steps_to_target",
    "t_quantile",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval.

    Attributes:
        mean: the estimate (a mean, or a difference of means).
        low: lower end of the interval (nan when it cannot be computed).
        high: upper end of the interval.
        n: number of observations behind it.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval is on one side of 0 (a significant difference)."""
        return bool(self.low > 0.0 or self.high < 0.0)

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON form."""
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _t_cdf(t: float, df: int) -> float:
    """CDF of Student's t: ``1 - I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)`` for t >= 0."""
    x = df / (df + t * t)
    a, b = df / 2.0, 0.5
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        ibeta = math.exp(log_front) * _betacf(a, b, x) / a
    else:
        ibeta = 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b
    tail = ibeta / 2.0
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """Quantile ``p`` (in (0, 1)) of Student's t with ``df`` degrees of freedom.

    Found by bisection on the CDF, which is computed from the regularised
    incomplete beta function (continued fraction, as in Numerical Recipes 6.4).

    >>> round(t_quantile(0.975, 2), 3), round(t_quantile(0.975, 30), 3)
    (4.303, 2.042)
    """
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        low, high = (mid, high) if _t_cdf(mid, df) < p else (low, mid)
        if high - low < 1e-12:
            break
    return (low + high) / 2.0


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and t-interval over finite values (non-finite ones are dropped).

    Args:
        values: one number per seed.
        confidence: coverage of the interval.

    Returns:
        The mean with its interval; ``low == high == mean`` for one value and
        all-nan for none.
    """
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(xs.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(xs.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(xs.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def meets_target(value: float | None, target: float, mode: str) -> bool:
    """True when ``value`` reaches ``target`` (``mode`` "max": at least, "min": at most).

    >>> meets_target(0.91, 0.9, "max"), meets_target(0.5, 0.3, "min")
    (True, False)
    """
    if value is None or not math.isfinite(value):
        return False
    return value >= target if mode == "max" else value <= target


def steps_to_target(
    rows: Iterable[Mapping[str, Any]], metric: str, target: float, mode: str
) -> tuple[int, float] | None:
    """First logged ``(step, wall_time)`` whose ``metric`` meets the target, or None.

    >>> rows = [{"step": 10, "wall_time": 1.0, "val_accuracy": 0.5},
    ...         {"step": 20, "wall_time": 2.0, "val_accuracy": 0.95}]
    >>> steps_to_target(rows, "val_accuracy", 0.9, "max")
    (20, 2.0)
    """
    for row in rows:
        if metric in row and meets_target(row[metric], target, mode):
            return int(row["step"]), float(row.get("wall_time", math.nan))
    return None


def loss_auc(steps: Sequence[float], losses: Sequence[float]) -> float:
    """Area under the loss curve divided by the step range (the average loss).

    Non-finite losses make the AUC infinite (a diverged run has no finite area).

    >>> loss_auc([0, 10, 20], [2.0, 1.0, 1.0])
    1.25
    """
    x, y = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    if x.size == 0:
        return math.nan
    if not np.all(np.isfinite(y)):
        return math.inf
    if x.size == 1 or x[-1] == x[0]:
        return float(y.mean())
    area = float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(x)))
    return area / float(x[-1] - x[0])
