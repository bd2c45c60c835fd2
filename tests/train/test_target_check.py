"""``target_every``: a cheap check of the target between evaluations (audit item 3's resolution)."""

from __future__ import annotations

from pathlib import Path

from steplab.study.report_data import read_rows
from steplab.train import TrainConfig, fit

BASE = {"task": "mnist1d-logreg", "optimizer": "adam", "lr": 0.01, "steps": 120, "seed": 3,
        "eval_every": 60, "monitor": False}


def test_checking_every_few_steps_finds_the_target_at_that_resolution(tmp_path: Path) -> None:
    coarse = fit(TrainConfig(**BASE, target_value=0.25), tmp_path / "a", progress=False)
    fine = fit(
        TrainConfig(**BASE, target_value=0.25, target_every=4), tmp_path / "b", progress=False
    )
    assert coarse.summary["target_step"] in (60, 120)
    assert fine.summary["target_step"] % 4 == 0
    assert fine.summary["target_step"] <= coarse.summary["target_step"]
    assert fine.summary["target"]["value"] == 0.25
    checks = [r for r in read_rows(tmp_path / "b" / "metrics.jsonl") if r.get("target_check")]
    assert len(checks) <= 1  # logged only where it is first met
    # the same training: checks read the model and never change it
    assert fine.summary["final_params_sha256"] == coarse.summary["final_params_sha256"]


def test_unset_target_fields_leave_run_ids_unchanged() -> None:
    config = TrainConfig(**BASE)
    assert "target_every" not in config.to_dict() and "target_value" not in config.to_dict()
    again = TrainConfig.from_dict(TrainConfig(**BASE, target_every=5).to_dict())
    assert again.target_every == 5 and again.run_id != config.run_id
