"""The numbers a study report shows, computed from its runs.

Per optimizer and task (over the fresh seeds of its best setting): the final
test metric (mean and t-interval), the "best" test metric at the evaluation
with the best *validation* metric (never the maximum over test), steps- and
wall-time-to-target as censored data (fraction of seeds that reached it and
the Kaplan-Meier median, or ">= N" when fewer than half did), the area under
the training-loss curve, optimizer-state bytes per parameter and step time.
Against the baseline: paired verdicts (:mod:`steplab.study.report_verdicts`)
with Holm across the study, and the spec's claims judged. With several
tasks: performance profiles.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steplab.study.profiles import PerformanceProfiles, performance_profiles
from steplab.study.protocol import Group, selection_metric
from steplab.study.report_divergence import (
    DIVERGENCE,
    divergence_cell,
    divergence_comparisons,
    divergence_flags,
)
from steplab.study.report_metrics import extra_comparisons, metric_value
from steplab.study.report_verdicts import study_claims, study_verdicts, verdict_sentence
from steplab.study.spec import StudySpec
from steplab.study.spec_arms import Arm, canonical_name
from steplab.study.stats import Interval, loss_auc, mean_ci
from steplab.study.stats import steps_to_target as first_hit
from steplab.study.verdicts import ClaimVerdict, Verdict, km_median

__all__ = ["RunRecord", "StudyAnalysis", "TargetInfo", "analyze", "read_rows", "target_of"]


@dataclass(frozen=True)
class TargetInfo:
    """A task's target as the study uses it: ``metric`` reaching ``value`` (``mode``)."""

    metric: str
    value: float
    mode: str


def target_of(task: str, data_dir: str | None = None, override: float | None = None) -> TargetInfo:
    """The target of ``task`` (its own, or ``override`` as the value)."""
    from steplab.tasks import get_task

    t = get_task(task, data_dir).target
    return TargetInfo(t.metric, float(t.value if override is None else override), t.mode)


