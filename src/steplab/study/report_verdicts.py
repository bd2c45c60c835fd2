"""Turn a study's table rows into paired comparisons, verdicts, judged claims and sentences.

Rows pair up by seed (every optimizer ran the same fresh seeds). For each
optimizer with a baseline, on each task: one ``final`` comparison (paired t
on the final test metric; pairs where either run failed or diverged are left
out and the report says how many) and one ``steps_to_target`` comparison
(censoring-aware; a run that never met the target, diverged ones included,
is censored at its length). :func:`steplab.study.verdicts.decide` applies
Holm across all of them; claims are judged on their own pairs. A
``divergence`` claim or metric compares the search runs' divergence rates
(:mod:`steplab.study.report_divergence`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from steplab.study.report_divergence import divergence_pairs
from steplab.study.spec_arms import Arm, canonical_name
from steplab.study.verdicts import (
    Analysis,
    Claim,
    ClaimVerdict,
    Comparison,
    PairedMean,
    PairedTimeRatio,
    Verdict,
    decide,
    judge_claims,
)

__all__ = [
    "PairedRow",
    "claim_sentence",
    "effect_text",
    "pair_analysis",
    "study_claims",
    "study_verdicts",
    "verdict_sentence",
]


class PairedRow(Protocol):
    """What the comparisons read of a table row (one optimizer on one task)."""

    task: str
    optimizer: str
    seeds: list[int]
    finals: list[float]
    hit_steps: list[float]
    limits: list[float]
    diverged: dict[str, bool]


def _aligned(row: PairedRow, other: PairedRow, attr: str) -> tuple[list[float], list[float]]:
    mine = dict(zip(row.seeds, getattr(row, attr), strict=True))
    theirs = dict(zip(other.seeds, getattr(other, attr), strict=True))
    common = sorted(set(mine) & set(theirs))
    return [mine[s] for s in common], [theirs[s] for s in common]


def pair_analysis(row: PairedRow, base: PairedRow, quantity: str) -> Analysis:
    """The paired analysis of ``row`` against ``base`` (table rows of the same task).

    Args:
        row: an ``OptimizerRow`` (the optimizer under test).
        base: the baseline's ``OptimizerRow``.
        quantity: ``"final"``, ``"steps_to_target"`` or ``"divergence"`` (the
            search runs' divergence rate, :mod:`steplab.study.report_divergence`).
    """
    if quantity == "divergence":
        return divergence_pairs(row.diverged, base.diverged)
    if quantity == "final":
        a, b = _aligned(row, base, "finals")
        return PairedMean(a, b)
    a, b = _aligned(row, base, "hit_steps")
    la, lb = _aligned(row, base, "limits")
    return PairedTimeRatio(a, b, la, lb)


def study_verdicts(
    rows: Sequence[PairedRow],
    baselines: dict[str, str | None],
    modes: dict[str, str],
    margins: dict[str, float],
    level: float,
    extra: Sequence[Comparison] = (),
) -> tuple[list[Verdict], list[str | None]]:
    """Every comparison of the study, ``extra`` ones included, decided together (Holm).

    Returns:
        The verdicts and, for each, ``"at least"``/``"at most"`` when its
        estimate is only a bound (a time-to-target pair the data cannot resolve).
    """
    by_key = {(r.task, r.optimizer): r for r in rows}
    comparisons = []
    for row in rows:
        task, opt = row.task, row.optimizer
        base_name = baselines.get(opt)
        base = by_key.get((task, base_name)) if base_name else None
        if base is None or not row.seeds or not base.seeds:
            continue
        final_sign = 1 if modes[task] == "max" else -1
        for quantity, sign in (("final", final_sign), ("steps_to_target", 1)):
            analysis = pair_analysis(row, base, quantity)
            comparisons.append(
                Comparison(task, opt, str(base_name), quantity, analysis, margins[quantity], sign)
            )
    everything = [*comparisons, *extra]
    bounds = [getattr(c.analysis, "estimate_bound", None) for c in everything]
    return decide(everything, level), bounds


def study_claims(
    rows: Sequence[PairedRow], claims: Sequence[Claim], level: float, arms: Sequence[Arm] = ()
) -> list[ClaimVerdict]:
    """Judge every claim on every task it applies to (Holm across the claims)."""

    def canon(name: str) -> str:
        return canonical_name(name, arms)

    by_key = {(r.task, canon(r.optimizer)): r for r in rows}
    tasks = list(dict.fromkeys(r.task for r in rows))
    todo = []
    for claim in claims:
        for task in [claim.task] if claim.task else tasks:
            row = by_key.get((task, canon(claim.optimizer)))
            base = by_key.get((task, canon(claim.baseline)))
            if row is None or base is None:
                continue
            todo.append((claim, task, pair_analysis(row, base, claim.quantity)))
    return judge_claims(todo, level)


def _pct(value: float) -> str:
    if not math.isfinite(value):
        return "unboundedly later" if value < 0 else "n/a"
    if round(value * 100) == 0:
        return "0%"
    return f"{abs(value) * 100:.0f}% {'sooner' if value > 0 else 'later'}"


def _number(value: float, digits: int) -> str:
    return "unbounded" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _digits(width: float) -> int:
    """Decimals that the interval's width supports (two significant digits of it)."""
    if not math.isfinite(width) or width <= 0:
        return 3
    return max(0, min(6, 1 - math.floor(math.log10(width))))


def _bounded(estimate: float, bound: str | None) -> str:
    """A speed-up the data only bound: "at most -1.3" reads "at least 130% later"."""
    if bound is None:
        return _pct(estimate)
    later = estimate < 0
    word = {("at most", True): "at least", ("at least", False): "at least"}.get(
        (bound, later), "at most"
    )
    return f"{word} {_pct(estimate)}"


def effect_text(
    quantity: str, estimate: float, low: float, high: float, level: float,
    bound: str | None = None,
) -> str:
    """``+0.012 [95% CI -0.003, +0.027]``, ``12% sooner [95% CI 5% later, 28% sooner]``
    or, for a divergence rate, ``-30 points [95% CI -55, -4]``."""
    pct = f"{level * 100:g}% CI"
    if quantity == "divergence":
        return (f"{estimate * 100:+.0f} points [{pct} {low * 100:+.0f}, {high * 100:+.0f}]"
                if math.isfinite(low) else f"{estimate * 100:+.0f} points")
    if quantity == "steps_to_target":
        return f"{_bounded(estimate, bound)} [{pct} {_pct(low)} to {_pct(high)}]"
    digits = _digits(high - low)
    return f"{_number(estimate, digits)} [{pct} {_number(low, digits)}, {_number(high, digits)}]"


def _mde_text(v: Verdict) -> str:
    if not math.isfinite(v.mde):
        return "too few pairs for any effect to be detectable"
    if v.quantity == "steps_to_target":
        return f"could not detect a speed-up under {v.mde * 100:.0f}%"
    return f"could not detect |difference| under {v.mde:.2g}"


def verdict_sentence(v: Verdict, metric: str, bound: str | None = None) -> str:
    """One line for the terminal and the reports (``bound``: see :func:`study_verdicts`)."""
    what = {"steps_to_target": "steps to target", "divergence": "divergence rate of the "
            "search runs"}.get(v.quantity, f"final {metric}")
    margin = f"±{v.margin * 100:g}%" if v.quantity == "steps_to_target" else f"±{v.margin:g}"
    effect = effect_text(v.quantity, v.estimate, v.ci_low, v.ci_high, v.level, bound)
    text = f"vs {v.baseline}: {what} {effect}"
    detail = {
        "better": f"p_adj {v.p_adjusted:.2g}",
        "worse": f"p_adj {v.p_adjusted:.2g}",
        "equivalent": f"within {margin}, p_adj {v.p_adjusted:.2g}",
        "inconclusive": f"p_adj {v.p_adjusted:.2g}; {_mde_text(v)}",
    }[v.outcome]
    return f"{text}: {v.outcome.upper()} ({detail}; {v.n_pairs} pairs)"


def claim_sentence(c: ClaimVerdict) -> str:
    """One line per judged claim."""
    effect = effect_text(c.quantity, c.estimate, c.ci_low, c.ci_high, c.level)
    return (
        f"{c.outcome.upper()}: \"{c.claim}\" on {c.task} "
        f"({c.optimizer} vs {c.baseline}: {effect}; p_adj {c.p_adjusted:.2g}; {c.n_pairs} pairs)"
    )
