"""What a tuning study leaves behind: ``best.json``, the history and importance plots.

Both backends end with an Optuna study (in the storage), so the results are
read from it the same way whichever backend ran the trials.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steplab.study.search_space import SearchSpace

__all__ = ["TuneResult", "plot_history", "plot_importance", "write_results"]

#: fewer completed trials than this: no parameter-importance estimate
MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass(frozen=True)
class TuneResult:
    """The outcome of a tuning study.

    Attributes:
        best_spec: the best trial's optimizer spec string (``train``/``compare``
            accept it), or None when no trial completed.
        best_value: its final value of ``metric``, or None.
        best_params: its sampled hyperparameters.
        best_trial: its trial number, or None.
        metric: the validation metric optimised.
        direction: ``"minimize"`` or ``"maximize"``.
        counts: trials by state (``complete``, ``pruned``, ``failed``, ``running``).
        at_boundary: best hyperparameters within 5% of a bound of the space
            (widen the range and tune again).
        space: the search space, in the ``--space`` grammar.
        backend: ``"optuna"`` or ``"ray"``.
        storage: the Optuna storage URL.
        study_name: the study's name in the storage.
        out_dir: where ``best.json``, ``history.png``, ``importance.png`` are.
        importance: hyperparameter -> importance (empty when too few trials).
    """

    best_spec: str | None
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    metric: str
    direction: str
    counts: dict[str, int]
    at_boundary: list[str]
    space: str
    backend: str
    storage: str
    study_name: str
    out_dir: str
    importance: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict (the content of ``best.json``)."""
        return asdict(self)


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    counts = dict.fromkeys(names.values(), 0)
    for t in study.get_trials(deepcopy=False):
        if t.state in names:
            counts[names[t.state]] += 1
    return counts


def _importance(study: Any, names: tuple[str, ...]) -> dict[str, float]:
    """fANOVA importances (Hutter et al. 2014), or {} when too few trials completed."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    if len(names) == 1:
        return {names[0]: 1.0}
    try:
        found = optuna.importance.get_param_importances(study, params=list(names))
    except (RuntimeError, ValueError):  # e.g. every completed trial has the same value
        return {}
    return {k: float(v) for k, v in found.items()}


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(study: Any, path: Path, metric: str) -> Path:
    """Each completed trial's value, pruned trials' last values, and the best so far."""
    from optuna.trial import TrialState

    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    maximize = study.direction.name == "MAXIMIZE"
    xs, ys, best, running = [], [], [], math.nan
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE and t.value is not None:
            xs.append(t.number)
            ys.append(t.value)
            better = math.isnan(running) or (t.value > running if maximize else t.value < running)
            running = t.value if better else running
            best.append(running)
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            last = t.intermediate_values[max(t.intermediate_values)]
            ax.scatter([t.number], [last], marker="x", color="0.6")
    ax.scatter(xs, ys, color="C0", label="completed trial")
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.scatter([], [], marker="x", color="0.6", label="pruned (last value)")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"Optimisation history: {study.study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_importance(importance: dict[str, float], path: Path, n_complete: int) -> Path:
    """A bar per hyperparameter, or a note saying there are too few trials."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * max(1, len(importance))))
    if importance:
        names = list(importance)[::-1]
        ax.barh(names, [importance[n] for n in names], color="C0")
        ax.set_xlabel("importance (fANOVA)")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"{n_complete} completed trials: too few to estimate importance "
                f"(needs {MIN_TRIALS_FOR_IMPORTANCE} with different values)",
                ha="center", va="center", wrap=True)
    ax.set_title("Hyperparameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(study: Any, space: SearchSpace, info: dict[str, Any], out: Path) -> TuneResult:
    """Write ``best.json``, ``history.png`` and ``importance.png`` into ``out``.

    Args:
        study: the finished Optuna study.
        space: the search space.
        info: ``metric``, ``backend``, ``storage``, ``study_name``.
        out: the output directory.

    Returns:
        The :class:`TuneResult` (also written as ``best.json``).
    """
    from optuna.trial import TrialState

    out.mkdir(parents=True, exist_ok=True)
    counts = _counts(study)
    has_best = counts["complete"] > 0
    best = study.best_trial if has_best else None
    importance = _importance(study, space.names)
    result = TuneResult(
        best_spec=best.user_attrs.get("spec") if best else None,
        best_value=float(best.value) if best and best.value is not None else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        metric=info["metric"],
        direction=study.direction.name.lower(),
        counts=counts,
        at_boundary=space.at_boundary(best.params) if best else [],
        space=str(space),
        backend=info["backend"],
        storage=info["storage"],
        study_name=info["study_name"],
        out_dir=str(out),
        importance=importance,
    )
    (out / "best.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot_history(study, out / "history.png", info["metric"])
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plot_importance(importance, out / "importance.png", n_complete)
    return result
