"""Time to a target as censored data: Kaplan-Meier and a paired, censoring-aware comparison.

A run that never reaches the target within its ``limit`` steps is *right
censored*: its time is only known to exceed the limit. It is never averaged,
never replaced by the run length, and never given a symmetric interval.

**One optimizer**: the fraction of seeds that reached the target and the
Kaplan-Meier median (the smallest time at which the estimated fraction still
short of the target falls to one half), or ``>= limit`` when fewer than half
reached it.

**A pair of optimizers** (same seeds): the effect is a scale ratio ``theta``
(the optimizer under test needs ``theta`` times the baseline's steps), reported
as the speed-up ``1 - theta`` ("25% sooner"). For a hypothesised ``theta`` the
test's times are divided by ``theta`` and both times of a pair are truncated
at the smaller of their two censoring limits, ``c_i``; then

    D_i(theta) = log min(T_a,i / theta, c_i) - log min(T_b,i, c_i)

is known for *every* pair, censored or not. If ``theta`` is the true ratio and
the two (rescaled) times of a seed are exchangeable, swapping them flips the
sign of ``D_i`` and leaves ``|D_i|`` unchanged, so the exact sign-flip
permutation distribution of ``sum_i D_i`` gives a valid test at any ``n``,
any censoring and any noise shape (no normality). The confidence interval is
the set of ``theta`` the two one-sided tests do not reject (its hull), and
the estimate is where ``sum_i D_i(theta)`` crosses zero.

The price of exactness: with ``n`` pairs the smallest two-sided p-value is
``2 / 2**n``, so 5 or fewer pairs can never reject at the 5% level, and with
Holm over many verdicts about 10 pairs are needed. The minimum detectable
effect says so (``inf`` when no effect can be detected).

>>> km_median([300.0, 350.0, math.inf, 400.0], [600.0] * 4)
(350.0, False)
>>> km_median([300.0, math.inf, math.inf], [600.0] * 3)
(600.0, True)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "PairedTimeRatio",
    "kaplan_meier",
    "km_median",
    "sign_flip_pvalues",
    "truncated_log_diffs",
]

#: exact enumeration of sign flips up to this many pairs; random flips above
_EXACT_PAIRS = 14
_RANDOM_FLIPS = 1 << 14
_TOL = 1e-12


def kaplan_meier(
    times: Sequence[float], limits: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate of the fraction of runs *not yet* at the target.

    Args:
        times: step at which each run reached the target (inf or nan: never).
        limits: step up to which each run was watched (its censoring time).

    Returns:
        ``(event_times, survival)``: the distinct reaching times and the
        estimated fraction still short of the target just after each.

    >>> t, s = kaplan_meier([100.0, 200.0, math.inf], [300.0, 300.0, 300.0])
    >>> t.tolist(), [round(float(v), 3) for v in s]
    ([100.0, 200.0], [0.667, 0.333])
    """
    x = np.asarray(times, dtype=float)
    c = np.asarray(limits, dtype=float)
    observed = np.isfinite(x) & (x <= c)
    at = np.where(observed, x, c)
    event_times = np.unique(at[observed])
    survival, current = [], 1.0
    for t in event_times:
        at_risk = int(np.sum(at >= t))
        events = int(np.sum(observed & (at == t)))
        current *= 1.0 - events / at_risk
        survival.append(current)
    return event_times, np.asarray(survival, dtype=float)


def km_median(times: Sequence[float], limits: Sequence[float]) -> tuple[float, bool]:
    """Kaplan-Meier median time to target, or a lower bound.

    Returns:
        ``(value, is_bound)``: the median, or ``(largest limit, True)`` meaning
        "at least this many steps" when fewer than half the runs reached it
        (and ``(nan, True)`` for no runs).
    """
    if len(times) == 0:
        return (math.nan, True)
    event_times, survival = kaplan_meier(times, limits)
    hit = np.nonzero(survival <= 0.5 + _TOL)[0]
    if hit.size:
        return (float(event_times[hit[0]]), False)
    return (float(np.max(np.asarray(limits, dtype=float))), True)


def _sign_matrix(n: int) -> np.ndarray:
    if n <= _EXACT_PAIRS:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n))).reshape(-1, n)
    rng = np.random.default_rng(0)
    flips = rng.choice((1.0, -1.0), size=(_RANDOM_FLIPS, n))
    return np.vstack([np.ones((1, n)), flips])


