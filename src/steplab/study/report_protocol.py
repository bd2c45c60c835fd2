"""The protocol section of a report: exactly how each number and verdict was produced.

Shared by ``report.html`` and ``report.md`` so both say the same thing.
"""

from __future__ import annotations

from steplab.study.report_data import StudyAnalysis
from steplab.study.spec import FINAL_SEED_BASE, StudySpec
from steplab.study.spec_claims import resolve_selection

__all__ = ["protocol_items", "resolution_text"]

_SELECTION = {
    "final": "the best final validation value",
    "steps_to_target": "the fewest steps until the validation metric meets the target "
    "(runs that never do rank after, by final value)",
    "auc": "the best mean validation value over evaluations (area under its curve)",
}


def resolution_text(analysis: StudyAnalysis, task: str) -> str:
    """``target checked every 6 steps (1% of the run)`` for ``task``'s final runs."""
    every = analysis.resolution.get(task)
    steps = next(
        (max(r.limits) for r in analysis.rows if r.task == task and r.limits), None
    )
    if every is None:
        return "target checked at evaluations"
    share = f" ({every / steps:.1%} of the run)" if steps else ""
    return f"target checked every {every} steps{share}"


def protocol_items(spec: StudySpec, analysis: StudyAnalysis) -> list[str]:
    """One sentence per step of the protocol, with the tests and levels used."""
    kind = "log grid over the lr"
    if spec.search == "halton":
        kind = "scrambled Halton over the lr and other hyperparameters"
    alpha = 1.0 - spec.level
    margins = dict(spec.margins)
    repeats = spec.tuning_repeats
    criterion = resolve_selection(spec.selection, spec.claims)
    n_verdicts = len(analysis.verdicts)
    return [*_arm_items(spec), *[
        f"Each optimizer is a separate study: {spec.budget} search trials ({kind}, lr in "
        f"[c/{spec.lr_span:g}, c·{spec.lr_span:g}] around its sensible default c) at tuning "
        f"seed{'s 0..' + str(repeats - 1) if repeats > 1 else ' 0'}"
        + (f", {repeats} independent searches" if repeats > 1 else "") + ".",
        f"The best trial is chosen on the validation split by {_SELECTION[criterion]}; never "
        "on test. Diverged runs never win; a best lr on the edge of the range is warned about.",
        f"The best setting runs at {spec.seeds} fresh seeds ({FINAL_SEED_BASE}.."
        f"{FINAL_SEED_BASE + spec.seeds - 1}), the same for every optimizer and disjoint from "
        "the tuning seeds, so runs pair up by seed (same initialisation and data order) and no "
        "selected search run is reported."
        + (f" Final seed i uses the best setting of search i mod {repeats}, so tuning "
           "variance enters the intervals." if repeats > 1 else ""),
        "Final metric: paired t-test and t-interval on the per-seed differences (pairs where "
        "either run failed or diverged are left out, and a warning says so).",
        "Steps to target: right-censored at the run length (a run that never met it, "
        "diverged ones included, is never averaged); per optimizer the fraction of seeds that "
        "reached it and the Kaplan-Meier median; between optimizers an exact sign-flip "
        "permutation test of the summed log step ratios, both times truncated at the common "
        "limit, inverted for the interval of the speed-up (1 - ratio).",
        f"Outcomes at level {spec.level:g}: better/worse when the two-sided test rejects, "
        f"equivalent when the TOST rejects |effect| >= margin (final: {margins['final']:g}; "
        f"steps to target: {margins['steps_to_target']:.0%}), else inconclusive with the "
        f"minimum detectable effect (80% power, two-sided at alpha/m = "
        f"{alpha / max(n_verdicts, 1):.2g}). Holm across all {2 * n_verdicts} hypotheses of "
        f"the {n_verdicts} verdicts (capped: a verdict's two nulls cannot both hold); "
        "p_adj is the adjusted p-value of the test behind the outcome.",
        "Claims: supported when both one-sided tests place the effect inside the claimed range "
        f"(the {1 - 2 * alpha:.0%} interval inside it), refuted when the {spec.level:.0%} "
        "interval lies outside it, else inconclusive; Holm across the claims.",
        "Reported on test: final metric, the test metric at the best validation evaluation "
        "(\"best\"), steps and wall time to target, mean training loss (loss AUC), optimizer "
        "state bytes per parameter, median step time.",
    ], *_divergence_items(spec)]


def _arm_items(spec: StudySpec) -> list[str]:
    """What each arm changes (an arm: an optimizer with its own run settings)."""
    return [
        f"Arm {arm.name!r} is {arm.optimizer} with "
        + ", ".join(f"{k} = {v}" for k, v in arm.settings)
        + " (the other arms: the study's settings); it searches the same lr grid as its "
        "optimizer, so the two pair up on (lr, seed)."
        for arm in spec.arms
    ]


def _divergence_items(spec: StudySpec) -> list[str]:
    """How the divergence rate is counted and judged, when the study asks for it."""
    if "divergence" not in spec.metrics and not any(
            c.quantity == "divergence" for c in spec.claims):
        return []
    limit = ("" if spec.divergence_loss is None
             else f", or ended with a validation loss above {spec.divergence_loss:g}")
    return [
        "Divergence rate: the share of the search runs (every lr at every tuning seed) that "
        f"diverged: stopped as diverged, ended with a non-finite loss{limit}. Between arms, "
        "McNemar's exact test on the (lr, seed) pairs for no difference, Tango's score "
        "interval for the rate difference (the margin and claim ranges are tested with "
        "Tango's score test), with the other verdicts under Holm."
    ]
