"""Metrics beyond the target (``metrics = [...]`` in a study spec) in the table and verdicts."""

from __future__ import annotations

import math
from typing import Any

import pytest
import tomllib

from steplab.errors import SpecError
from steplab.study.protocol import Group
from steplab.study.report_data import RunRecord, analyze, table_cells
from steplab.study.report_metrics import metric_value
from steplab.study.spec import StudySpec

SPEC = StudySpec(tasks=("mnist1d-cnn",), optimizers=("adam", "lookahead(adam)"), seeds=6,
                 budget=1, steps=100, trajectories=(),
                 metrics=("ece", "shift_accuracy", "peak_state_bytes", "step_time_ms"))


def _record(opt: str, seed: int) -> RunRecord:
    look = opt.startswith("lookahead")
    jitter = 0.001 * (seed % 3)
    rows = [{"step": s, "wall_time": s * 0.01, "train_loss": 1.0 / s,
             "val_accuracy": 0.9, "test_accuracy": 0.9} for s in (50, 100)]
    summary: dict[str, Any] = {
        "status": "completed", "steps": 100, "step_time_ms": 2.0 + jitter,
        "state_bytes_per_param": 12.0 if look else 8.0,
        "peak_state_bytes": 3000 if look else 2000,
        "metrics": {"test_accuracy": 0.9 + jitter, "val_accuracy": 0.9,
                    # lookahead: better calibrated by 0.02, more robust to shift by 0.05
                    "test_ece": (0.03 if look else 0.05) + jitter,
                    "test_shift_accuracy": (0.80 if look else 0.75) + jitter},
    }
    config = {"task": "mnist1d-cnn", "optimizer": opt, "lr": 0.01, "seed": seed, "steps": 100}
    return RunRecord(Group("mnist1d-cnn", opt), "seed", config, summary, rows, f"{opt}-{seed}")


def test_requested_metrics_become_columns_and_paired_verdicts() -> None:
    records = [_record(o, 1000 + s) for o in SPEC.optimizers for s in range(6)]
    analysis = analyze(SPEC, records, {})
    assert analysis.columns[-4:] == SPEC.metrics
    look = next(r for r in analysis.rows if r.optimizer == "lookahead(adam)")
    cells = table_cells(look)
    assert cells["peak_state_bytes"].startswith("3000") and cells["ece"].startswith("0.03")
    by_quantity = {v.quantity: v for v in analysis.verdicts if v.optimizer == "lookahead(adam)"}
    # lower ECE is better, higher shift accuracy is better, more state bytes is worse
    assert by_quantity["ece"].outcome == "better"
    assert by_quantity["ece"].estimate == pytest.approx(-0.02)
    assert by_quantity["shift_accuracy"].outcome == "better"
    assert by_quantity["peak_state_bytes"].outcome == "worse"
    assert by_quantity["step_time_ms"].outcome == "equivalent"  # within 10% of 2 ms
    assert any("final ece" in v and "BETTER" in v for v in look.verdicts)


def test_metric_names_are_checked_and_unset_metrics_keep_old_spec_hashes() -> None:
    with pytest.raises(SpecError, match="metrics: got 'accuracy_under_shift'"):
        StudySpec(metrics=("accuracy_under_shift",))
    assert "metrics" not in StudySpec().to_dict()
    spec = StudySpec(metrics=("nll", "test_loss"))
    assert StudySpec.from_dict(tomllib.loads(spec.to_toml())["study"]) == spec


def test_a_failed_run_gives_no_value() -> None:
    assert math.isnan(metric_value({"status": "diverged", "metrics": {"test_nll": 1.0}}, "nll"))
    assert math.isnan(metric_value({"status": "completed", "metrics": {}}, "nll"))
