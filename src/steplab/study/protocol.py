"""The comparison protocol: which runs a study makes and how the best setting is chosen.

Each optimizer on each task is its own study (the Tuning Playbook's advice):
``budget`` search runs at seed 0 (the same count for every optimizer), the
best chosen on the **validation** split (never test), then the best setting
re-run at seeds ``1 .. seeds-1`` (the search's seed-0 run is the first seed;
it is the very same run, found by its content address). The 2-D test
functions get their own lr grid, shared by every optimizer, and the best run
of each optimizer is drawn.

>>> selection_metric("test_accuracy")
'val_accuracy'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steplab.errors import SpecError
from steplab.study.search_grid import edge_warning, log_grid, lr_center, search_points
from steplab.study.spec import FINAL_SEED_BASE, StudySpec

__all__ = [
    "TRAJECTORY_LR_RANGE",
    "Group",
    "check_names",
    "search_configs",
    "seed_configs",
    "select_best",
    "selection_metric",
]

#: the lr grid every optimizer gets on the 2-D test functions (log-spaced)
TRAJECTORY_LR_RANGE = (1e-4, 1.0)


@dataclass(frozen=True)
class Group:
    """One optimizer on one task: a search, then seeds (``kind="main"``) or a drawn path.

    Attributes:
        task: task name.
        optimizer: optimizer spec string as the study spec gives it.
        kind: ``"main"`` (searched, seeded, tabulated) or ``"trajectory"`` (2-D path).
    """

    task: str
    optimizer: str
    kind: str = "main"

    @property
    def key(self) -> str:
        """A stable text key (``kind/task/optimizer``)."""
        return f"{self.kind}/{self.task}/{self.optimizer}"


def selection_metric(target_metric: str) -> str:
    """The validation metric the search selects on, from a task's target metric."""
    for prefix in ("test_", "val_"):
        if target_metric.startswith(prefix):
            return "val_" + target_metric[len(prefix) :]
    return "val_" + target_metric


def check_names(spec: StudySpec) -> None:
    """Check every optimizer and task name of ``spec`` before any run starts.

    Raises:
        SpecError: an unknown optimizer or task (the lower layers' message with a
            hint), or a baseline or claim naming an optimizer not in the study.
    """
    from steplab.optim import parse_spec
    from steplab.tasks import get_task

    for optimizer in spec.optimizers:
        parse_spec(spec.arm(optimizer)[0])  # an arm's own optimizer; raises with a hint
    canonical = [spec.canonical(optimizer) for optimizer in spec.optimizers]
    if spec.baseline is not None and _canonical_or_none(spec, spec.baseline) not in canonical:
        raise SpecError(
            f"baseline: got {spec.baseline!r}, expected one of the study's optimizers "
            f"{list(spec.optimizers)}"
        )
    for i, claim in enumerate(spec.claims):
        for role in ("optimizer", "baseline"):
            name = getattr(claim, role)
            if _canonical_or_none(spec, name) not in canonical:
                raise SpecError(
                    f"claims[{i}].{role}: got {name!r}, expected one of the study's optimizers "
                    f"{list(spec.optimizers)}"
                )
    for task in (*spec.tasks, *spec.trajectories):
        get_task(task, spec.data_dir)


def _canonical_or_none(spec: StudySpec, name: str) -> str | None:
    """``spec.canonical(name)``, or None for a name that is neither an arm nor a spec."""
    try:
        return spec.canonical(name)
    except SpecError:
        return None


