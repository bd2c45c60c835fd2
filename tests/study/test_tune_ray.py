"""steplab.study.tune with --backend ray: a real local Ray Tune run (OptunaSearch + ASHA)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from steplab.optim import parse_spec
from steplab.study.ray_cluster import ensure_ray
from steplab.study.tuning import tune


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    ray = ensure_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_backend_runs_two_trials_and_writes_the_same_results(
    ray_session: Any, tmp_path: Path
) -> None:
    res = tune(
        "beale",
        "adam",
        trials=2,
        steps=30,
        space="lr=log(1e-3, 0.3)",
        backend="ray",
        out_dir=tmp_path,
    )
    assert res.backend == "ray"
    study = optuna.load_study(
        study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'study.db'}"
    )
    assert len(study.trials) == 2
    assert all(t.user_attrs["backend"] == "ray" for t in study.trials)
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.COMPLETE in states
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    saved = json.loads((tmp_path / "best.json").read_text())
    assert saved["best_spec"] == res.best_spec and res.best_spec is not None
    assert parse_spec(res.best_spec).kwargs["lr"] == pytest.approx(res.best_params["lr"])
    assert (tmp_path / "history.png").exists() and (tmp_path / "importance.png").exists()
    # each trial trained into its own run directory through steplab.train.fit, and each
    # one, also one ASHA stopped, has a summary.json
    trial_dirs = tmp_path / "trials" / res.study_name
    assert len(list(trial_dirs.glob("ray-*/config.json"))) == 2
    assert len(list(trial_dirs.glob("ray-*/summary.json"))) == 2
    # the study is complete: running the same command again adds nothing
    again = tune(
        "beale",
        "adam",
        trials=2,
        steps=30,
        space="lr=log(1e-3, 0.3)",
        backend="ray",
        out_dir=tmp_path,
    )
    assert again.counts == res.counts


def test_asha_stopped_trials_leave_a_pruned_summary_and_a_resumed_search_learns(
    ray_session: Any, tmp_path: Path
) -> None:
    """Issue 11: an ASHA-stopped trial left no summary.json, and a resumed study's
    searcher started from nothing."""
    kwargs: dict[str, Any] = {"steps": 40, "eval_every": 4, "space": "lr=log(1e-5, 0.5)",
                              "backend": "ray", "out_dir": tmp_path, "seed": 3}
    res = tune("beale", "adam", trials=6, **kwargs)
    study = optuna.load_study(study_name=res.study_name,
                              storage=f"sqlite:///{tmp_path / 'study.db'}")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "ASHA stopped no trial; the check below would say nothing"
    for trial in study.trials:
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        expected = "pruned" if trial in pruned else "completed"
        assert summary["status"] == expected, trial.number
    from ray.tune.search.optuna import OptunaSearch

    from steplab.study.search_space import parse_space
    from steplab.study.tune_objective import TrialRunner
    from steplab.study.tune_ray import tell_stored_trials

    space = parse_space("lr=log(1e-5, 0.5)", parse_spec("adam"))
    searcher = OptunaSearch(space=space.to_optuna(), metric="val_distance", mode="min")
    told = tell_stored_trials(searcher, study, TrialRunner("adam", space, metric="val_distance"))
    assert told == len(study.trials) == 6
    assert len(searcher._ot_study.trials) == 6  # the sampler sees them
