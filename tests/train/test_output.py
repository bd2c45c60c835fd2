"""The run directory: config.json, metrics.jsonl and summary.json hold the contract's keys."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from steplab.errors import SpecError
from steplab.train import TrainConfig, fit
from steplab.train.output import RunDir

SUMMARY_KEYS = {
    "status", "run_id", "steps", "metrics", "best_metrics", "target", "target_step",
    "target_time", "wall_time", "steps_per_s", "step_time_ms", "nonfinite_skipped",
    "state_bytes_per_param", "n_params", "final_params_sha256", "torch_version", "stop_reason",
    "peak_state_bytes", "data",
    "world_size", "parallel", "global_batch_size", "per_rank_batch_size", "effective_lr",
}


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_holds_config_metrics_and_summary(toy: Any, tmp_path: Path) -> None:
    cfg = TrainConfig(task=toy.name, optimizer="adamw", steps=20, log_every=5, eval_every=10)
    result = fit(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    events = [n for n in names if n.startswith("events.out.tfevents.")]  # TensorBoard
    assert len(events) == 1
    assert [n for n in names if n not in events] == ["config.json", "metrics.jsonl",
                                                     "summary.json"]
    config = json.loads((run / "config.json").read_text())
    assert config["run_id"] == cfg.run_id
    assert TrainConfig.from_dict(config) == cfg
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert set(summary["metrics"]) == {"train_loss", "val_loss", "val_accuracy", "test_loss",
                                       "test_accuracy"}
    assert summary["target"] == {"metric": "val_accuracy", "value": 0.5, "mode": "max"}
    assert summary["n_params"] == 36
    assert summary["state_bytes_per_param"] == pytest.approx(8.0, abs=0.5)  # Adam: 2 fp32
    assert len(summary["final_params_sha256"]) == 64
    rows = _rows(run)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert {"step", "wall_time", "train_loss", "lr", "grad_norm", "update_ratio",
            "layer_grad_norms"} <= set(rows[0])
    assert set(rows[0]["layer_grad_norms"]) == {"1.weight", "1.bias"}
    assert {"val_loss", "test_accuracy"} <= set(rows[1]) and "val_loss" not in rows[0]
    assert all(b["wall_time"] >= a["wall_time"] for a, b in itertools.pairwise(rows))


def test_without_monitor_rows_have_no_gradient_statistics(toy: Any, tmp_path: Path) -> None:
    fit(TrainConfig(task=toy.name, steps=10, log_every=5, monitor=False), tmp_path / "r",
        progress=False)
    assert "grad_norm" not in _rows(tmp_path / "r")[0]


def test_trajectory_task_logs_parameters_every_step(tmp_path: Path) -> None:
    fit(TrainConfig(task="beale", optimizer="adam", lr=0.01, steps=8), tmp_path / "b",
        progress=False)
    rows = _rows(tmp_path / "b")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[0]["params"] != [1.0, 1.5] and len(rows[0]["params"]) == 2


def test_nan_metrics_are_written_as_null(tmp_path: Path) -> None:
    summary = fit(TrainConfig(task="rosenbrock", optimizer="sgd", lr=1.0, steps=100),
                  tmp_path / "d", progress=False).summary
    text = (tmp_path / "d" / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert summary["status"] == "diverged"


def test_failed_start_creates_nothing(tmp_path: Path) -> None:
    from steplab.errors import SpecError

    with pytest.raises(SpecError, match="batch_size"):
        fit(TrainConfig(task="digits-mlp", batch_size=10**6, steps=3), tmp_path / "new",
            progress=False)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("content", ['{"task": "x", "run_i', "[1, 2]", '{"task": "x"}', ""])
def test_a_torn_config_json_is_named_not_reported_as_run_none(
    tmp_path: Path, content: str
) -> None:
    """Issue 11: a damaged config.json said ``which holds run None``."""
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(SpecError, match=r"config\.json' is damaged \(.*\); expected the "
                                        r"config\.json of run 'abc'") as caught:
        RunDir(tmp_path, "abc").check(resume=True)
    assert "None" not in str(caught.value)


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused_not_taken_as_the_working_directory(out: str) -> None:
    with pytest.raises(SpecError, match=r"^out: got .*, expected a directory path"):
        RunDir(out, "abc")
