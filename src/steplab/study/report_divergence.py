"""Divergence rate as a judged quantity: ``metrics = ["divergence"]`` or a ``divergence`` claim.

A run **diverged** when it ended with status ``diverged`` (the loop stopped
it: a loss above ``divergence_factor`` times the first, or too many
non-finite steps in a row), when its final validation (else training) loss
is not finite, or when that loss is above the study's ``divergence_loss``
(a run that blew up and never recovered, e.g. a language model stuck at
unigram level). A failed run (an exception) is not counted either way.

The rate is measured on the **search runs**: every learning rate of the
search range at every tuning seed, which is where divergence is a question
(the final seeds rerun only the best, stable setting). Two arms pair up on
the same (learning rate, seed) points, which arms sharing an optimizer's
lr grid do; the comparison is :class:`~steplab.study.verdicts.rates.PairedRate`
(exact McNemar test of no difference, Tango's score interval), decided with
every other verdict of the study (Holm). The effect is the difference in
rates, ``rate(arm) - rate(baseline)``; lower is better. Its equivalence
margin is 0.10 (ten points of rate) unless ``margins`` sets ``divergence``.

>>> rec = {"status": "completed", "metrics": {"val_loss": 5.0}}
>>> run_diverged(rec, 3.0), run_diverged(rec, None), run_diverged({"status": "diverged"}, None)
(True, False, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from steplab.study.verdicts import Comparison
from steplab.study.verdicts.rates import PairedRate

__all__ = [
    "DIVERGENCE",
    "DIVERGENCE_MARGIN",
    "divergence_cell",
    "divergence_comparisons",
    "divergence_flags",
    "divergence_pairs",
    "run_diverged",
]

#: the quantity's name (in ``metrics``, claims and verdicts)
DIVERGENCE = "divergence"
#: equivalence margin of the rate difference
DIVERGENCE_MARGIN = 0.10


def run_diverged(summary: Mapping[str, Any], limit: float | None) -> bool | None:
    """Whether one run diverged (see the module docstring); None for a run that failed."""
    status = summary.get("status")
    if status == "diverged":
        return True
    if status not in ("completed", "early_stopped"):
        return None
    metrics = summary.get("metrics", {})
    loss = metrics.get("val_loss", metrics.get("train_loss"))
    if not isinstance(loss, int | float):
        return None
    if not math.isfinite(loss):
        return True
    return limit is not None and float(loss) > limit


class _Record(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def summary(self) -> dict[str, Any]: ...


def divergence_flags(records: Sequence[_Record], limit: float | None) -> dict[str, bool]:
    """``"lr=<lr> seed=<seed>" -> diverged`` over the search runs of one arm on one task."""
    out = {}
    for rec in records:
        if rec.role != "search":
            continue
        flag = run_diverged(rec.summary, limit)
        lr = rec.config.get("lr")
        if flag is not None and lr is not None:
            out[f"lr={float(lr):.6g} seed={rec.config.get('seed')}"] = flag
    return out


def divergence_cell(flags: Mapping[str, bool]) -> str:
    """``"3/10 (30%)"``: diverged search runs out of those that ran."""
    if not flags:
        return "-"
    k = sum(flags.values())
    return f"{k}/{len(flags)} ({k / len(flags):.0%})"


def divergence_pairs(mine: Mapping[str, bool], theirs: Mapping[str, bool]) -> PairedRate:
    """The paired rate analysis over the settings both arms ran."""
    common = sorted(set(mine) & set(theirs))
    return PairedRate([mine[k] for k in common], [theirs[k] for k in common])


class _Row(Protocol):
    task: str
    optimizer: str
    diverged: dict[str, bool]


def divergence_comparisons(
    rows: Sequence[_Row], baselines: Mapping[str, str | None], margin: float | None = None
) -> list[Comparison]:
    """One divergence comparison per arm with a baseline and task (pairs in common only).

    ``margin``: the equivalence margin (None: :data:`DIVERGENCE_MARGIN`; a study
    sets it as ``margins = { divergence = ... }``).
    """
    by_key = {(r.task, r.optimizer): r for r in rows}
    out = []
    for row in rows:
        base_name = baselines.get(row.optimizer)
        base = by_key.get((row.task, base_name)) if base_name else None
        if base is None:
            continue
        analysis = divergence_pairs(row.diverged, base.diverged)
        if analysis.n:
            out.append(Comparison(row.task, row.optimizer, str(base_name), DIVERGENCE,
                                  analysis, margin or DIVERGENCE_MARGIN, -1))
    return out
