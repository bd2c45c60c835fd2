"""Metrics beyond the target a study can tabulate and judge: ``metrics = [...]`` in a spec.

Each name reads one number per final run, from ``summary.json``:

==================  ===========================  ===============================
name                read from                    equivalence margin
==================  ===========================  ===============================
``nll``             ``metrics.test_nll``          0.01 nats
``ece``             ``metrics.test_ece``          0.01 (15 equal-mass bins)
``shift_accuracy``  ``metrics.test_shift_accuracy``  0.01
``peak_state_bytes``  ``peak_state_bytes``        5% of the baseline's mean
``step_time_ms``    ``step_time_ms``              10% of the baseline's mean
``test_*``/``val_*``  that key of ``metrics``     0.01
``divergence``      the search runs' statuses     0.10 (rate difference)
==================  ===========================  ===============================

``divergence`` is the share of search runs that diverged, compared on the
(lr, seed) points two arms share (:mod:`steplab.study.report_divergence`).

Each becomes a column of the summary table (mean ± CI half-width over the
final seeds) and, for every optimizer with a baseline, one paired comparison
(paired t on per-seed differences; pairs where either value is missing or not
finite are left out) decided with the study's other verdicts, Holm across
all of them. Lower is better for names ending in ``nll``, ``ece``, ``_bytes``,
``_ms`` (and losses), higher for the rest (:func:`steplab.train.guards.metric_mode`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from steplab.errors import SpecError
from steplab.study.verdicts import Comparison, PairedMean

__all__ = ["EXTRA_METRICS", "check_metric_names", "extra_comparisons", "metric_value"]

#: name -> (summary key, margin, margin is relative to the baseline's mean)
EXTRA_METRICS: dict[str, tuple[str, float, bool]] = {
    "nll": ("test_nll", 0.01, False),
    "ece": ("test_ece", 0.01, False),
    "shift_accuracy": ("test_shift_accuracy", 0.01, False),
    "peak_state_bytes": ("peak_state_bytes", 0.05, True),
    "step_time_ms": ("step_time_ms", 0.10, True),
}


def _key(name: str) -> tuple[str, float, bool]:
    if name in EXTRA_METRICS:
        return EXTRA_METRICS[name]
    return name, 0.01, False


def check_metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """The study's ``metrics`` list, checked.

    Raises:
        SpecError: not a list of names, a duplicate, or a name neither in
            :data:`EXTRA_METRICS` nor a ``test_``/``val_`` metric.

    Example:
        >>> check_metric_names(["ece", "test_loss"])
        ('ece', 'test_loss')
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise SpecError(f"metrics: got {names!r}, expected a list of metric names")
    out = tuple(names)
    for name in out:
        if name not in (*EXTRA_METRICS, "divergence") and not name.startswith(("test_", "val_")):
            raise SpecError(
                f"metrics: got {name!r}, expected one of {', '.join(EXTRA_METRICS)}, "
                "divergence or a test_/val_ metric of the tasks"
            )
    if len(set(out)) != len(out):
        raise SpecError(f"metrics: got {list(out)}, expected each name once")
    return out


def metric_value(summary: Mapping[str, Any], name: str) -> float:
    """The value of ``name`` in one run's summary (nan when absent or the run failed).

    Example:
        >>> metric_value({"status": "completed", "metrics": {"test_ece": 0.03}}, "ece")
        0.03
        >>> metric_value({"status": "completed", "peak_state_bytes": 80}, "peak_state_bytes")
        80.0
    """
    if summary.get("status") not in ("completed", "early_stopped"):
        return math.nan
    key = _key(name)[0]
    raw = summary.get("metrics", {}).get(key) if key.startswith(("test_", "val_")) else (
        summary.get(key))
    return float(raw) if isinstance(raw, int | float) else math.nan


def better_sign(name: str) -> int:
    """+1 when a larger value of ``name`` is better, -1 when a smaller one is."""
    from steplab.train.guards import metric_mode

    return 1 if metric_mode(_key(name)[0]) == "max" else -1


class _Row(Protocol):
    task: str
    optimizer: str
    seeds: list[int]
    extras: dict[str, list[float]]


def _pairs(row: _Row, base: _Row, name: str) -> tuple[list[float], list[float]]:
    mine = dict(zip(row.seeds, row.extras.get(name, []), strict=False))
    theirs = dict(zip(base.seeds, base.extras.get(name, []), strict=False))
    common = [s for s in sorted(set(mine) & set(theirs))
              if math.isfinite(mine[s]) and math.isfinite(theirs[s])]
    return [mine[s] for s in common], [theirs[s] for s in common]


def extra_comparisons(
    rows: Sequence[_Row], baselines: Mapping[str, str | None], names: Sequence[str]
) -> list[Comparison]:
    """One paired comparison per optimizer with a baseline, task and requested metric."""
    by_key = {(r.task, r.optimizer): r for r in rows}
    out = []
    for row in rows:
        base_name = baselines.get(row.optimizer)
        base = by_key.get((row.task, base_name)) if base_name else None
        if base is None:
            continue
        for name in names:
            if name == "divergence":  # search runs, not final seeds: report_divergence
                continue
            a, b = _pairs(row, base, name)
            if not a:
                continue
            _, margin, relative = _key(name)
            if relative:
                margin *= abs(statistics.mean(b)) or 1.0
            out.append(Comparison(row.task, row.optimizer, str(base_name), name,
                                  PairedMean(a, b), margin, better_sign(name)))
    return out