def _base_config(spec: StudySpec, group: Group) -> dict[str, Any]:
    if group.kind == "trajectory":
        return {
            "task": group.task,
            "steps": spec.trajectory_steps,
            "batch_size": None,
            "eval_every": max(1, spec.trajectory_steps // 10),
            "monitor": False,
        }
    return {
        "task": group.task,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "eval_every": spec.eval_every,
        "schedule": spec.schedule,
        "warmup_steps": spec.warmup_steps,
        "data_dir": spec.data_dir,
        "monitor": False,
        **spec.arm(group.optimizer)[1],  # an arm's own run settings replace the study's
    }


def search_configs(spec: StudySpec, group: Group) -> list[dict[str, Any]]:
    """The search runs of ``group``, as ``TrainConfig.to_dict()`` values.

    ``spec.budget`` settings per tuning repeat ``r`` (seed ``r``), repeat after
    repeat; a trajectory group searches once, at seed 0.

    Main groups get ``spec.budget`` settings around the optimizer's sensible lr
    (a log grid; scrambled Halton over other hyperparameters too when
    ``spec.search == "halton"``). Trajectory groups get the shared grid
    :data:`TRAJECTORY_LR_RANGE`.
    """
    from steplab.optim import OPTIMIZERS, parse_spec
    from steplab.train import TrainConfig

    optimizer_spec = spec.arm(group.optimizer)[0]  # an arm runs its own optimizer
    parsed = parse_spec(optimizer_spec)
    inner = parsed.innermost
    if group.kind == "trajectory":
        points: list[dict[str, float]] = [
            {"lr": lr} for lr in log_grid(*TRAJECTORY_LR_RANGE, spec.trajectory_budget)
        ]
    else:
        extra = OPTIMIZERS[inner.name].search_space if spec.search == "halton" else None
        center = lr_center(inner.name, inner.kwargs)
        points = search_points(center, spec.lr_span, spec.budget, extra)
    repeats = spec.tuning_repeats if group.kind == "main" else 1
    configs = []
    for repeat in range(repeats):
        for point in points:
            others = {k: _typed(k, v, inner.kwargs) for k, v in point.items() if k != "lr"}
            optimizer = str(parsed.with_overrides(**others)) if others else optimizer_spec
            base = _base_config(spec, group)
            cfg = TrainConfig(**base, optimizer=optimizer, lr=point["lr"], seed=repeat)
            configs.append(cfg.to_dict())
    return configs


def _typed(name: str, value: float, kwargs: Any) -> float | int:
    return round(value) if isinstance(kwargs.get(name), int) else float(value)


def seed_configs(best: list[dict[str, Any] | None], seeds: int) -> list[dict[str, Any]]:
    """The final runs: seed ``FINAL_SEED_BASE + i`` with the best of search ``i mod repeats``.

    A search that failed entirely (None) gives no run for its seeds.

    >>> [c["seed"] for c in seed_configs([{"task": "t", "seed": 0}], 3)]
    [1000, 1001, 1002]
    """
    out = []
    for i in range(seeds):
        chosen = best[i % len(best)] if best else None
        if chosen is not None:
            out.append({**chosen, "seed": FINAL_SEED_BASE + i})
    return out


def _score(
    summary: dict[str, Any],
    metric: str,
    sign: float,
    criterion: str,
    rows: Sequence[dict[str, Any]],
    target: float | None,
) -> tuple[float, ...] | None:
    """A sort key (larger is better) of one search run, or None when it cannot win."""
    if summary.get("status") not in ("completed", "early_stopped"):
        return None
    value = summary.get("metrics", {}).get(metric)
    if value is None or not math.isfinite(float(value)):
        return None
    final = sign * float(value)
    evals = [float(r[metric]) for r in rows if r.get(metric) is not None]
    if criterion == "auc" and evals:
        return (sign * sum(evals) / len(evals), final)
    if criterion == "steps_to_target" and target is not None:
        met = [r for r in rows if r.get(metric) is not None]
        hits = (r["step"] for r in met if sign * r[metric] >= sign * target)
        hit = next(hits, None)
        return (0.0, final) if hit is None else (1.0, -float(hit), final)
    return (final,)


def select_best(
    runs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    metric: str,
    mode: str,
    *,
    criterion: str = "final",
    rows: Sequence[Sequence[dict[str, Any]]] | None = None,
    target: float | None = None,
) -> tuple[int | None, str | None]:
    """Pick the best search run on validation; diverged or failed runs never win.

    Args:
        runs: ``(config, summary)`` of each search run.
        metric: validation metric to select on (e.g. ``"val_accuracy"``).
        mode: ``"max"`` or ``"min"``.
        criterion: ``"final"`` (final value of ``metric``), ``"steps_to_target"``
            (first evaluation where ``metric`` meets ``target``; runs that never
            do rank after, by final value) or ``"auc"`` (mean of ``metric`` over
            evaluations, i.e. the normalised area under its curve).
        rows: each run's ``metrics.jsonl`` rows (needed by the last two criteria).
        target: the target value of ``metric`` (``steps_to_target``).

    Returns:
        ``(index of the best run or None when every run failed, edge warning or None)``.

    >>> runs = [({"lr": 0.1}, {"status": "completed", "metrics": {"val_loss": 0.5}}),
    ...         ({"lr": 1.0}, {"status": "diverged", "metrics": {"val_loss": 9.0}})]
    >>> select_best(runs, "val_loss", "min")
    (0, 'best lr 0.1 is at the lower edge of the searched range [0.1, 1]; widen lr_span')
    """
    sign = 1.0 if mode == "max" else -1.0
    all_rows = rows if rows is not None else [[] for _ in runs]
    scored = [
        (i, _score(s, metric, sign, criterion, all_rows[i], target))
        for i, (_, s) in enumerate(runs)
    ]
    valid = [(i, v) for i, v in scored if v is not None]
    if not valid:
        return None, None
    best = max(valid, key=lambda iv: (iv[1], -iv[0]))[0]
    lrs = [float(c["lr"]) for c, _ in runs if c.get("lr") is not None]
    best_lr = runs[best][0].get("lr")
    warning = edge_warning(lrs, float(best_lr)) if best_lr is not None else None
    return best, warning
