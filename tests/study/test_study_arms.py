"""Study arms (an optimizer with its own run settings) and divergence as a judged quantity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomllib

from steplab.cli import main
from steplab.errors import SpecError
from steplab.study.compare import run_study
from steplab.study.protocol import Group, check_names, search_configs
from steplab.study.report_data import baselines
from steplab.study.report_divergence import divergence_flags, run_diverged
from steplab.study.spec import StudySpec
from steplab.study.spec_arms import Arm

WARM = {"w": {"optimizer": "sgd(lr=0.1)", "warmup_steps": 10}}


def test_an_arm_runs_its_optimizer_with_its_settings_on_the_same_lr_grid() -> None:
    spec = StudySpec(tasks=("digits-mlp",), optimizers=("sgd(lr=0.1)", "w"), arms=WARM,  # type: ignore[arg-type]
                     budget=3, tuning_repeats=2, trajectories=())
    check_names(spec)
    plain = search_configs(spec, Group("digits-mlp", "sgd(lr=0.1)"))
    arm = search_configs(spec, Group("digits-mlp", "w"))
    assert [(c["lr"], c["seed"]) for c in plain] == [(c["lr"], c["seed"]) for c in arm]
    assert {c["warmup_steps"] for c in plain} == {0} and {c["warmup_steps"] for c in arm} == {10}
    assert {c["optimizer"] for c in arm} == {"sgd(lr=0.1)"}
    assert baselines(spec.optimizers, None, spec.arms) == {"sgd(lr=0.1)": None, "w": "sgd(lr=0.1)"}


def test_arms_round_trip_through_toml_and_leave_old_hashes_alone() -> None:
    spec = StudySpec(optimizers=("adam", "adam+warmup"), divergence_loss=3,
                     arms={"adam+warmup": {"optimizer": "adam", "warmup_steps": 5,  # type: ignore[arg-type]
                                           "schedule": "cosine", "clip_norm": 1}})
    again = StudySpec.from_dict(tomllib.loads(spec.to_toml())["study"])
    assert again == spec and again.spec_hash == spec.spec_hash
    assert spec.arm("adam+warmup") == ("adam", {"clip_norm": 1.0, "schedule": "cosine",
                                               "warmup_steps": 5})
    assert "arms" not in StudySpec().to_dict() and "divergence_loss" not in StudySpec().to_dict()
    assert spec.arms == (Arm("adam+warmup", "adam", (("clip_norm", 1.0), ("schedule", "cosine"),
                                                     ("warmup_steps", 5))),)


@pytest.mark.parametrize(
    ("arms", "optimizers", "needle"),
    [
        ({"w": {"optimizer": "adam", "warmup": 5}}, ("w",), "arms.w.warmup: unknown key"),
        ({"w": {"warmup_steps": 5}}, ("w",), "arms.w.optimizer: got None"),
        ({"w": {"optimizer": "adam", "warmup_steps": -1}}, ("w",), "arms.w.warmup_steps: got -1"),
        ({"w": {"optimizer": "adam", "schedule": "cos"}}, ("w",), "arms.w.schedule: got 'cos'"),
        ({"w": {"optimizer": "adam", "clip_norm": 0}}, ("w",), "arms.w.clip_norm: got 0"),
        ({"w": {"optimizer": "adamm"}}, ("w",), "unknown optimizer 'adamm'"),
        ({"sgd": {"optimizer": "adam"}}, ("sgd",), "itself an optimizer spec"),
        ({"w": {"optimizer": "adam"}}, ("adam",), "arms.w: not in optimizers"),
        ({"w": "adam"}, ("w",), "arms.w: got 'adam', expected a table"),
    ],
)
def test_a_bad_arm_is_one_clear_line(
    arms: dict[str, Any], optimizers: tuple[str, ...], needle: str
) -> None:
    with pytest.raises(SpecError) as info:
        StudySpec(optimizers=optimizers, arms=arms)  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_bad_arm_in_a_toml_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[study]\ntasks = ["beale"]\noptimizers = ["w"]\n'
                    '[study.arms.w]\noptimizer = "adam"\nwarmup_steps = "ten"\n')
    assert main(["compare", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "arms.w.warmup_steps: got 'ten'" in err


def test_a_run_diverged_when_stopped_non_finite_or_above_the_loss_limit() -> None:
    ok = {"status": "completed", "metrics": {"val_loss": 2.0}}
    assert run_diverged(ok, 3.0) is False and run_diverged(ok, 1.5) is True
    assert run_diverged({"status": "diverged"}, None) is True
    assert run_diverged({"status": "completed", "metrics": {"val_loss": float("nan")}}, None)
    assert run_diverged({"status": "failed"}, 3.0) is None

    class Rec:
        def __init__(self, role: str, lr: float, seed: int, loss: float) -> None:
            self.role, self.config = role, {"lr": lr, "seed": seed}
            self.summary = {"status": "completed", "metrics": {"val_loss": loss}}

    flags = divergence_flags([Rec("search", 0.1, 0, 9.0), Rec("search", 0.01, 0, 1.0),
                              Rec("seed", 0.01, 1000, 9.0)], 3.0)
    assert flags == {"lr=0.1 seed=0": True, "lr=0.01 seed=0": False}


def test_a_study_with_an_arm_judges_divergence_and_its_claim(tmp_path: Path) -> None:
    spec = StudySpec(
        tasks=("digits-mlp",), optimizers=("sgd(lr=0.1)", "w"), arms=WARM,  # type: ignore[arg-type]
        steps=20, budget=2, lr_span=100.0, tuning_repeats=2, seeds=2, selection="final",
        metrics=("divergence",), divergence_loss=2.0, trajectories=(),
        claims=[{"optimizer": "w", "baseline": "sgd(lr=0.1)",  # type: ignore[list-item]
                 "quantity": "divergence", "at_most": 0.0}],
    )
    result = run_study(spec, tmp_path / "out", workers=1, progress=False)
    rows = {r.optimizer: r for r in result.analysis.rows}
    assert len(rows["w"].diverged) == 4 and len(rows["sgd(lr=0.1)"].diverged) == 4
    # lr 10 blows up and lr 0.001 learns too little in 20 steps (val loss above 2.0)
    assert all(rows["w"].diverged.values())
    verdict = next(v for v in result.analysis.verdicts if v.quantity == "divergence")
    assert verdict.optimizer == "w" and verdict.n_pairs == 4 and verdict.estimate == 0.0
    claim = result.analysis.claims[0]
    assert claim.quantity == "divergence" and claim.outcome == "inconclusive"
    report = result.report_md.read_text()
    assert "| divergence |" in report and "4/4 (100%)" in report
    assert "divergence rate of the search runs" in report and "McNemar" in report
    assert "Arm 'w' is sgd(lr=0.1) with warmup_steps = 10" in report
