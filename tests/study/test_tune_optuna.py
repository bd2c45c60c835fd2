"""steplab.study.tune on Optuna with real SQLite: results, resume after SIGKILL, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from steplab.errors import SpecError
from steplab.optim import parse_spec
from steplab.study import TuneResult, tune
from steplab.study.tune_optuna import counted_trials, open_storage
from steplab.train import TrainConfig, fit

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(out: Path, name: str) -> optuna.Study:
    # open_storage waits up to 60 s for SQLite's lock while a worker process writes
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{out / 'study.db'}"))


def test_tiny_study_writes_best_spec_json_and_plots(tmp_path: Path) -> None:
    res = tune(
        "beale",
        "adam",
        trials=4,
        steps=30,
        space="lr=log(1e-3, 0.3)",
        pruner="none",
        out_dir=tmp_path,
    )
    assert isinstance(res, TuneResult)
    assert (
        res.counts["complete"] == 4 and res.metric == "val_distance" and res.direction == "minimize"
    )
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["best_spec"] == res.best_spec and saved["best_value"] == res.best_value
    assert (tmp_path / "history.png").stat().st_size > 1000
    assert (tmp_path / "importance.png").stat().st_size > 1000
    # the best spec is what train accepts, and training it reproduces the best value
    assert res.best_spec is not None
    assert parse_spec(res.best_spec).kwargs["lr"] == res.best_params["lr"]
    cfg = TrainConfig(
        task="beale",
        optimizer=res.best_spec,
        steps=30,
        eval_every=3,
        eval_splits=("val",),
        monitor=False,
    )
    assert fit(cfg, progress=False).summary["metrics"]["val_distance"] == pytest.approx(
        res.best_value
    )
    # every trial is a row in the SQLite file, with its spec and status
    trials = _study(tmp_path, res.study_name).trials
    assert {t.user_attrs["status"] for t in trials} == {"completed"}
    assert all(t.user_attrs["spec"].startswith("adam(lr=") for t in trials)


def test_diverged_trials_are_recorded_as_failed_and_counted(tmp_path: Path) -> None:
    res = tune(
        "rosenbrock",
        "sgd",
        trials=3,
        steps=30,
        space="lr=log(0.5, 2)",
        pruner="none",
        out_dir=tmp_path,
    )
    study = _study(tmp_path, res.study_name)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert {t.user_attrs["status"] for t in study.trials} == {"diverged"}
    assert res.best_spec is None and res.counts["failed"] == 3
    assert counted_trials(study) == 3


def test_median_pruner_prunes_and_fit_records_pruned(tmp_path: Path) -> None:
    res = tune(
        "beale",
        "adam",
        trials=12,
        steps=40,
        space="lr=log(1e-5, 0.3)",
        pruner="median",
        out_dir=tmp_path,
    )
    study = _study(tmp_path, res.study_name)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "expected the median pruner to stop at least one slow trial"
    run_dir = Path(res.out_dir) / "trials" / res.study_name / f"trial-{pruned[0].number:04d}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["steps"] < 40
    assert res.counts["complete"] + res.counts["pruned"] == 12


_WORKER = textwrap.dedent(
    """
    import sys
    from steplab.study import tune
    tune("beale", "adam", trials=8, steps=150, space="lr=log(1e-3, 0.3)", pruner="none",
         out_dir=sys.argv[1], study_name="crash")
    """
)


@pytest.mark.slow
def test_study_killed_mid_trial_resumes_to_the_full_budget(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path)], stdout=sink, stderr=sink
        )
    try:
        # Generous: on a loaded 2-core machine the worker's imports alone can take a minute.
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if not (tmp_path / "study.db").exists():
                continue
            states = _states(tmp_path)
            if states.count(TrialState.COMPLETE) >= 2 and states[-1] == TrialState.RUNNING:
                break
        alive = proc.poll() is None
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert alive, f"the worker ended before it was killed: {log.read_text()[-2000:]}"
    before = _study(tmp_path, "crash").trials
    done = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    assert 2 <= len(done) < 8
    res = tune(
        "beale",
        "adam",
        trials=8,
        steps=150,
        space="lr=log(1e-3, 0.3)",
        pruner="none",
        out_dir=tmp_path,
        study_name="crash",
    )
    after = _study(tmp_path, "crash").trials
    assert counted_trials(_study(tmp_path, "crash")) == 8
    assert {t.number: t.value for t in after if t.number in done} == done  # kept, not re-run
    assert res.counts["complete"] == 8
    # running it again does nothing: the budget is met
    again = tune(
        "beale",
        "adam",
        trials=8,
        steps=150,
        space="lr=log(1e-3, 0.3)",
        pruner="none",
        out_dir=tmp_path,
        study_name="crash",
    )
    assert len(_study(tmp_path, "crash").trials) == len(after) and again.best_spec == res.best_spec


def _states(out: Path) -> list[TrialState]:
    """Trial states of the "crash" study, or [] while the worker is still creating it."""
    try:
        return [t.state for t in _study(out, "crash").trials]
    except KeyError:  # Optuna's "Record does not exist." before the study is committed
        return []


@pytest.mark.slow
def test_two_worker_processes_share_the_sqlite_study(tmp_path: Path) -> None:
    res = tune(
        "beale",
        "adam",
        trials=4,
        steps=30,
        space="lr=log(1e-3, 0.3)",
        pruner="none",
        workers=2,
        out_dir=tmp_path,
    )
    study = _study(tmp_path, res.study_name)
    assert 4 <= res.counts["complete"] <= 5  # a worker may finish the trial in flight
    assert len({t.params["lr"] for t in study.trials}) == len(study.trials)  # no duplicates


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trials": 0}, "^trials: got 0, expected an integer >= 1"),
        ({"space": "lr=log(1e-5"}, "^space: cannot read"),
        ({"space": "momentum=(0.8, 0.99)"}, "^space: 'momentum' is not a hyperparameter of adam"),
        ({"space": "lr=log(1, 1e-5)"}, "^space: lr bounds .* wrong order"),
        (
            {"storage": "postgresql://127.0.0.1:1/x"},
            "^storage: cannot open 'postgresql://127.0.0.1:1/x'",
        ),
        ({"storage": "sqlite:////nonexistent-dir/sub/study.db"}, "^storage: cannot open"),
        ({"pruner": "asha"}, "^pruner: got 'asha'"),
        ({"backend": "dask"}, "^backend: got 'dask'"),
        ({"metric": "test_accuracy"}, "^metric: got 'test_accuracy'"),
        ({"optimizer": "adamm"}, "adamm"),
        ({"steps": 0}, "steps"),
        ({"study_name": "../escape"}, "^study_name: got '../escape'"),
        ({"storage": ""}, "^storage: got ''"),
        ({"metric": ""}, "^metric: got ''"),
        ({"address": "auto"}, "^address: got 'auto' with backend 'optuna'"),
    ],
)
def test_bad_input_raises_spec_error_before_training(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args = {
        "task": "beale",
        "optimizer": "adam",
        "trials": 2,
        "steps": 20,
        "out_dir": tmp_path,
        **kwargs,
    }
    with pytest.raises(SpecError, match=message) as info:
        tune(**args)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert not (tmp_path / "trials").exists()


def test_lookaheads_k_and_alpha_are_tuned_with_space(tmp_path: Path) -> None:
    """Issue 11: Lookahead's own k and alpha could not be searched with --space."""
    res = tune("beale", "lookahead(sgd)", trials=3, steps=20, out_dir=tmp_path,
               space="lr=log(1e-3, 1e-2), k=int(2, 4), alpha=(0.3, 0.9)")
    assert res.best_spec is not None
    best = parse_spec(res.best_spec)
    assert best.name == "lookahead" and best.inner is not None and best.inner.name == "sgd"
    assert 2 <= int(best.kwargs["k"]) <= 4 and 0.3 <= float(best.kwargs["alpha"]) <= 0.9
    assert "lr" in best.inner.kwargs


def test_opening_a_storage_another_process_is_creating_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (a full test run failed on it): SQLAlchemy checks whether each table exists,
    then creates it; a process that checked just before another created the tables fails on
    SQLite's own "table ... already exists". Here the other process's tables are real and the
    first existence check answers as it would have a moment earlier."""
    from sqlalchemy.dialects.sqlite.base import SQLiteDialect

    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_storage(url)  # the other process, done creating
    has_table = SQLiteDialect.has_table
    looked: list[str] = []

    def before_the_other_created(self: Any, connection: Any, table_name: str,
                                 *args: Any, **kwargs: Any) -> bool:
        looked.append(table_name)
        if len(looked) == 1:
            return False
        return bool(has_table(self, connection, table_name, *args, **kwargs))

    monkeypatch.setattr(SQLiteDialect, "has_table", before_the_other_created)
    storage = open_storage(url)
    assert storage.get_all_studies() == [] and len(looked) > 1
