"""Every statistical routine of the verdicts against scipy/statsmodels on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from steplab.study.verdicts import (
    Claim,
    Comparison,
    PairedMean,
    PairedTimeRatio,
    decide,
    holm,
    judge_claims,
    kaplan_meier,
    km_median,
    paired_t_mde,
)

A = [0.812, 0.845, 0.790, 0.861, 0.833, 0.802, 0.849, 0.828]
B = [0.800, 0.829, 0.801, 0.838, 0.815, 0.797, 0.830, 0.811]


def test_paired_t_matches_scipy_ttest_rel() -> None:
    ours = PairedMean(A, B)
    ref = stats.ttest_rel(A, B)
    p_two = min(1.0, 2 * min(ours.p_greater(0.0), ours.p_less(0.0)))
    assert p_two == pytest.approx(ref.pvalue, rel=1e-10)
    ci = ref.confidence_interval(0.95)
    assert ours.ci(0.95) == pytest.approx((ci.low, ci.high), rel=1e-10)
    greater = stats.ttest_rel(A, B, alternative="greater").pvalue
    assert ours.p_greater(0.0) == pytest.approx(greater, rel=1e-10)
    shifted = stats.ttest_1samp(np.subtract(A, B), 0.01, alternative="less").pvalue
    assert ours.p_less(0.01) == pytest.approx(shifted, rel=1e-10)


def test_tost_matches_statsmodels_ttost_paired() -> None:
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    ours = PairedMean(A, B)
    p_ours = max(ours.p_greater(-0.03), ours.p_less(0.03))
    p_ref = weightstats.ttost_paired(np.array(A), np.array(B), -0.03, 0.03)[0]
    assert p_ours == pytest.approx(p_ref, rel=1e-8)


def test_mde_has_the_stated_power_by_scipy_nct_and_by_simulation() -> None:
    sd, n, alpha = 0.02, 8, 0.05
    mde = paired_t_mde(sd, n, alpha)
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = mde * math.sqrt(n) / sd
    assert stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) == pytest.approx(0.8)
    rng = np.random.default_rng(3)
    d = rng.normal(mde, sd, (20000, n))
    rejected = stats.ttest_1samp(d, 0.0, axis=1).pvalue < alpha
    assert rejected.mean() == pytest.approx(0.8, abs=0.015)


def test_holm_matches_statsmodels_multipletests() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.001, 0.04, 0.012, 0.3, 0.02, 0.0049, 0.2]
    ref = multitest.multipletests(p, method="holm")[1]
    assert holm(p) == pytest.approx(list(ref))


def test_holm_cap_counts_only_hypotheses_that_can_be_true_together() -> None:
    assert holm([0.01, 0.02, 0.5, 0.6], cap=2) == pytest.approx([0.02, 0.04, 1.0, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError, match="cap"):
        holm([0.1], cap=0)


def test_holm_leaves_one_of_six_audit_significant_verdicts() -> None:
    """Audit item 4: 14 verdicts, 6 below 0.05 raw; Holm keeps only the strongest."""
    raw = [0.001, 0.012, 0.02, 0.03, 0.04, 0.045, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert sum(p < 0.05 for p in raw) == 6
    assert sum(p < 0.05 for p in holm(raw)) == 1


def test_kaplan_meier_matches_scipy_ecdf_on_censored_data() -> None:
    times = [120.0, 240.0, math.inf, 180.0, 240.0, math.inf, 60.0, 300.0]
    limits = [600.0, 600.0, 600.0, 600.0, 400.0, 300.0, 600.0, 600.0]
    event_times, survival = kaplan_meier(times, limits)
    observed = [t for t in times if math.isfinite(t)]
    censored = [c for t, c in zip(times, limits, strict=True) if not math.isfinite(t)]
    ref = stats.ecdf(stats.CensoredData(uncensored=observed, right=censored)).sf
    assert survival == pytest.approx(ref.evaluate(event_times))
    assert km_median(times, limits) == (240.0, False)
    assert km_median([math.inf] * 3, [600.0] * 3) == (600.0, True)


def test_time_ratio_without_censoring_matches_scipy_paired_permutation_test() -> None:
    a = [240.0, 300.0, 180.0, 360.0, 264.0, 198.0, 330.0]
    b = [300.0, 330.0, 240.0, 390.0, 252.0, 288.0, 372.0]
    ours = PairedTimeRatio(a, b, [600.0] * 7, [600.0] * 7)
    ref = stats.permutation_test(
        (np.log(a), np.log(b)), lambda x, y, axis: np.sum(x - y, axis=axis),
        permutation_type="samples", n_resamples=np.inf,
    )
    assert ours.p_two_sided() == pytest.approx(ref.pvalue)


def test_time_ratio_truncates_censored_pairs_at_the_common_limit() -> None:
    a = [200.0, math.inf, 150.0, 300.0, math.inf, 120.0]
    b = [400.0, 500.0, math.inf, 450.0, math.inf, 360.0]
    ours = PairedTimeRatio(a, b, [600.0] * 6, [600.0] * 6)
    ta = np.log(np.minimum(a, 600.0))
    tb = np.log(np.minimum(b, 600.0))
    ref = stats.permutation_test(
        (ta, tb), lambda x, y, axis: np.sum(x - y, axis=axis),
        permutation_type="samples", n_resamples=np.inf,
    )
    assert ours.p_two_sided() == pytest.approx(ref.pvalue)


def test_time_ratio_interval_ends_are_where_the_tests_turn() -> None:
    rng = np.random.default_rng(0)
    b = np.round(rng.uniform(250, 500, 10) / 6) * 6
    a = np.round(0.7 * b * rng.uniform(0.85, 1.15, 10) / 6) * 6
    ours = PairedTimeRatio(a, b, [600.0] * 10, [600.0] * 10)
    low, high = ours.ci(0.95)
    assert low < ours.estimate < high
    assert 0.15 < ours.estimate < 0.45
    eps = 1e-3
    assert ours.p_greater(low - eps) <= 0.025 < ours.p_greater(low + eps)
    assert ours.p_less(high + eps) <= 0.025 < ours.p_less(high - eps)


def test_a_never_reaching_optimizer_gets_a_bound_not_a_number() -> None:
    """Audit item 3: no "100% later" from a cap; the data only bound the slowdown."""
    ours = PairedTimeRatio([math.inf] * 8, [300.0] * 8, [600.0] * 8, [600.0] * 8)
    assert ours.estimate_bound == "at most"
    assert ours.estimate == pytest.approx(0.0 - 1.0)  # at most "100% later": 600 / 300 - 1
    low, _ = ours.ci(0.95)
    assert low == -math.inf
    both = PairedTimeRatio([math.inf] * 4, [math.inf] * 4, [600.0] * 4, [600.0] * 4)
    assert math.isnan(both.estimate) and both.p_two_sided() == 1.0


def test_identical_runs_give_a_zero_width_interval_and_equivalence() -> None:
    """Audit item 2: bitwise-identical optimizers are +0 [0, 0], not +0 [-0.038, 0.038]."""
    same = PairedMean(A, A)
    assert same.ci(0.95) == (0.0, 0.0)
    verdict = decide([Comparison("t", "a", "b", "final", same, 0.01, 1)])[0]
    assert verdict.outcome == "equivalent" and verdict.p_adjusted == 0.0
    times = PairedTimeRatio([300.0] * 8, [300.0] * 8, [600.0] * 8, [600.0] * 8)
    assert times.estimate == pytest.approx(0.0, abs=1e-9)
    assert decide([Comparison("t", "a", "b", "steps_to_target", times, 0.1, 1)])[0].outcome == (
        "equivalent"
    )


def test_three_seeds_each_beating_the_other_three_is_not_a_verdict() -> None:
    """Audit item 1: the old bootstrap called this significant (exact p = 0.10)."""
    a, b = [0.84, 0.80, 0.86], [0.79, 0.785, 0.80]
    verdict = decide([Comparison("t", "a", "b", "final", PairedMean(a, b), 0.01, 1)])[0]
    assert verdict.outcome == "inconclusive"
    assert verdict.mde > 0.0 and math.isfinite(verdict.mde)


def test_four_outcomes_and_the_direction_of_the_metric() -> None:
    worse = PairedMean([0.70, 0.71, 0.69, 0.70], [0.80, 0.81, 0.80, 0.79])
    lower_loss = PairedMean([0.30, 0.31, 0.29, 0.30], [0.40, 0.41, 0.40, 0.39])
    noisy = PairedMean([0.8, 0.9, 0.7, 0.85], [0.85, 0.8, 0.8, 0.8])
    out = decide(
        [
            Comparison("t", "x", "b", "final", worse, 0.01, 1),
            Comparison("t", "y", "b", "final", lower_loss, 0.01, -1),
            Comparison("t", "z", "b", "final", noisy, 0.01, 1),
        ]
    )
    assert [v.outcome for v in out] == ["worse", "better", "inconclusive"]
    assert all(v.level == 0.95 and v.n_pairs == 4 for v in out)
    assert set(out[0].to_dict()) == {
        "task", "optimizer", "baseline", "quantity", "outcome", "estimate", "ci_low",
        "ci_high", "level", "p_adjusted", "margin", "mde", "n_pairs",
    }


def test_a_speedup_interval_below_the_claim_refutes_it() -> None:
    """Audit item 5: an interval [33% later, 14% sooner] refutes "30-50% faster"."""
    rng = np.random.default_rng(1)
    b = rng.uniform(280, 340, 10).round()
    a = (b * rng.uniform(0.9, 1.2, 10)).round()
    analysis = PairedTimeRatio(a, b, [600.0] * 10, [600.0] * 10)
    claim = Claim("lookahead(adam)", "adam", "steps_to_target", at_least=0.3, at_most=0.5)
    judged = judge_claims([(claim, "mnist1d-cnn", analysis)])[0]
    assert judged.outcome == "refuted"
    fast = PairedTimeRatio((b * 0.6).round(), b, [600.0] * 10, [600.0] * 10)
    assert judge_claims([(claim, "t", fast)])[0].outcome == "supported"
    short = PairedTimeRatio((b[:3] * 0.6).round(), b[:3], [600.0] * 3, [600.0] * 3)
    assert judge_claims([(claim, "t", short)])[0].outcome == "inconclusive"
