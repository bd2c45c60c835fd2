"""The one objective both tuning backends run: a sampled point → a training run → a value.

A :class:`TrialRunner` is a small picklable value (it travels to worker
processes and Ray actors). ``run`` turns the sampled hyperparameters into an
optimizer spec string, trains with :func:`steplab.train.fit` in the trial's own
run directory, passes every evaluation to the backend's ``report`` callback
(where Optuna prunes and Ray's ASHA stops), and returns the run's summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steplab.study.search_space import SearchSpace

__all__ = ["TrialFailed", "TrialPruned", "TrialRunner", "objective_value"]

#: ``report(step, value)``: the validation metric after an evaluation
ReportValue = Callable[[int, float], None]


class TrialFailed(Exception):
    """A trial ran but produced no usable value (diverged, non-finite metric)."""


class TrialPruned(Exception):
    """The backend stopped the trial early; ``fit`` ends the run with status ``"pruned"``
    (it recognises the class name, as it does Optuna's)."""


@dataclass(frozen=True)
class TrialRunner:
    """Everything a worker needs to run one trial.

    Attributes:
        spec: the base optimizer spec string.
        space: the search space (applied to ``spec``'s innermost optimizer).
        train: :class:`steplab.train.TrainConfig` fields shared by every trial
            (``task``, ``steps``, ``seed``...), without ``optimizer``.
        metric: the summary metric to optimise (e.g. ``"val_accuracy"``).
        trials_dir: where each trial's run directory goes.
    """

    spec: str
    space: SearchSpace
    train: Mapping[str, Any] = field(default_factory=dict)
    metric: str = "val_loss"
    trials_dir: str = "trials"

    def spec_for(self, values: Mapping[str, Any]) -> str:
        """The optimizer spec string of a sampled point."""
        from steplab.optim import parse_spec

        return str(self.space.apply(parse_spec(self.spec), values))

    def config_for(self, values: Mapping[str, Any]) -> Any:
        """The :class:`~steplab.train.TrainConfig` of a sampled point."""
        from steplab.train import TrainConfig

        return TrainConfig(optimizer=self.spec_for(values), **dict(self.train))

    def run(self, values: Mapping[str, Any], name: str, report: ReportValue) -> dict[str, Any]:
        """Train the sampled point in ``trials_dir/name``; return ``summary.json``'s content.

        ``report`` gets ``(step, metric value)`` after each evaluation that has
        the metric; an exception it raises ends the run (see ``fit``) and propagates.
        """
        from steplab.train import fit

        metric = self.metric

        def on_eval(step: int, metrics: dict[str, float]) -> None:
            value = metrics.get(metric)
            if value is not None and math.isfinite(value):
                report(step, float(value))

        out = Path(self.trials_dir) / name
        result = fit(self.config_for(values), out, progress=False, report=on_eval)
        summary: dict[str, Any] = dict(result.summary)
        summary["run_dir"] = str(out)
        return summary


def objective_value(summary: Mapping[str, Any], metric: str) -> float:
    """The final value of ``metric`` in a run summary.

    Raises:
        TrialFailed: the run diverged or the metric is missing or not finite.

    Example:
        >>> objective_value({"status": "completed", "metrics": {"val_loss": 0.5}}, "val_loss")
        0.5
    """
    status = summary.get("status")
    if status == "diverged":
        raise TrialFailed(f"the run diverged at step {summary.get('steps')}")
    value = summary.get("metrics", {}).get(metric)
    if value is None or not math.isfinite(float(value)):
        raise TrialFailed(f"{metric} is {value!r} at the end of the run (status {status})")
    return float(value)
