"""Hyperparameter search for one optimizer on one task: Optuna on one machine, Ray Tune on many.

:func:`tune` checks every input first (so bad input costs no training), then
runs trials with :mod:`steplab.study.tune_optuna` (TPE sampler, median or
Hyperband pruning on the validation metric ``fit`` reports, an SQLite storage
that survives crashes) or :mod:`steplab.study.tune_ray` (OptunaSearch + ASHA),
and writes ``best.json``, ``history.png`` and ``importance.png`` with
:mod:`steplab.study.tune_results`. See ``docs/tuning.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from steplab.errors import SpecError
from steplab.study.search_space import SearchSpace, resolve_space
from steplab.study.tune_objective import TrialRunner
from steplab.study.tune_optuna import PRUNERS, OptunaPlan, run_optuna
from steplab.study.tune_results import TuneResult, write_results

__all__ = ["TuneResult", "default_metric", "tune"]

BACKENDS = ("optuna", "ray")


def default_metric(target_metric: str) -> str:
    """The validation counterpart of a task's target metric (tuning never looks at test).

    Example:
        >>> default_metric("test_accuracy"), default_metric("test_distance")
        ('val_accuracy', 'val_distance')
    """
    base = target_metric.split("_", 1)[1] if target_metric.startswith(("test_", "val_")) else ""
    return f"val_{base}" if base else "val_loss"


def _check_int(option: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{option}: got {value!r}, expected an integer >= {minimum}")


def _check_choices(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{option}: got {value!r}, expected one of {', '.join(choices)}")


_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_texts(storage: str | None, study_name: str | None, address: str | None,
                 backend: str) -> None:
    """Options given as text: given means used, so empty or ignored values are errors."""
    if storage is not None and "://" not in storage:
        raise SpecError(f"storage: got {storage!r}, expected an Optuna storage URL such as "
                        "'sqlite:///tune/study.db'")
    if study_name is not None and not _STUDY_NAME.fullmatch(study_name):
        raise SpecError(f"study_name: got {study_name!r}, expected letters, digits, '.', '_' "
                        "or '-' (it names a directory), starting with a letter or digit")
    if address is not None and backend != "ray":
        raise SpecError(f"address: got {address!r} with backend {backend!r}; expected an "
                        "address only with backend 'ray'")
    if address is not None and not address.strip():
        raise SpecError("address: got '', expected 'auto', 'host:port' or 'ray://host:port'")


def _study_name(
    task: str, spec: str, space: SearchSpace, train: dict[str, Any], metric: str
) -> str:
    """``<task>-<optimizer>-<hash>``: the same command continues the same study."""
    from steplab.optim import parse_spec

    key = json.dumps([spec, str(space), train, metric], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{task}-{parse_spec(spec).innermost.name}-{digest}"


def tune(
    task: str,
    optimizer: str = "adam",
    trials: int = 20,
    *,
    space: str | None = None,
    pruner: str = "median",
    storage: str | None = None,
    study_name: str | None = None,
    backend: str = "optuna",
    address: str | None = None,
    num_cpus: int | None = None,
    workers: int = 1,
    steps: int | None = None,
    batch_size: int | None = None,
    eval_every: int | None = None,
    schedule: str = "constant",
    metric: str | None = None,
    seed: int = 0,
    out_dir: str | Path = "tune",
    data_dir: str | None = None,
) -> TuneResult:
    """Tune ``optimizer``'s hyperparameters on ``task``; write and return the best.

    Every trial trains with :func:`steplab.train.fit` (same seed, steps and
    batch size; evaluation on the validation split only) into
    ``out_dir/trials/<study>/``. Its value is the final validation ``metric``.
    A study is a row set in ``storage``: running the same call again continues
    it until it holds ``trials`` trials that produced a result (completed,
    pruned or diverged; see :mod:`steplab.study.tune_optuna`).

    Args:
        task: a task name (``steplab tasks``).
        optimizer: the base optimizer spec; sampled values override its innermost kwargs.
        trials: the study's size (>= 1).
        space: the ``--space`` grammar (:mod:`steplab.study.search_space`); None:
            the registry's default space for this many trials.
        pruner: ``median``, ``hyperband`` or ``none`` (Optuna backend).
        storage: an Optuna storage URL (None: ``sqlite:///<out_dir>/study.db``).
        study_name: the study's name (None: task, optimizer and a hash of the settings).
        backend: ``optuna`` or ``ray`` (OptunaSearch + ASHA).
        address: Ray cluster address (ray backend; None starts a local Ray).
        num_cpus: CPUs of a local Ray (None: all).
        workers: processes sharing the storage (optuna), or concurrent trials (ray).
        steps: training steps per trial (None: the task's default).
        batch_size: examples per step (None: the task's default).
        eval_every: steps between evaluations (None: ``steps // 10``).
        schedule: the learning-rate schedule of every trial.
        metric: the validation metric to optimise (None: the task target's ``val_`` twin);
            minimised for losses, distances and errors, else maximised.
        seed: the training seed of every trial, and the sampler's seed.
        out_dir: where the storage (by default), trials and results go.
        data_dir: where tasks that read files find them.

    Returns:
        The :class:`TuneResult`, also written to ``out_dir/best.json``.

    Raises:
        SpecError: a bad task, spec, space, budget, option or unreachable storage;
            an ``address`` without the ray backend.
        MissingDependencyError: Optuna (or, for the ray backend, Ray) is not
            installed; the message names the extra to install.

    Example:
        >>> import tempfile
        >>> res = tune("beale", "sgd", trials=2, steps=20, out_dir=tempfile.mkdtemp(),
        ...            space="lr=log(1e-3, 1e-2)")
        >>> res.counts["complete"], res.best_spec.startswith("sgd(lr=")
        (2, True)
    """
    from steplab.extras import require
    from steplab.optim import parse_spec
    from steplab.tasks import get_task
    from steplab.train import TrainConfig
    from steplab.train.guards import metric_mode
    from steplab.train.output import check_out_dir, make_out_dir

    _check_int("trials", trials, 1)
    _check_int("workers", workers, 1)
    _check_choices("backend", backend, BACKENDS)
    _check_choices("pruner", pruner, PRUNERS)
    _check_texts(storage, study_name, address, backend)
    require("optuna", "steplab tune")
    if backend == "ray":
        require("ray.tune", "steplab tune --backend ray")
    check_out_dir(out_dir)
    spec = parse_spec(optimizer)
    task_obj = get_task(task, data_dir)
    search = resolve_space(space, spec, trials)
    metric = default_metric(task_obj.target.metric) if metric is None else metric
    if not metric.startswith("val_"):
        raise SpecError(f"metric: got {metric!r}, expected a validation metric (val_...); "
                        "tuning never selects on the test split")
    n_steps = steps if steps is not None else task_obj.default_steps
    train: dict[str, Any] = {
        "task": task, "steps": n_steps, "batch_size": batch_size, "schedule": schedule,
        "eval_every": eval_every or max(1, n_steps // 10), "seed": seed,
        "data_dir": data_dir, "eval_splits": ("val",), "monitor": False,
    }
    TrainConfig(optimizer=str(spec), **train)  # raises SpecError on a bad option now
    out = make_out_dir(out_dir).resolve()
    name = study_name or _study_name(task, str(spec), search, train, metric)
    url = storage or f"sqlite:///{out / 'study.db'}"
    plan = OptunaPlan(
        storage=url, study_name=name,
        direction="minimize" if metric_mode(metric) == "min" else "maximize",
        trials=trials, pruner=pruner, steps=n_steps, eval_every=train["eval_every"],
        seed=seed, workers=workers,
    )
    runner = TrialRunner(str(spec), search, train, metric, str(out / "trials" / name))
    if backend == "ray":
        from steplab.study.tune_ray import run_ray

        study = run_ray(plan, runner, out, address, num_cpus)
    else:
        study = run_optuna(plan, runner)
    info = {"metric": metric, "backend": backend, "storage": url, "study_name": name}
    return write_results(study, search, info, out)

