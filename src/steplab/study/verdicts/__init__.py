"""Verdicts: plain numbers in, verdict records out (no torch, no files).

The statistics core of ``steplab compare``. Every routine takes per-seed
numbers and returns numbers or frozen records, so it is tested against scipy
on fixed inputs and by simulation (``tests/study/test_verdict_*.py``).

* :mod:`.paired`: the final metric, a paired t-interval on per-seed differences.
* :mod:`.censored`: time to target with right censoring: Kaplan-Meier median,
  and an exact sign-flip permutation comparison of truncated log-times.
* :mod:`.rates`: a paired rate (how often runs diverge): exact McNemar, Tango's interval.
* :mod:`.multiplicity`: Holm's adjustment (capped for mutually exclusive nulls).
* :mod:`.decide`: the four outcomes per comparison, and claims judged
  supported / refuted / inconclusive.

>>> from steplab.study.verdicts import Comparison, PairedMean, decide
>>> v = decide([Comparison("t", "a", "b", "final", PairedMean([1, 2, 3], [1, 2, 3]), 0.01, 1)])
>>> v[0].outcome, (v[0].ci_low, v[0].ci_high)
('equivalent', (0.0, 0.0))
"""

from steplab.study.verdicts.censored import PairedTimeRatio, kaplan_meier, km_median
from steplab.study.verdicts.decide import (
    CLAIM_OUTCOMES,
    OUTCOMES,
    QUANTITIES,
    Analysis,
    Claim,
    ClaimVerdict,
    Comparison,
    Verdict,
    decide,
    judge_claims,
)
from steplab.study.verdicts.multiplicity import holm
from steplab.study.verdicts.paired import PairedMean, paired_t_mde
from steplab.study.verdicts.rates import PairedRate

__all__ = [
    "CLAIM_OUTCOMES",
    "OUTCOMES",
    "QUANTITIES",
    "Analysis",
    "Claim",
    "ClaimVerdict",
    "Comparison",
    "PairedMean",
    "PairedRate",
    "PairedTimeRatio",
    "Verdict",
    "decide",
    "holm",
    "judge_claims",
    "kaplan_meier",
    "km_median",
    "paired_t_mde",
]
