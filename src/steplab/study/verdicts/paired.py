"""Paired analysis of a final metric: Student's t on per-seed differences.

Optimizers in a study share seeds (the same initialisation and data order),
so seed ``i`` gives one pair ``(a_i, b_i)`` and the evidence is the vector of
differences ``d_i = a_i - b_i``. The paired t-interval

    mean(d) ± t_{1 - alpha/2, n-1} · sd(d) / sqrt(n)

has its stated level whenever the differences are close to normal; under the
paired design the two runs of a seed have independent, identically shaped
noise, so ``d`` is symmetric about the true effect and the t-interval is exact
for normal noise and conservative for heavy-tailed symmetric noise (the
calibration simulation in ``tests/study/test_verdict_calibration.py`` checks
both). Unlike a sign-flip permutation test it can reject with 3 pairs, and its
power has a closed form (the non-central t), which gives the minimum
detectable effect.

>>> t = PairedMean([0.91, 0.92, 0.90, 0.93], [0.90, 0.90, 0.89, 0.91])
>>> round(t.estimate, 4), t.n
(0.015, 4)
>>> [round(v, 4) for v in t.ci(0.95)]
[0.0058, 0.0242]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

__all__ = ["PairedMean", "paired_t_mde", "paired_t_pvalues"]


def paired_t_pvalues(diffs: np.ndarray, value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised one-sided paired t p-values over the last axis of ``diffs``.

    Args:
        diffs: differences, shape ``(..., n)`` with ``n >= 2``.
        value: the hypothesised mean difference.

    Returns:
        ``(p_greater, p_less)``: p-values of ``H0: mean <= value`` and of
        ``H0: mean >= value``; a zero standard error gives 0 or 1.

    >>> g, l = paired_t_pvalues(np.array([[0.1, 0.2, 0.3]]))
    >>> round(float(g[0]), 4), round(float(l[0]), 4)
    (0.0371, 0.9629)
    """
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    se = d.std(axis=-1, ddof=1) / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean - value) / se
    greater = np.where(se > 0, stats.t.sf(t, n - 1), np.where(mean > value, 0.0, 1.0))
    less = np.where(se > 0, stats.t.cdf(t, n - 1), np.where(mean < value, 0.0, 1.0))
    return greater, less


class PairedMean:
    """The mean of paired differences ``a - b`` with its t-interval and one-sided tests.

    Pairs where either value is missing or non-finite are dropped.

    Args:
        a: one value per seed for the optimizer under test.
        b: one value per seed (the same seeds, same order) for the baseline.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """

    def __init__(self, a: Sequence[float], b: Sequence[float]) -> None:
        xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if xa.shape != xb.shape:
            raise ValueError(f"pairs: got {xa.size} and {xb.size} values, expected equal counts")
        keep = np.isfinite(xa) & np.isfinite(xb)
        self.diffs = xa[keep] - xb[keep]
        self.n = int(self.diffs.size)
        self.estimate = float(self.diffs.mean()) if self.n else math.nan
        self.sd = float(self.diffs.std(ddof=1)) if self.n > 1 else math.nan
        self.se = self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    def p_greater(self, value: float) -> float:
        """One-sided p-value of ``H0: mean <= value`` against ``mean > value``.

        Equal differences (zero standard error) leave no doubt: 0 or 1.
        """
        if self.n < 2:
            return 1.0
        return float(paired_t_pvalues(self.diffs, value)[0])

    def p_less(self, value: float) -> float:
        """One-sided p-value of ``H0: mean >= value`` against ``mean < value``."""
        if self.n < 2:
            return 1.0
        return float(paired_t_pvalues(self.diffs, value)[1])

    def ci(self, level: float) -> tuple[float, float]:
        """Two-sided ``level`` t-interval of the mean difference (nan with fewer than 2 pairs)."""
        if self.n < 2:
            return (math.nan, math.nan)
        half = float(stats.t.ppf(0.5 + level / 2.0, self.n - 1)) * self.se
        return (self.estimate - half, self.estimate + half)

    def mde(self, alpha: float, power: float = 0.8) -> float:
        """Smallest true mean difference the two-sided test at ``alpha`` detects with ``power``."""
        return paired_t_mde(self.sd, self.n, alpha, power)

    @property
    def min_p(self) -> float:
        """The smallest two-sided p-value the test can give (0: continuous)."""
        return 0.0 if self.n >= 2 else 1.0


def paired_t_mde(sd: float, n: int, alpha: float, power: float = 0.8) -> float:
    """Minimum detectable mean difference of a two-sided paired t-test.

    Solves ``P(|T| > t_{1-alpha/2, n-1}) = power`` for the effect, where ``T``
    is non-central t with ``n - 1`` degrees of freedom and non-centrality
    ``effect · sqrt(n) / sd``.

    Args:
        sd: standard deviation of the differences.
        n: number of pairs.
        alpha: two-sided level of the test.
        power: wanted probability of detection.

    Returns:
        The effect in the differences' units (inf with fewer than 2 pairs, 0 when ``sd`` is 0).

    >>> round(paired_t_mde(1.0, 10, 0.05), 3)
    0.996
    """
    if n < 2 or not math.isfinite(sd):
        return math.inf
    if sd == 0.0:
        return 0.0
    df = n - 1
    crit = float(stats.t.ppf(1.0 - alpha / 2.0, df))

    def gap(k: float) -> float:  # k: the effect in standard deviations of the differences
        nc = k * math.sqrt(n)
        upper, lower = float(stats.nct.sf(crit, df, nc)), float(stats.nct.cdf(-crit, df, nc))
        # scipy's non-central t can return nan for a negligible far tail
        return (0.0 if math.isnan(upper) else upper) + (0.0 if math.isnan(lower) else lower) - power

    high = 1.0
    while gap(high) < 0.0:
        high *= 2.0
        if high > 1e6:
            return math.inf
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-10)) * sd
