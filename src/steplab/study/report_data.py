"""The numbers a study report shows, computed from its runs.

Per optimizer and task (over the seeds of its best setting): the final and
best test metric (mean and 95% t-interval), steps- and wall-time-to-target
(first evaluation meeting the task's target; runs that never reach it are
counted and shown as not reached), the area under the training-loss curve,
optimizer-state bytes per parameter and step time. Against the baseline: the
bootstrap 95% CI of the relative difference in steps-to-target (a miss counts
as the run's full length, as DeepOBS does) and of the difference in the final
metric, turned into one sentence each. With several tasks: performance profiles.
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
from steplab.study.protocol import Group
from steplab.study.spec import StudySpec
from steplab.study.stats import Interval, bootstrap_diff_ci, loss_auc, mean_ci, relative_diff_ci
from steplab.study.stats import steps_to_target as first_hit

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
    """One line of the summary table: an optimizer's best setting on a task, over seeds."""

    task: str
    optimizer: str
    lr: float | None
    hyper: dict[str, Any]
    statuses: list[str]
    finals: list[float]
    final: Interval
    best: Interval
    steps: list[float]
    times: list[float]
    reached: int
    auc: Interval
    state_bytes: float | None
    step_ms: float | None
    warning: str | None
    verdicts: list[str] = field(default_factory=list)
    search_statuses: list[str] = field(default_factory=list)

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
    """

    records: list[RunRecord]
    rows: list[OptimizerRow]
    targets: dict[str, TargetInfo]
    baselines: dict[str, str | None]
    profiles: PerformanceProfiles | None
    warnings: list[str]


def _canonical(optimizer: str) -> str:
    from steplab.optim import parse_spec

    return str(parse_spec(optimizer))


def baselines(optimizers: Sequence[str], baseline: str | None) -> dict[str, str | None]:
    """Map each optimizer to the one it is compared with.

    Default: the inner optimizer for a Lookahead (when it is in the study), else
    ``adam`` (when present), else the first optimizer; a baseline maps to None.
    """
    from steplab.optim import parse_spec

    canon = {_canonical(o): o for o in optimizers}
    fallback = canon.get(_canonical("adam"), optimizers[0])
    out: dict[str, str | None] = {}
    for opt in optimizers:
        inner = parse_spec(opt).inner
        if baseline is not None:
            choice = canon.get(_canonical(baseline))
        elif inner is not None and str(inner) in canon:
            choice = canon[str(inner)]
        else:
            choice = fallback
        out[opt] = None if choice in (None, opt) else choice
    return out


def _hits(record: RunRecord, target: TargetInfo) -> tuple[float, float] | None:
    hit = first_hit(record.rows, target.metric, target.value, target.mode)
    return None if hit is None else (float(hit[0]), hit[1])


def _row(
    task: str, optimizer: str, seeds: list[RunRecord], target: TargetInfo, warning: str | None
) -> OptimizerRow:
    summaries = [r.summary for r in seeds]
    finals = [s.get("metrics", {}).get(target.metric, math.nan) for s in summaries]
    bests = [s.get("best_metrics", {}).get(target.metric, math.nan) for s in summaries]
    ok = [s.get("status") in ("completed", "early_stopped") for s in summaries]
    hits = [_hits(r, target) if good else None for r, good in zip(seeds, ok, strict=True)]
    steps = [
        h[0] if h else float(r.config.get("steps") or r.summary.get("steps") or math.nan)
        for h, r in zip(hits, seeds, strict=True)
    ]
    times = [h[1] if h else math.inf for h in hits]
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
    good_finals = [float(f) for f, g in zip(finals, ok, strict=True) if g and math.isfinite(f)]
    return OptimizerRow(
        task,
        optimizer,
        first.get("lr"),
        hyper,
        [str(s.get("status")) for s in summaries],
        good_finals,
        mean_ci(good_finals),
        mean_ci([b for b, g in zip(bests, ok, strict=True) if g]),
        steps,
        times,
        sum(h is not None for h in hits),
        mean_ci(aucs),
        next((s.get("state_bytes_per_param") for s in summaries), None),
        statistics.median(step_ms) if step_ms else None,
        warning,
    )


def _sooner(value: float) -> str:
    if round(value * 100) == 0:
        return "0%"
    return f"{abs(value) * 100:.0f}% {'sooner' if value > 0 else 'later'}"


def _speed_ci(ci: Interval) -> str:
    return f"{_sooner(ci.mean)} [95% CI {_sooner(ci.low)} to {_sooner(ci.high)}]"


def verdicts(row: OptimizerRow, base: OptimizerRow, target: TargetInfo) -> list[str]:
    """Two sentences: speed to the target and final metric, each against ``base``."""
    name = f"vs {base.optimizer}: "
    if row.reached == 0 and base.reached == 0:
        speed = "neither reaches the target"
    elif row.reached == 0:
        n_base = len(base.steps)
        speed = f"never reaches the target ({base.optimizer} does in {base.reached}/{n_base} seeds)"
    elif base.reached == 0:
        # no speed-up figure: the baseline's "steps" would all be the budget, a bound
        speed = (
            f"reaches the target in {row.reached}/{len(row.steps)} seeds; "
            f"{base.optimizer} never does"
        )
    else:
        ci = relative_diff_ci(row.steps, base.steps)
        speed = (
            f"reaches the target {_speed_ci(ci)}"
            if ci.excludes_zero
            else f"no significant difference in steps-to-target ({_speed_ci(ci)})"
        )
    metric = target.metric.replace("_", " ")
    if not row.finals or not base.finals:
        final = f"final {metric}: not comparable (diverged or failed runs)"
    else:
        ci = bootstrap_diff_ci(row.finals, base.finals)
        diff = f"{ci.mean:+.3g} [95% CI {ci.low:+.3g}, {ci.high:+.3g}]"
        final = (
            f"final {metric} {diff}"
            if ci.excludes_zero
            else f"no significant difference in final {metric} ({diff})"
        )
    return [name + speed, name + final]


def analyze(
    spec: StudySpec, records: list[RunRecord], warnings: Mapping[str, str]
) -> StudyAnalysis:
    """Build the summary table, verdicts and profiles of a study from its runs."""
    targets = {t: target_of(t, spec.data_dir, dict(spec.targets).get(t)) for t in spec.tasks}
    base_of = baselines(spec.optimizers, spec.baseline)
    rows: list[OptimizerRow] = []
    notes = [f"{key.split('/', 1)[1]}: {w}" for key, w in sorted(warnings.items())]
    for task in spec.tasks:
        by_opt: dict[str, OptimizerRow] = {}
        for opt in spec.optimizers:
            mine = [r for r in records if r.group == Group(task, opt)]
            seeds = [r for r in mine if r.role == "seed"]
            row = _row(task, opt, seeds, targets[task], warnings.get(Group(task, opt).key))
            row.search_statuses = [str(r.summary.get("status")) for r in mine if r.role == "search"]
            by_opt[opt] = row
        for opt, row in by_opt.items():
            base = base_of[opt]
            if base is not None and row.statuses and by_opt[base].statuses:
                row.verdicts = verdicts(row, by_opt[base], targets[task])
        rows += by_opt.values()
    failed = [r for r in records if r.summary.get("status") in ("failed", "missing")]
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
    return StudyAnalysis(records, rows, targets, base_of, profiles, notes)


def _median_steps(row: OptimizerRow) -> float:
    """Median steps-to-target over seeds; inf unless most seeds reached the target."""
    if not row.steps or row.reached * 2 <= len(row.steps):
        return math.inf
    return float(statistics.median(row.steps))


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


def _fmt_ci(ci: Interval, digits: int = 4) -> str:
    if not math.isfinite(ci.mean):
        return "-"
    if ci.n < 2:
        return f"{ci.mean:.{digits}g}"
    return f"{ci.mean:.{digits}g} ± {(ci.high - ci.low) / 2:.2g}"


def table_cells(row: OptimizerRow) -> dict[str, str]:
    """The summary-table cells of ``row`` as text (``TABLE_COLUMNS`` order)."""
    n = len(row.statuses)
    bad = [s for s in row.statuses if s not in ("completed", "early_stopped")]
    if n == 0:  # no usable search run, so no seeds: say what happened to the search
        kinds = sorted(set(row.search_statuses)) or ["no runs"]
        status = "all " + "/".join(kinds) if row.search_statuses else "no runs"
    else:
        status = f"{n - len(bad)}/{n} ok" + (f" ({', '.join(sorted(set(bad)))})" if bad else "")
    reached = [s for s, t in zip(row.steps, row.times, strict=True) if math.isfinite(t)]
    steps = "not reached" if not reached else f"{statistics.mean(reached):.0f} ({row.reached}/{n})"
    times = [t for t in row.times if math.isfinite(t)]
    wall = "not reached" if not times else f"{statistics.mean(times):.2f} s"
    return {
        "optimizer": row.optimizer,
        "lr": "-" if row.lr is None else f"{row.lr:.3g}",
        "status": status,
        "final": _fmt_ci(row.final),
        "best": _fmt_ci(row.best),
        "steps to target": steps,
        "time to target": wall,
        "loss AUC": _fmt_ci(row.auc, 3),
        "state B/param": "-" if row.state_bytes is None else f"{row.state_bytes:.3g}",
        "step ms": "-" if row.step_ms is None else f"{row.step_ms:.2f}",
    }