def truncated_log_diffs(
    log_a: np.ndarray,
    log_b: np.ndarray,
    log_limit_a: np.ndarray,
    log_limit_b: np.ndarray,
    log_ratio: float | np.ndarray,
) -> np.ndarray:
    """``D_i(theta)`` of the module text, vectorised (inf log-times: never reached).

    >>> d = truncated_log_diffs(np.log([50.0, np.inf]), np.log([100.0, 80.0]),
    ...                         np.log([600.0, 600.0]), np.log([600.0, 600.0]), 0.0)
    >>> [round(float(v), 3) for v in d]
    [-0.693, 2.015]
    """
    x = log_a - log_ratio
    c = np.minimum(log_limit_a - log_ratio, log_limit_b)
    return np.asarray(np.minimum(x, c) - np.minimum(log_b, c))


def sign_flip_pvalues(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact sign-flip permutation p-values of ``sum(d)`` over the last axis.

    Args:
        diffs: shape ``(..., n)``; all ``2**n`` sign vectors are enumerated
            for ``n <= 14``, else 16,384 random ones (and the identity).

    Returns:
        ``(p_low, p_high)``: the fraction of sign flips whose sum is at most
        (at least) the observed one.

    >>> lo, hi = sign_flip_pvalues(np.array([1.0, 2.0, 3.0]))
    >>> float(lo), float(hi)
    (1.0, 0.125)
    """
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    signs = _sign_matrix(n)
    magnitude = np.abs(d)
    observed = d.sum(axis=-1)
    null = magnitude @ signs.T
    scale = _TOL * np.maximum(1.0, magnitude.sum(axis=-1))
    low = np.mean(null <= (observed + scale)[..., None], axis=-1)
    high = np.mean(null >= (observed - scale)[..., None], axis=-1)
    return low, high


class PairedTimeRatio:
    """Paired comparison of times to a target with right censoring (see the module text).

    Args:
        a: steps to the target of the optimizer under test, one per seed (inf/nan: never).
        b: the same for the baseline (same seeds, same order).
        a_limits: steps each run of ``a`` was watched for (its censoring time).
        b_limits: the same for ``b``.

    Raises:
        ValueError: the four sequences differ in length.

    >>> r = PairedTimeRatio([60, 70, 80, 60, 70, 80], [100, 100, 100, 100, 100, 100],
    ...                     [600] * 6, [600] * 6)
    >>> round(r.estimate, 2), r.p_two_sided() < 0.05
    (0.3, True)
    """

    def __init__(
        self,
        a: Sequence[float],
        b: Sequence[float],
        a_limits: Sequence[float],
        b_limits: Sequence[float],
    ) -> None:
        arrays = [np.asarray(v, dtype=float) for v in (a, b, a_limits, b_limits)]
        if len({x.size for x in arrays}) != 1:
            raise ValueError("pairs: times and limits must have one value per seed each")
        ta, tb, ca, cb = arrays
        keep = np.isfinite(ca) & np.isfinite(cb) & (ca > 0) & (cb > 0)
        with np.errstate(divide="ignore"):
            self._la = np.log(np.where(np.isfinite(ta) & (ta <= ca), ta, np.inf)[keep])
            self._lb = np.log(np.where(np.isfinite(tb) & (tb <= cb), tb, np.inf)[keep])
        self._lca, self._lcb = np.log(ca[keep]), np.log(cb[keep])
        self.n = int(keep.sum())
        self._flips = 2**self.n if self.n <= _EXACT_PAIRS else _RANDOM_FLIPS + 1
        self._lo, self._hi = self._range()
        self.estimate, self.estimate_bound = self._estimate()

    def _range(self) -> tuple[float, float]:
        """Log-ratios beyond which every ``D_i`` is constant (the statistic saturates)."""
        with np.errstate(invalid="ignore"):
            ends = np.concatenate(
                [self._la - self._lb, self._la - self._lcb, self._lca - self._lb,
                 self._lca - self._lcb]
            )
        ends = ends[np.isfinite(ends)]
        if ends.size == 0:
            return (-1.0, 1.0)
        return (float(ends.min()) - 1.0, float(ends.max()) + 1.0)

    def diffs(self, log_ratio: float) -> np.ndarray:
        """The truncated log-time differences ``D_i`` at ``theta = exp(log_ratio)``."""
        return truncated_log_diffs(self._la, self._lb, self._lca, self._lcb, log_ratio)

    def _p_one_sided(self, log_ratio: float) -> tuple[float, float]:
        """``(p_faster, p_slower)``: the one-sided permutation p-values at ``theta``."""
        if self.n == 0:
            return (1.0, 1.0)
        faster, slower = sign_flip_pvalues(self.diffs(log_ratio))
        return (float(faster), float(slower))

    @staticmethod
    def _log_ratio(speedup: float) -> float:
        return math.log(1.0 - speedup)

    def p_greater(self, value: float) -> float:
        """p-value of ``H0: speed-up <= value`` against a larger speed-up."""
        if value >= 1.0:
            return 1.0
        return self._p_one_sided(self._log_ratio(value))[0]

    def p_less(self, value: float) -> float:
        """p-value of ``H0: speed-up >= value`` against a smaller speed-up."""
        if value >= 1.0:
            return 0.0
        return self._p_one_sided(self._log_ratio(value))[1]

    def p_two_sided(self) -> float:
        """Two-sided p-value of no difference (``theta = 1``)."""
        faster, slower = self._p_one_sided(0.0)
        return min(1.0, 2.0 * min(faster, slower))

    @property
    def min_p(self) -> float:
        """The smallest two-sided p-value the test can give: ``2 / 2**n``."""
        return 1.0 if self.n == 0 else min(1.0, 2.0 / self._flips)

    def ci(self, level: float) -> tuple[float, float]:
        """Two-sided ``level`` interval of the speed-up, by inverting the one-sided tests.

        An end the data cannot bound is ``1.0`` (up to 100% sooner) or ``-inf``.
        """
        tail = (1.0 - level) / 2.0

        def accepted(u: float) -> bool:
            faster, slower = self._p_one_sided(u)
            return faster > tail and slower > tail

        grid = np.linspace(self._lo, self._hi, 401)
        ok = np.array([accepted(float(u)) for u in grid])
        if not ok.any():  # the point estimate is always inside; a grid too coarse missed it
            u = math.log(max(1.0 - self.estimate, 1e-300)) if math.isfinite(self.estimate) else 0.0
            return (self.estimate, self.estimate) if accepted(u) else (math.nan, math.nan)
        first, last = int(np.argmax(ok)), int(len(ok) - 1 - np.argmax(ok[::-1]))
        low_u = -math.inf if first == 0 else _edge(accepted, grid[first - 1], grid[first])
        high_u = math.inf if last == len(ok) - 1 else _edge(accepted, grid[last + 1], grid[last])
        return (1.0 - math.exp(high_u), 1.0 - math.exp(low_u))

    def _estimate(self) -> tuple[float, str | None]:
        """Speed-up where ``sum D_i`` crosses zero; a bound when the data only bound it."""
        if self.n == 0:
            return (math.nan, None)

        def total(u: float) -> float:
            return float(self.diffs(u).sum())

        scale = _TOL * max(1.0, float(self.n))
        if total(self._lo) < -scale:  # faster than any ratio the data can resolve
            return (1.0 - math.exp(self._lo + 1.0), "at least")
        if total(self._hi) > scale:
            return (1.0 - math.exp(self._hi - 1.0), "at most")
        upper = _edge(lambda u: total(u) >= -scale, self._hi, self._lo)  # sup{S >= 0}
        lower = _edge(lambda u: total(u) <= scale, self._lo, self._hi)  # inf{S <= 0}
        if abs(total(self._hi)) <= scale and abs(total(self._lo)) > scale:
            return (1.0 - math.exp(lower), "at most")  # S == 0 up to the top: theta >= exp(lower)
        if abs(total(self._lo)) <= scale and abs(total(self._hi)) > scale:
            return (1.0 - math.exp(upper), "at least")
        if abs(total(self._lo)) <= scale and abs(total(self._hi)) <= scale:
            return (math.nan, None)  # no pair carries information (all censored)
        return (1.0 - math.exp((lower + upper) / 2.0), None)

    def mde(self, alpha: float, power: float = 0.8) -> float:
        """Approximate minimum detectable speed-up of the two-sided test at ``alpha``.

        The normal-theory value ``(t_{1-alpha/2} + t_power) · sd(D) / sqrt(n)``
        on the log scale, turned into a speed-up; ``inf`` when even the most
        extreme outcome could not reach ``alpha`` (``2 / 2**n > alpha``).
        """
        if self.n < 2 or self.min_p > alpha:
            return math.inf
        centre = self._log_ratio(self.estimate) if -math.inf < self.estimate < 1.0 else 0.0
        sd = float(np.std(self.diffs(centre), ddof=1))
        df = self.n - 1
        shift = (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(self.n)
        return float(1.0 - math.exp(-shift))


def _edge(inside: Callable[[float], bool], outside_u: float, inside_u: float) -> float:
    """Bisect between a point where ``inside`` is False and one where it is True."""
    out, inn = float(outside_u), float(inside_u)
    if not inside(inn):
        return inn
    for _ in range(40):
        mid = (out + inn) / 2.0
        if inside(mid):
            inn = mid
        else:
            out = mid
    return inn
