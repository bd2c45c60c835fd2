"""The Ray Tune backend of ``steplab tune``: the same objective on a local Ray or a cluster.

``ray.tune.Tuner`` runs :class:`~steplab.study.tune_objective.TrialRunner` as a
function trainable. Optuna's TPE is the searcher (``OptunaSearch``) and ASHA
stops unpromising trials early (Optuna's own pruners do not act under Tune).
Each evaluation is one ``tune.report`` (one ``training_iteration``, ASHA's
resource); a trial that finishes reports once more with ``final=1`` and its
status. When ASHA stops a trial, Ray's session ends the trial's thread from
inside ``tune.report``; that becomes :class:`TrialPruned`, so ``fit`` writes
the run's ``summary.json`` with status ``"pruned"`` like the Optuna backend.
A resumed study's new ``OptunaSearch`` is first told every stored trial
(:func:`tell_stored_trials`), so its sampler continues from what the study
knows rather than from nothing. Afterwards every trial is written into the
same Optuna storage as the Optuna backend uses, so both backends leave results in the same format:
finished trials ``COMPLETE``, trials ASHA stopped ``PRUNED`` (their last value
kept as an intermediate value), diverged or crashed trials ``FAIL``.

References:
    L. Li et al., "A System for Massively Parallel Hyperparameter Tuning"
    (ASHA), MLSys 2020. R. Liaw et al., "Tune: A Research Platform for
    Distributed Model Selection and Training", 2018.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from steplab.study.ray_cluster import ensure_ray
from steplab.study.tune_objective import TrialFailed, TrialPruned, TrialRunner, objective_value
from steplab.study.tune_optuna import OptunaPlan, counted_trials, load_study

__all__ = ["run_ray"]


def _trainable(runner: TrialRunner) -> Any:
    metric = runner.metric

    def trainable(config: dict[str, Any]) -> None:
        import torch
        from ray import tune

        torch.set_num_threads(1)
        values = {name: config[name] for name in runner.space.names}
        name = f"ray-{tune.get_context().get_trial_id()}"

        def report(step: int, value: float) -> None:
            try:
                tune.report({metric: value, "step": step})
            except SystemExit:  # Tune stops this trial (ASHA): Ray's session exits the thread
                raise TrialPruned(f"stopped by ASHA after step {step}") from None

        try:
            summary = runner.run(values, name, report)
        except TrialPruned:  # fit wrote summary.json with status "pruned"; report no more
            return
        status = str(summary.get("status"))
        try:
            value = objective_value(summary, metric)
        except TrialFailed:
            value = math.nan
        tune.report({metric: value, "step": summary.get("steps", 0), "final": 1,
                     "status": status, "run_dir": summary.get("run_dir", "")})

    return trainable


def _record(result: Any, runner: TrialRunner) -> Any:
    """An Optuna ``FrozenTrial`` for one Ray Tune result."""
    import optuna
    from optuna.trial import TrialState

    params = {n: result.config[n] for n in runner.space.names}
    metrics = dict(result.metrics or {})
    history: dict[int, float] = {}
    frame = result.metrics_dataframe
    if frame is not None and runner.metric in frame and "step" in frame:
        for step, value in zip(frame["step"], frame[runner.metric], strict=True):
            if value == value:  # not NaN
                history[int(step)] = float(value)
    value = metrics.get(runner.metric)
    run_dir = metrics.get("run_dir") or str(
        Path(runner.trials_dir) / f"ray-{metrics.get('trial_id')}")  # ASHA-stopped: not reported
    attrs = {"spec": runner.spec_for(params), "backend": "ray", "run_dir": run_dir}
    if result.error is not None:  # a crash: no "status", so it does not count (see tune_optuna)
        state, attrs["error"], value = TrialState.FAIL, str(result.error)[:300], None
    elif not metrics.get("final"):
        state, attrs["status"], value = TrialState.PRUNED, "pruned", None
    elif value is None or not math.isfinite(float(value)):
        state, attrs["status"], value = TrialState.FAIL, metrics.get("status", "failed"), None
    else:
        state, attrs["status"] = TrialState.COMPLETE, metrics.get("status")
    return optuna.trial.create_trial(
        state=state, value=value, params=params, distributions=runner.space.to_optuna(),
        user_attrs=attrs, intermediate_values=history,
    )


def tell_stored_trials(searcher: Any, study: Any, runner: TrialRunner) -> int:
    """Give a new ``OptunaSearch`` the study's finished trials, so a resumed study learns.

    Completed trials are told with their value, pruned ones with their last
    intermediate value, failed ones as errors; running or waiting ones are
    skipped. Returns how many were told.
    """
    from optuna.trial import TrialState

    told = 0
    for trial in study.trials:
        if set(trial.params) != set(runner.space.names):
            continue
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            searcher.add_evaluated_point(trial.params, trial.value)
        elif trial.state == TrialState.PRUNED and trial.intermediate_values:
            last = trial.intermediate_values[max(trial.intermediate_values)]
            searcher.add_evaluated_point(trial.params, last, pruned=True)
        elif trial.state == TrialState.FAIL:
            searcher.add_evaluated_point(trial.params, math.nan, error=True)
        else:
            continue
        told += 1
    return told


def run_ray(
    plan: OptunaPlan, runner: TrialRunner, out_dir: Path, address: str | None,
    num_cpus: int | None,
) -> Any:
    """Run ``plan.trials`` (minus those already counted) trials under Ray Tune; return the study.

    Args:
        plan: storage, study name, direction, budget and seed (the pruner is ignored).
        runner: the trial objective.
        out_dir: Ray Tune's own files go to ``out_dir/ray``.
        address: an existing Ray cluster, or None to start a local one.
        num_cpus: CPUs of a local Ray (None: all).

    Returns:
        The Optuna study holding every trial of this and earlier invocations.
    """
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    study = load_study(plan)
    samples = plan.trials - counted_trials(study)
    if samples <= 0:
        return study
    ensure_ray(address, num_cpus)
    evals = max(1, plan.steps // plan.eval_every)
    mode = "min" if plan.direction == "minimize" else "max"
    searcher = OptunaSearch(
        space=runner.space.to_optuna(), metric=runner.metric, mode=mode,
        sampler=optuna.samplers.TPESampler(seed=plan.seed + len(study.trials)),
    )
    tell_stored_trials(searcher, study, runner)
    tuner = tune.Tuner(
        _trainable(runner),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=samples,
            scheduler=ASHAScheduler(metric=runner.metric, mode=mode, max_t=evals + 1,
                                    grace_period=max(1, evals // 4), reduction_factor=3),
            max_concurrent_trials=plan.workers if plan.workers > 1 else None,
        ),
        run_config=tune.RunConfig(
            name=plan.study_name, storage_path=str((out_dir / "ray").resolve()), verbose=0,
        ),
    )
    grid = tuner.fit()
    for i in range(len(grid)):
        study.add_trial(_record(grid[i], runner))
    return study
