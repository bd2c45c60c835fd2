"""``run_study`` end to end on a tiny study: report files, resume, refusal, divergence, Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from steplab.errors import SpecError
from steplab.study.compare import StudyResult, run_study
from steplab.study.spec import StudySpec

TINY = StudySpec(
    tasks=("mnist1d-logreg",),
    optimizers=("sgd", "lookahead(sgd)", "sgd(lr=1e6)"),
    seeds=2,
    budget=2,
    steps=30,
    eval_every=10,
    lr_span=10.0,
    trajectories=("rosenbrock",),
    trajectory_steps=20,
    trajectory_budget=2,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    out = tmp_path_factory.mktemp("study") / "out"
    return run_study(TINY, out, workers=2, progress=False)


def _summaries(out: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/summary.json")}


def test_every_run_is_content_addressed_and_the_report_is_written(study: StudyResult) -> None:
    # 3 optimizers x 2 trials, 2 x 2 fresh seeds (sgd(lr=1e6) never gets seeds), 3 x 2 paths
    assert study.n_runs == 6 + 4 + 6
    assert study.n_trained == study.n_runs
    for path in (study.report_html, study.report_md, study.results_csv, study.results_json):
        assert path.exists() and path.stat().st_size > 0
    runs = sorted((study.out / "runs").iterdir())
    assert len(runs) == study.n_runs
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        assert config["run_id"] == run.name
    assert (study.out / "study.toml").exists()


def test_final_seeds_are_fresh_shared_and_disjoint_from_tuning(study: StudyResult) -> None:
    """Audit item 6: no final run is a selected search run (the winner's curse)."""
    rows = {r.optimizer: r for r in study.analysis.rows}
    assert len(rows["sgd"].statuses) == 2
    records = study.analysis.records
    search_ids = {r.run_id for r in records if r.role == "search"}
    tuning_seeds = {r.config["seed"] for r in records if r.role == "search"}
    for opt in ("sgd", "lookahead(sgd)"):
        seeds = [r for r in records if r.role == "seed" and r.group.optimizer == opt]
        assert [r.config["seed"] for r in seeds] == [1000, 1001]
        assert not {r.run_id for r in seeds} & search_ids
    assert tuning_seeds == {0}


def test_a_diverging_optimizer_is_a_result_not_a_crash(study: StudyResult) -> None:
    row = next(r for r in study.analysis.rows if r.optimizer == "sgd(lr=1e6)")
    assert row.statuses == []
    search = [
        r
        for r in study.analysis.records
        if r.group.optimizer == "sgd(lr=1e6)" and r.group.kind == "main"
    ]
    assert {r.summary["status"] for r in search} == {"diverged"}
    assert "sgd(lr=1e6)" in study.report_md.read_text()


def test_lookahead_is_compared_with_its_inner_optimizer(study: StudyResult) -> None:
    assert study.analysis.baselines["lookahead(sgd)"] == "sgd"
    row = next(r for r in study.analysis.rows if r.optimizer == "lookahead(sgd)")
    assert len(row.verdicts) == 2 and all(v.startswith("vs sgd: ") for v in row.verdicts)


def test_a_finished_study_rerenders_without_training(study: StudyResult) -> None:
    again = run_study(TINY, study.out, workers=2, progress=False)
    assert again.n_trained == 0
    assert again.n_runs == study.n_runs


def test_an_interrupted_study_resumes_and_reproduces_the_same_weights(
    study: StudyResult, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(study.out, out)
    before = _summaries(out)
    victim = next(
        r for r in study.analysis.records if r.role == "seed" and r.config["seed"] == 1001
    )
    (out / "runs" / victim.run_id / "summary.json").unlink()  # as if killed mid-run
    resumed = run_study(TINY, out, workers=1, progress=False)
    assert resumed.n_trained == 1
    after = _summaries(out)
    assert (
        after[victim.run_id]["final_params_sha256"] == before[victim.run_id]["final_params_sha256"]
    )


def test_a_torn_summary_is_named_and_its_run_trained_again(
    study: StudyResult, tmp_path: Path
) -> None:
    """Found with issue 11: a torn summary.json stopped the study with a JSON traceback."""
    out = tmp_path / "torn"
    shutil.copytree(study.out, out)
    victim = next(r for r in study.analysis.records if r.role == "seed")
    path = out / "runs" / victim.run_id / "summary.json"
    path.write_text(path.read_text()[:40])
    with pytest.warns(UserWarning, match=rf"{victim.run_id}/summary\.json is damaged .* again"):
        resumed = run_study(TINY, out, workers=1, progress=False)
    assert resumed.n_trained == 1
    assert json.loads(path.read_text())["final_params_sha256"] == (
        _summaries(study.out)[victim.run_id]["final_params_sha256"])


def test_an_out_dir_holding_another_study_is_refused(study: StudyResult) -> None:
    with pytest.raises(SpecError, match="holds another study"):
        run_study(TINY.replace(seeds=3), study.out, progress=False)


def test_a_non_empty_directory_without_a_study_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpecError, match="holds no study"):
        run_study(TINY, tmp_path, progress=False)


def test_unknown_names_fail_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="adamm"):
        run_study(TINY.replace(optimizers=("adamm",)), tmp_path / "a", progress=False)
    with pytest.raises(SpecError):
        run_study(TINY.replace(tasks=("no-such-task",), targets=()), tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def ray_session() -> Any:
    ray = pytest.importorskip("ray")
    from steplab.study.ray_cluster import ensure_ray

    ensure_ray(None, 2)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_the_ray_executor_runs_the_same_runs_bit_for_bit(ray_session: Any, tmp_path: Path) -> None:
    from steplab.study.executor import execute_run

    spec = StudySpec(
        tasks=("rosenbrock",),
        optimizers=("sgd(lr=0.0001)",),
        seeds=2,
        budget=2,
        steps=20,
        eval_every=10,
        trajectories=(),
    )
    result = run_study(spec, tmp_path / "ray", executor="ray", workers=2, progress=False)
    assert result.n_trained == 4  # 2 search trials, 2 fresh seeds
    remote = _summaries(tmp_path / "ray")
    record = next(r for r in result.analysis.records if r.summary["status"] == "completed")
    here = execute_run(record.config, str(tmp_path / "here"))  # the same function, in this process
    assert here["final_params_sha256"] == remote[record.run_id]["final_params_sha256"]


@pytest.mark.slow
def test_a_registered_task_reaches_ray_workers(ray_session: Any, tmp_path: Path) -> None:
    """Audit item 9 on Ray: the parent's register_task travels with every run."""
    from steplab.tasks import get_task, register_task

    task = get_task("rosenbrock")
    task.name = "ray-registered-rosenbrock"
    register_task(task, replace=True)
    spec = StudySpec(
        tasks=("ray-registered-rosenbrock",),
        optimizers=("sgd(lr=0.0001)",),
        seeds=1,
        budget=1,
        steps=10,
        eval_every=5,
        trajectories=(),
    )
    result = run_study(spec, tmp_path / "ray", executor="ray", workers=2, progress=False)
    statuses = {r.summary["status"] for r in result.analysis.records}
    assert statuses == {"completed"}, result.analysis.warnings
