"""From paired analyses to verdicts and judged claims, with Holm across the study.

A **comparison** is one optimizer against its baseline on one task for one
quantity (``"final"``: the final test metric; ``"steps_to_target"``). Its
analysis (:class:`~steplab.study.verdicts.paired.PairedMean` or
:class:`~steplab.study.verdicts.censored.PairedTimeRatio`) gives one-sided
p-values at any effect value. Each comparison gets one of four outcomes:

* ``better`` / ``worse``: the two-sided test of "no difference" rejects, after
  Holm over every hypothesis of the study; the sign of the estimate and the
  direction of the metric say which.
* ``equivalent``: the TOST (two one-sided tests) of ``|effect| >= margin``
  rejects, after the same Holm adjustment.
* ``inconclusive``: neither; the minimum detectable effect (two-sided test at
  the Bonferroni level ``alpha / m``, 80% power) says what the study could
  not have seen.

A **claim** states a range for an effect (``at_least`` and/or ``at_most``).
It is ``supported`` when both one-sided tests put the effect inside the range
(each at ``alpha``, i.e. the ``1 - 2 alpha`` interval lies inside it),
``refuted`` when the two-sided ``1 - alpha`` interval lies outside it
(twice the smaller one-sided p-value), and ``inconclusive`` otherwise; Holm
runs over the claims' hypotheses the same way.

>>> from steplab.study.verdicts.paired import PairedMean
>>> c = Comparison("t", "a", "b", "final", PairedMean([0.9] * 4, [0.8] * 4), 0.01, 1)
>>> decide([c])[0].outcome
'better'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from steplab.study.verdicts.multiplicity import holm

__all__ = [
    "CLAIM_OUTCOMES",
    "OUTCOMES",
    "QUANTITIES",
    "Analysis",
    "Claim",
    "ClaimVerdict",
    "Comparison",
    "Verdict",
    "decide",
    "judge_claims",
]

OUTCOMES = ("better", "worse", "equivalent", "inconclusive")
CLAIM_OUTCOMES = ("supported", "refuted", "inconclusive")
QUANTITIES = ("final", "steps_to_target", "divergence")


class Analysis(Protocol):
    """What a paired analysis offers the verdict engine."""

    n: int
    estimate: float

    def p_greater(self, value: float) -> float:
        """p-value of ``H0: effect <= value``."""

    def p_less(self, value: float) -> float:
        """p-value of ``H0: effect >= value``."""

    def ci(self, level: float) -> tuple[float, float]:
        """Two-sided interval of the effect at ``level``."""

    def mde(self, alpha: float, power: float = 0.8) -> float:
        """Minimum detectable effect of the two-sided test at ``alpha``."""


@dataclass(frozen=True)
class Comparison:
    """One comparison to decide.

    Attributes:
        task: task name.
        optimizer: the optimizer under test.
        baseline: the optimizer it is compared with.
        quantity: ``"final"``, ``"steps_to_target"`` or ``"divergence"`` (a rate).
        analysis: the paired analysis of the effect.
        margin: equivalence margin (metric units for ``final``, a fraction of
            the baseline's steps for ``steps_to_target``).
        better_sign: ``+1`` when a larger effect is better, ``-1`` when smaller is.
    """

    task: str
    optimizer: str
    baseline: str
    quantity: str
    analysis: Analysis
    margin: float
    better_sign: int


@dataclass(frozen=True)
class Verdict:
    """The record of one comparison (the ``verdicts`` list of ``results.json``).

    ``estimate``, ``ci_low``, ``ci_high`` and ``mde`` are a difference in the
    metric for ``final`` and a speed-up fraction (0.25 = 25% sooner) for
    ``steps_to_target``. ``p_adjusted`` is the Holm-adjusted p-value of the
    test behind the outcome (the TOST for ``equivalent``, the difference test
    otherwise).
    """

    task: str
    optimizer: str
    baseline: str
    quantity: str
    outcome: str
    estimate: float
    ci_low: float
    ci_high: float
    level: float
    p_adjusted: float
    margin: float
    mde: float
    n_pairs: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (the fields above, in order)."""
        return asdict(self)


def _p_difference(analysis: Analysis) -> float:
    return min(1.0, 2.0 * min(analysis.p_greater(0.0), analysis.p_less(0.0)))


def _p_equivalence(analysis: Analysis, margin: float) -> float:
    return max(analysis.p_greater(-margin), analysis.p_less(margin))


def decide(comparisons: Sequence[Comparison], level: float = 0.95) -> list[Verdict]:
    """Decide every comparison of a study at ``level`` with Holm across all of them.

    Args:
        comparisons: the study's comparisons (the Holm family).
        level: confidence level; the family-wise error rate is ``1 - level``.

    Returns:
        One :class:`Verdict` per comparison, in order.
    """
    alpha = 1.0 - level
    m = len(comparisons)
    raw = [_p_difference(c.analysis) for c in comparisons]
    raw += [_p_equivalence(c.analysis, c.margin) for c in comparisons]
    adjusted = holm(raw, cap=max(m, 1))
    verdicts = []
    for i, c in enumerate(comparisons):
        p_diff, p_eq = adjusted[i], adjusted[m + i]
        estimate = c.analysis.estimate
        if p_diff < alpha and math.isfinite(estimate) and estimate != 0.0:
            outcome = "better" if estimate * c.better_sign > 0 else "worse"
            p_adj = p_diff
        elif p_eq < alpha:
            outcome, p_adj = "equivalent", p_eq
        else:
            outcome, p_adj = "inconclusive", p_diff
        low, high = c.analysis.ci(level)
        verdicts.append(
            Verdict(
                c.task, c.optimizer, c.baseline, c.quantity, outcome, estimate, low, high,
                level, p_adj, c.margin, c.analysis.mde(alpha / max(m, 1)), c.analysis.n,
            )
        )
    return verdicts


@dataclass(frozen=True)
class Claim:
    """A stated claim about an effect, from the study spec's ``[[study.claims]]``.

    Attributes:
        optimizer: the optimizer the claim is about.
        baseline: what it is compared with.
        quantity: ``"final"``, ``"steps_to_target"`` or ``"divergence"``.
        at_least: the effect is at least this (None: no lower end).
        at_most: the effect is at most this (None: no upper end).
        task: the task (None: every task of the study).
        text: the claim in words, as people make it.
    """

    optimizer: str
    baseline: str
    quantity: str
    at_least: float | None = None
    at_most: float | None = None
    task: str | None = None
    text: str = ""

    def describe(self) -> str:
        """The claim in words (``text``, or one made from the numbers)."""
        if self.text:
            return self.text
        unit = {"steps_to_target": "sooner", "divergence": "difference in divergence rate"}.get(
            self.quantity, "higher final metric")
        lo = "" if self.at_least is None else f"at least {self.at_least:g}"
        hi = "" if self.at_most is None else f"at most {self.at_most:g}"
        span = " and ".join(s for s in (lo, hi) if s)
        return f"{self.optimizer} vs {self.baseline}: {span} ({unit})"


@dataclass(frozen=True)
class ClaimVerdict:
    """A judged claim (the ``claims`` list of ``results.json``)."""

    claim: str
    task: str
    optimizer: str
    baseline: str
    quantity: str
    at_least: float | None
    at_most: float | None
    outcome: str
    estimate: float
    ci_low: float
    ci_high: float
    level: float
    p_adjusted: float
    n_pairs: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return asdict(self)


def _claim_pvalues(claim: Claim, analysis: Analysis) -> tuple[float, float]:
    """``(p that the claim is false, p that it is true)``: small means rejected."""
    lo = -math.inf if claim.at_least is None else claim.at_least
    hi = math.inf if claim.at_most is None else claim.at_most
    p_inside = max(
        analysis.p_greater(lo) if math.isfinite(lo) else 0.0,
        analysis.p_less(hi) if math.isfinite(hi) else 0.0,
    )
    below = analysis.p_less(lo) if math.isfinite(lo) else 1.0
    above = analysis.p_greater(hi) if math.isfinite(hi) else 1.0
    return p_inside, min(1.0, 2.0 * min(below, above))


def judge_claims(
    claims: Sequence[tuple[Claim, str, Analysis]], level: float = 0.95
) -> list[ClaimVerdict]:
    """Judge each ``(claim, task, analysis)`` at ``level``, Holm across the claims.

    Returns:
        One :class:`ClaimVerdict` per input, in order.

    >>> from steplab.study.verdicts.paired import PairedMean
    >>> claim = Claim("a", "b", "final", at_least=0.05)
    >>> judge_claims([(claim, "t", PairedMean([0.9, 0.91, 0.9], [0.8, 0.8, 0.81]))])[0].outcome
    'supported'
    """
    alpha = 1.0 - level
    pvals = [_claim_pvalues(c, a) for c, _, a in claims]
    k = len(claims)
    adjusted = holm([p[0] for p in pvals] + [p[1] for p in pvals], cap=max(k, 1))
    out = []
    for i, (claim, task, analysis) in enumerate(claims):
        p_true, p_false = adjusted[i], adjusted[k + i]
        if p_true < alpha:
            outcome, p_adj = "supported", p_true
        elif p_false < alpha:
            outcome, p_adj = "refuted", p_false
        else:
            outcome, p_adj = "inconclusive", min(p_true, p_false)
        low, high = analysis.ci(level)
        out.append(
            ClaimVerdict(
                claim.describe(), task, claim.optimizer, claim.baseline, claim.quantity,
                claim.at_least, claim.at_most, outcome, analysis.estimate, low, high, level,
                p_adj, analysis.n,
            )
        )
    return out
