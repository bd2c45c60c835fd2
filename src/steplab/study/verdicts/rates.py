"""Paired analysis of a rate (how often runs diverge): McNemar's exact test and Tango's interval.

Two arms run at the same settings (learning rate, seed), so setting ``i``
gives a pair of outcomes ``(a_i, b_i)``, each 1 (diverged) or 0. The effect
is the difference of the two rates, ``δ = P(a) - P(b)``, estimated by
``(n10 - n01) / n`` where ``n10`` counts pairs where only ``a`` diverged and
``n01`` pairs where only ``b`` did; concordant pairs carry no information on
the sign.

* **No difference** (``δ = 0``): McNemar's exact test. Given the ``m = n10 +
  n01`` discordant pairs, ``n10 ~ Binomial(m, 1/2)`` under the null, so the
  one-sided p-values are binomial tails: exact at any sample size.
* **Any other value** (equivalence margins, claim ranges, intervals): Tango's
  score test (Tango 1998). Under ``H0: δ = d`` the constrained maximum-likelihood
  estimate of ``p01`` solves a quadratic (derived in :func:`_p01_constrained`),
  and ``Z = (n10 - n01 - n d) / sqrt(n (2 p01 + d (1 - d)))`` is close to
  standard normal; its inversion is the interval, which unlike the Wald
  interval behaves at rates near 0 and 1.

References:
    McNemar, "Note on the sampling error of the difference between correlated
    proportions", Psychometrika 1947. Tango, "Equivalence test and confidence
    interval for the difference in proportions for the paired-sample design",
    Statistics in Medicine 1998.

>>> r = PairedRate([1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0])
>>> r.estimate, r.n, round(r.p_greater(0.0), 4)
(0.75, 8, 0.0156)
>>> low, high = r.ci(0.95); bool(0 < low < 0.75 < high <= 1)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import optimize, stats

__all__ = ["PairedRate"]


def _p01_constrained(n10: int, n01: int, n: int, d: float) -> float:
    """Maximum-likelihood ``p01`` under ``p10 - p01 = d`` (``p00 + p11`` the rest).

    The multinomial log-likelihood ``n10 log(p + d) + n01 log p + r log(1 - 2p - d)``
    (``r = n - n10 - n01``) is stationary where
    ``2n p² - B p - n01 d (1 - d) = 0`` with ``B = n10 (1 - d) + n01 (1 - 3d) - 2 r d``
    (multiply the derivative through by ``p (p + d) (1 - 2p - d)``); the root
    ``(B + sqrt(B² + 8 n n01 d (1 - d))) / (4n)`` is the one inside
    ``[max(0, -d), (1 - d) / 2]``.
    """
    r = n - n10 - n01
    b = n10 * (1 - d) + n01 * (1 - 3 * d) - 2 * r * d
    disc = max(0.0, b * b + 8 * n * n01 * d * (1 - d))
    p = (b + math.sqrt(disc)) / (4 * n)
    return min(max(p, max(0.0, -d)), (1 - d) / 2)


class PairedRate:
    """The difference of two paired rates ``P(a) - P(b)`` (see the module docstring).

    Args:
        a: 1/0 (or True/False) per setting for the arm under test.
        b: the same settings, same order, for the baseline.

    Raises:
        ValueError: ``a`` and ``b`` differ in length or hold other values than 0/1.
    """

    def __init__(self, a: Sequence[float | bool], b: Sequence[float | bool]) -> None:
        if len(a) != len(b):
            raise ValueError(f"pairs: got {len(a)} and {len(b)} outcomes, expected equal counts")
        if any(float(v) not in (0.0, 1.0) for v in (*a, *b)):
            raise ValueError("outcomes: expected 0/1 (diverged or not) for every run")
        self.n = len(a)
        self.n10 = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
        self.n01 = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
        self.rate_a = sum(map(float, a)) / self.n if self.n else math.nan
        self.rate_b = sum(map(float, b)) / self.n if self.n else math.nan
        self.estimate = (self.n10 - self.n01) / self.n if self.n else math.nan

    def _z(self, d: float) -> float:
        """Tango's score statistic at ``δ = d``."""
        p01 = _p01_constrained(self.n10, self.n01, self.n, d)
        var = self.n * (2 * p01 + d * (1 - d))
        diff = self.n10 - self.n01 - self.n * d
        if var <= 0.0:
            return 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return diff / math.sqrt(var)

    def p_greater(self, value: float) -> float:
        """One-sided p-value of ``H0: δ <= value`` (exact McNemar at 0, Tango's score elsewhere)."""
        if self.n == 0 or value >= 1.0:
            return 1.0
        if value <= -1.0:
            return 0.0
        if value == 0.0:
            m = self.n10 + self.n01
            return 1.0 if m == 0 else float(stats.binom.sf(self.n10 - 1, m, 0.5))
        return float(stats.norm.sf(self._z(value)))

    def p_less(self, value: float) -> float:
        """One-sided p-value of ``H0: δ >= value``."""
        if self.n == 0 or value <= -1.0:
            return 1.0
        if value >= 1.0:
            return 0.0
        if value == 0.0:
            m = self.n10 + self.n01
            return 1.0 if m == 0 else float(stats.binom.sf(self.n01 - 1, m, 0.5))
        return float(stats.norm.cdf(self._z(value)))

    def ci(self, level: float) -> tuple[float, float]:
        """Tango's two-sided score interval of ``δ`` at ``level`` (nan without pairs)."""
        if self.n == 0:
            return (math.nan, math.nan)
        crit = float(stats.norm.ppf(0.5 + level / 2.0))
        eps = 1e-9
        est = self.estimate

        def gap(d: float) -> float:
            return self._z(d) - crit

        def gap_high(d: float) -> float:
            return self._z(d) + crit

        low = -1.0 if gap(-1.0 + eps) <= 0 else float(optimize.brentq(gap, -1.0 + eps, est))
        high = 1.0 if gap_high(1.0 - eps) >= 0 else float(
            optimize.brentq(gap_high, est, 1.0 - eps))
        return (low, high)

    def mde(self, alpha: float, power: float = 0.8) -> float:
        """Smallest rate difference the two-sided test at ``alpha`` detects with ``power``.

        Normal approximation with the observed per-pair spread
        (``sd² = m/n - δ̂²``, at least that of a single discordant pair).
        """
        if self.n < 2:
            return math.inf
        spread = max((self.n10 + self.n01) / self.n - self.estimate ** 2, 1.0 / self.n)
        z = float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))
        return min(1.0, z * math.sqrt(spread / self.n))
