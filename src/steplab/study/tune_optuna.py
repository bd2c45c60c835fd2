"""The Optuna backend of ``steplab tune``: storage, sampler, pruners and worker processes.

Every trial is a row in an Optuna storage (SQLite by default), so a study
survives a crash and several processes can share it: that is how ``workers``
runs trials in parallel (Optuna's ``n_jobs`` uses threads, which the GIL and
torch's own thread pool make slower than processes for small models).

What counts toward ``trials``: a trial counts once its run ended and gave a
result: a value (``COMPLETE``), a pruning decision (``PRUNED``), or a run that
ended without a usable value (``FAIL`` with the run's ``status`` as a user
attribute, e.g. ``"diverged"``). Trials that crashed, or were left
``RUNNING`` by a killed process, do not count: a resumed study runs a fresh
trial in their place. Stale ``RUNNING`` trials are marked ``FAIL`` by Optuna's
heartbeat once ``GRACE_S`` seconds have passed.

References:
    T. Akiba, S. Sano, T. Yanase, T. Ohta, M. Koyama, "Optuna: A
    Next-generation Hyperparameter Optimization Framework", KDD 2019.
    L. Li et al., "Hyperband: A Novel Bandit-Based Approach to Hyperparameter
    Optimization", JMLR 2018.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from dataclasses import dataclass
from typing import Any

from steplab.errors import SpecError
from steplab.study.tune_objective import TrialFailed, TrialRunner, objective_value

__all__ = ["OptunaPlan", "counted_trials", "make_pruner", "open_storage", "run_optuna"]

#: seconds between heartbeats of a running trial
HEARTBEAT_S = 5
#: a RUNNING trial without a heartbeat for this long is marked FAIL
GRACE_S = 20
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class OptunaPlan:
    """How to run an Optuna study (a picklable value, sent to worker processes).

    Attributes:
        storage: an SQLAlchemy URL (``sqlite:///path/study.db``...).
        study_name: the study's name in the storage.
        direction: ``"minimize"`` or ``"maximize"``.
        trials: the study's size (see the module docstring for what counts).
        pruner: ``"median"``, ``"hyperband"`` or ``"none"``.
        steps: training steps per trial (the pruners' maximum resource).
        eval_every: steps between evaluations (the pruners' minimum resource).
        seed: seeds the sampler (offset per worker and per resumed invocation).
        workers: processes sharing the storage.
    """

    storage: str
    study_name: str
    direction: str
    trials: int
    pruner: str = "median"
    steps: int = 100
    eval_every: int = 10
    seed: int = 0
    workers: int = 1


def open_storage(url: str) -> Any:
    """Open (and create the tables of) an Optuna RDB storage with heartbeats.

    Raises:
        SpecError: the URL is malformed or the database cannot be reached or created.
    """
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # several worker processes share the file
    error: Exception = RuntimeError("no attempt made")
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 3-5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                )
        except Exception as exc:
            error = exc
            # two processes creating a new database at once: the loser of the race fails
            # creating a table the other created after it looked (SQLAlchemy checks, then
            # creates) or inserting Optuna's schema version; the tables exist now, so retry
            if not any(race in str(exc) for race in ("already exists", "alembic_version")):
                break
            time.sleep(0.5 * (attempt + 1))
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise SpecError(
        f"storage: cannot open {url!r} ({type(error).__name__}: {reason}); expected a "
        "reachable Optuna storage URL such as sqlite:///path/study.db"
    ) from error


def make_pruner(name: str, steps: int, eval_every: int) -> Any:
    """The Optuna pruner for ``name``; resources are training steps.

    ``median`` is ``MedianPruner(n_startup_trials=5)`` that waits for the
    first fifth of the run; ``hyperband`` is ``HyperbandPruner(min_resource=
    eval_every, max_resource=steps, reduction_factor=3)``.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=steps // 5)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=eval_every, max_resource=steps, reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SpecError(f"pruner: got {name!r}, expected one of {', '.join(PRUNERS)}")


def counted_trials(study: Any) -> int:
    """Trials that produced a result (see the module docstring)."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and "status" in t.user_attrs)
    )


def load_study(plan: OptunaPlan, worker: int = 0) -> Any:
    """Create or load the study; the sampler's seed is offset so no two runs repeat points."""
    import optuna

    storage = open_storage(plan.storage)
    # Peek at the size first so that a resumed invocation or a second worker
    # does not replay the same random start-up points.
    summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    existing = next((s.n_trials for s in summaries if s.study_name == plan.study_name), 0)
    sampler = optuna.samplers.TPESampler(
        seed=plan.seed + 1000 * worker + existing, constant_liar=plan.workers > 1
    )
    return optuna.create_study(
        storage=storage,
        study_name=plan.study_name,
        direction="minimize" if plan.direction == "minimize" else "maximize",
        sampler=sampler,
        pruner=make_pruner(plan.pruner, plan.steps, plan.eval_every),
        load_if_exists=True,
    )


def _objective(runner: TrialRunner) -> Any:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        values = runner.space.suggest(trial)
        trial.set_user_attr("spec", runner.spec_for(values))

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr("status", "pruned")
                raise optuna.TrialPruned(f"pruned at step {step} ({runner.metric}={value:.4g})")

        summary = runner.run(values, f"trial-{trial.number:04d}", report)
        trial.set_user_attr("status", summary.get("status"))
        trial.set_user_attr("run_dir", summary.get("run_dir"))
        trial.set_user_attr("steps", summary.get("steps"))
        return objective_value(summary, runner.metric)

    return objective


def _optimize(plan: OptunaPlan, runner: TrialRunner, worker: int) -> None:
    """Run trials in this process until the study holds ``plan.trials`` counted trials."""
    study = load_study(plan, worker)
    remaining = plan.trials - counted_trials(study)
    if remaining <= 0:
        return

    def stop_when_full(study: Any, _trial: Any) -> None:
        if counted_trials(study) >= plan.trials:
            study.stop()

    study.optimize(
        _objective(runner), n_trials=remaining, catch=(TrialFailed, Exception),
        callbacks=[stop_when_full], gc_after_trial=False,
    )


def _worker_main(plan: OptunaPlan, runner: TrialRunner, worker: int, threads: int) -> None:
    import optuna
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _optimize(plan, runner, worker)


def run_optuna(plan: OptunaPlan, runner: TrialRunner) -> Any:
    """Run the study (in this process, or in ``plan.workers`` processes); return it.

    Raises:
        SpecError: the storage cannot be opened, or a worker process failed.
    """
    if plan.workers <= 1:
        _optimize(plan, runner, 0)
        return load_study(plan)
    load_study(plan)  # create it once, before the workers race to
    threads = max(1, (mp.cpu_count() or 1) // plan.workers)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(plan, runner, w, threads), daemon=True)
        for w in range(plan.workers)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise SpecError(f"workers: {len(failed)} of {plan.workers} worker processes failed "
                        f"(exit codes {failed}); the finished trials are kept in {plan.storage}")
    return load_study(plan)
