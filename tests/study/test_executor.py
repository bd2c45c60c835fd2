"""The run function and the local process pool that executes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from steplab.errors import SpecError
from steplab.study.executor import LocalExecutor, RunJob, execute_run, make_executor, run_jobs

CONFIG: dict[str, Any] = {
    "task": "rosenbrock",
    "optimizer": "sgd",
    "lr": 1e-4,
    "steps": 15,
    "eval_every": 5,
    "monitor": False,
}


def test_execute_run_writes_the_run_files_and_returns_its_summary(tmp_path: Path) -> None:
    summary = execute_run(CONFIG, str(tmp_path / "run"))
    assert summary["status"] == "completed" and summary["steps"] == 15
    assert summary["cpu_seconds"] > 0
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["final_params_sha256"] == summary["final_params_sha256"]


def test_a_run_that_raises_is_reported_as_failed_not_raised(tmp_path: Path) -> None:
    summary = execute_run({**CONFIG, "optimizer": "no-such-rule"}, str(tmp_path / "bad"))
    assert summary["status"] == "failed" and "no-such-rule" in summary["error"]
    assert not (tmp_path / "bad" / "summary.json").exists()


def test_a_leftover_partial_run_directory_is_cleared_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "torn')
    assert execute_run(CONFIG, str(run_dir))["status"] == "completed"
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(r)["step"] >= 1 for r in rows)


def test_the_pool_runs_jobs_and_the_follow_ups_they_add(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def on_done(job: RunJob, summary: dict[str, Any]) -> list[RunJob]:
        seen.append((job.label, summary["status"]))
        if job.label == "first":
            return [RunJob({**CONFIG, "seed": 1}, str(tmp_path / "c"), "follow-up")]
        return []

    jobs = [
        RunJob(CONFIG, str(tmp_path / "a"), "first"),
        RunJob({**CONFIG, "lr": 2e-4}, str(tmp_path / "b"), "second"),
    ]
    run_jobs(LocalExecutor(2), jobs, on_done, total=3, progress=False)
    assert sorted(seen) == [
        ("first", "completed"),
        ("follow-up", "completed"),
        ("second", "completed"),
    ]


@pytest.mark.parametrize(
    ("kind", "workers", "address"),
    [("dask", None, None), ("local", 0, None), ("local", None, "auto")],
)
def test_bad_executor_settings_raise_spec_errors(
    kind: str, workers: int | None, address: str | None
) -> None:
    with pytest.raises(SpecError):
        make_executor(kind, workers, address)
