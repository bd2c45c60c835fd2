"""End to end: a null study never claims a difference; a clearly worse optimizer is called worse."""

from __future__ import annotations

from pathlib import Path

import pytest

from steplab.study.compare import StudyResult, run_study
from steplab.study.spec import StudySpec

# the same optimizer three times: the spec strings differ, the runs are bitwise identical
NULL = StudySpec(
    tasks=("mnist1d-logreg",),
    optimizers=("adam", "adam(lr=0.001)", "adam(eps=1e-08)"),
    baseline="adam",
    seeds=5,
    budget=2,
    steps=60,
    eval_every=20,
    targets=(("mnist1d-logreg", 0.22),),
    trajectories=(),
)


@pytest.fixture(scope="module")
def null_study(tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    return run_study(NULL, tmp_path_factory.mktemp("null") / "out", workers=2, progress=False)


def test_a_null_study_gives_only_equivalent_or_inconclusive(null_study: StudyResult) -> None:
    verdicts = null_study.analysis.verdicts
    assert len(verdicts) == 4  # two optimizers x (final, steps_to_target)
    assert {v.outcome for v in verdicts} <= {"equivalent", "inconclusive"}
    for v in verdicts:
        assert v.estimate == pytest.approx(0.0, abs=1e-12) and v.n_pairs == 5
    finals = [v for v in verdicts if v.quantity == "final"]
    assert all(v.outcome == "equivalent" and (v.ci_low, v.ci_high) == (0.0, 0.0) for v in finals)


def test_the_null_study_runs_are_identical_per_seed(null_study: StudyResult) -> None:
    by_seed: dict[int, set[str]] = {}
    for record in null_study.analysis.records:
        if record.role == "seed":
            by_seed.setdefault(record.config["seed"], set()).add(
                record.summary["final_params_sha256"]
            )
    assert len(by_seed) == 5 and all(len(hashes) == 1 for hashes in by_seed.values())


def test_sgd_is_called_worse_than_adam_on_mnist1d_cnn(tmp_path: Path) -> None:
    spec = StudySpec(
        tasks=("mnist1d-cnn",),
        optimizers=("adam", "sgd"),
        seeds=4,
        budget=1,
        steps=600,
        batch_size=64,
        eval_every=100,
        targets=(("mnist1d-cnn", 0.80),),
        trajectories=(),
    )
    result = run_study(spec, tmp_path / "out", workers=2, progress=False)
    final = next(v for v in result.analysis.verdicts if v.quantity == "final")
    assert (final.optimizer, final.baseline) == ("sgd", "adam")
    assert final.outcome == "worse", final
    assert final.ci_high < 0 and final.p_adjusted < 0.05