@dataclass(frozen=True)
class RunRecord:
    """One run of the study with everything it wrote.

    Attributes:
        group: the optimizer/task it belongs to.
        role: ``"search"`` (a search trial at seed 0) or ``"seed"`` (a run of the best setting).
        config: its ``TrainConfig.to_dict()``.
        summary: its ``summary.json`` (``{"status": "failed", ...}`` when it raised).
        rows: its ``metrics.jsonl`` rows.
        run_id: its content address.
    """

    group: Group
    role: str
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    run_id: str


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON rows of a ``metrics.jsonl`` (empty when the file is missing; torn lines skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


@dataclass
class OptimizerRow:
    """One line of the summary table: an optimizer's best setting on a task, over seeds.

    Per-seed lists are aligned with ``seeds`` (the pairing key). ``finals`` is
    nan for a run that failed or diverged; ``hit_steps``/``hit_times`` are inf
    for a run that never met the target (censored at ``limits``/``wall_limits``).
    """

    task: str
    optimizer: str
    lr: float | None
    hyper: dict[str, Any]
    statuses: list[str]
    seeds: list[int]
    finals: list[float]
    final: Interval
    best: Interval
    hit_steps: list[float]
    limits: list[float]
    hit_times: list[float]
    wall_limits: list[float]
    reached: int
    median_steps: tuple[float, bool]
    median_time: tuple[float, bool]
    auc: Interval
    state_bytes: float | None
    step_ms: float | None
    warning: str | None
    verdicts: list[str] = field(default_factory=list)
    search_statuses: list[str] = field(default_factory=list)
    extras: dict[str, list[float]] = field(default_factory=dict)
    diverged: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        out = dict(self.__dict__)
        for key in ("final", "best", "auc"):
            out[key] = getattr(self, key).to_dict()
        return out


@dataclass
class StudyAnalysis:
    """Everything the report writers need.

    Attributes:
        records: every run.
        rows: the summary table, one row per task and optimizer.
        targets: task -> its target.
        baselines: optimizer -> the optimizer it is compared with (None for a baseline).
        profiles: performance profiles over steps-to-target (None with one task).
        warnings: human-readable warnings (edge of the lr range, failed runs).
        verdicts: every paired comparison, decided with Holm across the study.
        claims: the spec's claims, judged.
        resolution: task -> steps between target checks of the final runs.
        metrics: the spec's extra metrics (table columns after ``TABLE_COLUMNS``).
    """

    records: list[RunRecord]
    rows: list[OptimizerRow]
    targets: dict[str, TargetInfo]
    baselines: dict[str, str | None]
    profiles: PerformanceProfiles | None
    warnings: list[str]
    verdicts: list[Verdict] = field(default_factory=list)
    claims: list[ClaimVerdict] = field(default_factory=list)
    resolution: dict[str, int | None] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Summary-table columns: :data:`TABLE_COLUMNS`, then the extra metrics."""
        return TABLE_COLUMNS + self.metrics


def baselines(
    optimizers: Sequence[str], baseline: str | None, arms: Sequence[Arm] = ()
) -> dict[str, str | None]:
    """Map each optimizer (or arm) to the one it is compared with.

    Default: for an arm, its own optimizer (when that is in the study); for a
    Lookahead, its inner optimizer (when in the study); else ``adam`` (when
    present), else the first optimizer; a baseline maps to None.

    >>> baselines(["adam", "w"], None, [Arm("w", "adam")])
    {'adam': None, 'w': 'adam'}
    """
    from steplab.optim import parse_spec

    canon = {canonical_name(o, arms): o for o in optimizers}
    fallback = canon.get(canonical_name("adam"), optimizers[0])
    own = {a.name: a.optimizer for a in arms}
    out: dict[str, str | None] = {}
    for opt in optimizers:
        inner = str(parse_spec(own[opt])) if opt in own else parse_spec(opt).inner
        if baseline is not None:
            choice = canon.get(canonical_name(baseline, arms))
        elif inner is not None and str(inner) in canon:
            choice = canon[str(inner)]
        else:
            choice = fallback
        out[opt] = None if choice in (None, opt) else choice
    return out


def _hits(record: RunRecord, target: TargetInfo) -> tuple[float, float] | None:
    hit = first_hit(record.rows, target.metric, target.value, target.mode)
    return None if hit is None else (float(hit[0]), hit[1])


def val_selected(rows: Sequence[Mapping[str, Any]], target: TargetInfo) -> float:
    """The target metric at the evaluation with the best validation twin (nan if none).

    Early stopping chosen on validation, reported on test: never the best test value.

    >>> rows = [{"step": 1, "val_accuracy": 0.9, "test_accuracy": 0.7},
    ...         {"step": 2, "val_accuracy": 0.8, "test_accuracy": 0.95}]
    >>> val_selected(rows, TargetInfo("test_accuracy", 0.8, "max"))
    0.7
    """
    val = selection_metric(target.metric)
    evals = [
        (float(r[val]), float(r[target.metric]))
        for r in rows
        if r.get(val) is not None and r.get(target.metric) is not None and math.isfinite(r[val])
    ]
    if not evals:
        return math.nan
    sign = 1.0 if target.mode == "max" else -1.0
    return max(enumerate(evals), key=lambda iv: (sign * iv[1][0], -iv[0]))[1][1]


def _row(
    task: str, optimizer: str, seeds: list[RunRecord], target: TargetInfo, warning: str | None
) -> OptimizerRow:
    summaries = [r.summary for r in seeds]
    ok = [s.get("status") in ("completed", "early_stopped") for s in summaries]
    finals = [
        float(s.get("metrics", {}).get(target.metric, math.nan)) if good else math.nan
        for s, good in zip(summaries, ok, strict=True)
    ]
    hits = [_hits(r, target) if r.summary.get("status") != "failed" else None for r in seeds]
    limits = [float(r.config.get("steps") or r.summary.get("steps") or math.nan) for r in seeds]
    walls = [float(s.get("wall_time") or math.nan) for s in summaries]
    hit_steps = [h[0] if h else math.inf for h in hits]
    hit_times = [h[1] if h else math.inf for h in hits]
    aucs = [
        loss_auc(
            [row["step"] for row in r.rows if "train_loss" in row],
            [row["train_loss"] for row in r.rows if "train_loss" in row],
        )
        for r in seeds
    ]
    step_ms = [s["step_time_ms"] for s in summaries if s.get("step_time_ms") is not None]
    first = seeds[0].config if seeds else {}
    from steplab.optim import parse_spec

    hyper = dict(parse_spec(first["optimizer"]).innermost.kwargs) if first else {}
    bests = [
        val_selected(r.rows, target) if g else math.nan for r, g in zip(seeds, ok, strict=True)
    ]
    return OptimizerRow(
        task, optimizer, first.get("lr"), hyper, [str(s.get("status")) for s in summaries],
        [int(r.config.get("seed", i)) for i, r in enumerate(seeds)], finals,
        mean_ci([f for f in finals if math.isfinite(f)]), mean_ci(bests),
        hit_steps, limits, hit_times, walls, sum(h is not None for h in hits),
        km_median(hit_steps, limits) if seeds else (math.nan, True),
        km_median(hit_times, walls) if seeds else (math.nan, True),
        mean_ci(aucs), next((s.get("state_bytes_per_param") for s in summaries), None),
        statistics.median(step_ms) if step_ms else None, warning,
    )


def _resolution(records: Sequence[RunRecord], task: str) -> int | None:
    for r in records:
        if r.role == "seed" and r.group.task == task and r.group.kind == "main":
            every = r.config.get("target_every") or r.config.get("eval_every")
            return int(every) if every else None
    return None


def _notes(rows: Sequence[OptimizerRow]) -> list[str]:
    """Warnings about pairs the final-metric verdicts leave out."""
    out = []
    for row in rows:
        bad = [s for s in row.statuses if s not in ("completed", "early_stopped")]
        if bad and row.statuses:
            out.append(
                f"{row.task} {row.optimizer}: {len(bad)} of {len(row.statuses)} final runs "
                f"{'/'.join(sorted(set(bad)))}; their pairs are left out of the final-metric "
                "verdicts and count as never reaching the target"
            )
    return out


def analyze(
    spec: StudySpec, records: list[RunRecord], warnings: Mapping[str, str]
) -> StudyAnalysis:
    """Build the summary table, verdicts, claims and profiles of a study from its runs."""
    targets = {t: target_of(t, spec.data_dir, dict(spec.targets).get(t)) for t in spec.tasks}
    base_of = baselines(spec.optimizers, spec.baseline, spec.arms)
    rows: list[OptimizerRow] = []
    notes = [f"{key.split('/', 1)[1]}: {w}" for key, w in sorted(warnings.items())]
    for task in spec.tasks:
        for opt in spec.optimizers:
            mine = [r for r in records if r.group == Group(task, opt)]
            seeds = [r for r in mine if r.role == "seed"]
            row = _row(task, opt, seeds, targets[task], warnings.get(Group(task, opt).key))
            row.search_statuses = [str(r.summary.get("status")) for r in mine if r.role == "search"]
            row.extras = {m: [metric_value(r.summary, m) for r in seeds]
                          for m in spec.metrics if m != DIVERGENCE}
            row.diverged = divergence_flags(mine, spec.divergence_loss)
            rows.append(row)
    modes = {t: v.mode for t, v in targets.items()}
    extra = extra_comparisons(rows, base_of, spec.metrics)
    if DIVERGENCE in spec.metrics:
        extra += divergence_comparisons(rows, base_of, dict(spec.margins).get(DIVERGENCE))
    verdicts, bounds = study_verdicts(
        rows, base_of, modes, dict(spec.margins), spec.level, extra
    )
    for v, bound in zip(verdicts, bounds, strict=True):
        row = next(r for r in rows if r.task == v.task and r.optimizer == v.optimizer)
        label = v.quantity if v.quantity in spec.metrics else targets[v.task].metric
        row.verdicts.append(verdict_sentence(v, label.replace("_", " "), bound))
    claims = study_claims(rows, spec.claims, spec.level, spec.arms)
    failed = [r for r in records if r.summary.get("status") in ("failed", "missing")]
    notes += _notes(rows)
    notes += [
        f"run {r.run_id} ({r.group.optimizer} on {r.group.task}): "
        f"{r.summary.get('error', r.summary.get('status'))}"
        for r in failed
    ]
    profiles = None
    if len(spec.tasks) > 1:
        times = {
            o: {r.task: _median_steps(r) for r in rows if r.optimizer == o} for o in spec.optimizers
        }
        profiles = performance_profiles(times)
    resolution = {t: _resolution(records, t) for t in spec.tasks}
    return StudyAnalysis(
        records, rows, targets, base_of, profiles, notes, verdicts, claims, resolution,
        spec.metrics,
    )


def _median_steps(row: OptimizerRow) -> float:
    """Kaplan-Meier median steps-to-target; inf when fewer than half the seeds reached it."""
    value, bound = row.median_steps
    return math.inf if bound else value


TABLE_COLUMNS = (
    "optimizer",
    "lr",
    "status",
    "final",
    "best",
    "steps to target",
    "time to target",
    "loss AUC",
    "state B/param",
    "step ms",
)


def fmt_interval(ci: Interval) -> str:
    """``mean ± half-width``, both rounded to what the interval supports.

    >>> fmt_interval(Interval(0.87123, 0.8512, 0.8912, 5))
    '0.871 ± 0.020'
    """
    if not math.isfinite(ci.mean):
        return "-"
    if ci.n < 2 or not math.isfinite(ci.high - ci.low):
        return f"{ci.mean:.3g}"
    half = (ci.high - ci.low) / 2
    if half <= 0:
        return f"{ci.mean:.4g} ± 0"
    digits = max(0, min(6, 1 - math.floor(math.log10(half))))
    return f"{ci.mean:.{digits}f} ± {half:.{digits}f}"


def _median_cell(median: tuple[float, bool], reached: int, n: int, unit: str) -> str:
    value, bound = median
    if not math.isfinite(value):
        return "-"
    text = f"{value:.0f}" if unit == "" else f"{value:.2f} s"
    return (f">= {text}" if bound else text) + f" ({reached}/{n})"


def table_cells(row: OptimizerRow) -> dict[str, str]:
    """The summary-table cells of ``row`` as text (``TABLE_COLUMNS`` order)."""
    n = len(row.statuses)
    bad = [s for s in row.statuses if s not in ("completed", "early_stopped")]
    if n == 0:  # no usable search run, so no seeds: say what happened to the search
        kinds = sorted(set(row.search_statuses)) or ["no runs"]
        status = "all " + "/".join(kinds) if row.search_statuses else "no runs"
    else:
        status = f"{n - len(bad)}/{n} ok" + (f" ({', '.join(sorted(set(bad)))})" if bad else "")
    return {
        "optimizer": row.optimizer,
        "lr": "-" if row.lr is None else f"{row.lr:.3g}",
        "status": status,
        "final": fmt_interval(row.final),
        "best": fmt_interval(row.best),
        "steps to target": _median_cell(row.median_steps, row.reached, n, ""),
        "time to target": _median_cell(row.median_time, row.reached, n, "s"),
        "loss AUC": fmt_interval(row.auc),
        "state B/param": "-" if row.state_bytes is None else f"{row.state_bytes:.3g}",
        "step ms": "-" if row.step_ms is None else f"{row.step_ms:.2f}",
    } | {
        name: fmt_interval(mean_ci([v for v in values if math.isfinite(v)]))
        for name, values in row.extras.items()
    } | {DIVERGENCE: divergence_cell(row.diverged)}
