"""PairedRate: McNemar's exact test at no difference, Tango's score test and interval elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from steplab.study.verdicts import Comparison, decide
from steplab.study.verdicts.rates import PairedRate, _p01_constrained

pairs = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_no_difference_is_mcnemars_exact_binomial_test(data: list[tuple[bool, bool]]) -> None:
    a, b = [x for x, _ in data], [y for _, y in data]
    rate = PairedRate(a, b)
    n10 = sum(x and not y for x, y in data)
    n01 = sum(y and not x for x, y in data)
    assert rate.estimate == pytest.approx((n10 - n01) / len(data))
    if n10 + n01 == 0:
        assert rate.p_greater(0.0) == rate.p_less(0.0) == 1.0
        return
    want_greater = stats.binomtest(n10, n10 + n01, 0.5, alternative="greater").pvalue
    want_less = stats.binomtest(n10, n10 + n01, 0.5, alternative="less").pvalue
    assert rate.p_greater(0.0) == pytest.approx(want_greater, rel=1e-9)
    assert rate.p_less(0.0) == pytest.approx(want_less, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(pairs, st.floats(-0.95, 0.95))
def test_the_constrained_estimate_maximises_the_likelihood(
    data: list[tuple[bool, bool]], d: float
) -> None:
    n = len(data)
    n10 = sum(x and not y for x, y in data)
    n01 = sum(y and not x for x, y in data)
    p = _p01_constrained(n10, n01, n, d)
    low, high = max(0.0, -d), (1 - d) / 2
    assert low - 1e-12 <= p <= high + 1e-12

    def loglik(q: float) -> float:
        parts = [(n10, q + d), (n01, q), (n - n10 - n01, 1 - 2 * q - d)]
        if any(k > 0 and v <= 0 for k, v in parts):
            return -np.inf
        return sum(k * np.log(v) for k, v in parts if k > 0)

    grid = np.linspace(low, high, 401)
    assert loglik(p) >= max(loglik(q) for q in grid) - 1e-6


def test_interval_contains_the_estimate_and_narrows_with_more_pairs() -> None:
    small = PairedRate([1, 1, 1, 0] * 3, [0, 0, 1, 0] * 3)
    large = PairedRate([1, 1, 1, 0] * 30, [0, 0, 1, 0] * 30)
    for rate in (small, large):
        low, high = rate.ci(0.95)
        assert -1 <= low < rate.estimate < high <= 1
    assert large.ci(0.95)[1] - large.ci(0.95)[0] < small.ci(0.95)[1] - small.ci(0.95)[0]
    # the interval is where the two-sided score test does not reject
    low, high = small.ci(0.95)
    assert small.p_greater(low) == pytest.approx(0.025, abs=1e-6)
    assert small.p_less(high) == pytest.approx(0.025, abs=1e-6)


def test_tango_interval_covers_the_true_difference_at_its_level() -> None:
    rng = np.random.default_rng(0)
    probs = np.array([0.15, 0.05, 0.1, 0.7])  # (1,0), (0,1), (1,1), (0,0)
    truth = probs[0] - probs[1]
    cover = 0
    trials = 400
    for _ in range(trials):
        kinds = rng.choice(4, size=40, p=probs)
        a, b = np.isin(kinds, (0, 2)), np.isin(kinds, (1, 2))
        low, high = PairedRate(a.tolist(), b.tolist()).ci(0.95)
        cover += low <= truth <= high
    assert 0.92 <= cover / trials <= 0.99


def test_bad_outcomes_are_rejected() -> None:
    with pytest.raises(ValueError, match="equal counts"):
        PairedRate([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        PairedRate([0.5], [1])


def test_a_large_one_sided_difference_is_decided_worse_under_holm() -> None:
    rate = PairedRate([1] * 12 + [0] * 8, [0] * 20)  # the arm diverges in 12 of 20 pairs
    verdict = decide([Comparison("lm", "arm", "base", "divergence", rate, 0.1, -1)])[0]
    assert verdict.outcome == "worse" and verdict.estimate == pytest.approx(0.6)
    same = PairedRate([0] * 20, [0] * 20)
    verdict = decide([Comparison("lm", "arm", "base", "divergence", same, 0.2, -1)])[0]
    assert verdict.outcome == "equivalent"
