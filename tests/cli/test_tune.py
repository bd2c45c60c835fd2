"""``steplab tune``: the best spec printed, JSON for scripts, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steplab.cli import main
from steplab.optim import parse_spec


def test_tune_prints_the_best_spec_and_continues_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "tune",
        "--task",
        "beale",
        "--optimizer",
        "adam",
        "--trials",
        "2",
        "--steps",
        "20",
        "--space",
        "lr=log(1e-3, 0.3)",
        "--pruner",
        "none",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    best_line = next(line for line in out.splitlines() if line.startswith("best: "))
    spec = best_line.split()[1]
    assert parse_spec(spec).name == "adam"
    # the same command with a larger budget continues the stored study
    assert main([*argv[:6], "3", *argv[7:], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["complete"] == 3 and data["storage"].startswith("sqlite:///")
    assert json.loads((tmp_path / "best.json").read_text()) == data


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trials", "0"], "trials: got 0, expected an integer >= 1"),
        (["--space", "lr=log(1e-5,"], "space: cannot read"),
        (["--space", "nesterov=[True, False]"], "'nesterov' is not a hyperparameter of adam"),
        (["--space", "lr=(1, 0.1)"], "wrong order"),
        (["--storage", "postgresql://127.0.0.1:1/x"], "storage: cannot open"),
        (["--storage", "sqlite:////nonexistent-dir/x/study.db"], "storage: cannot open"),
        (["--task", "nosuchtask"], "nosuchtask"),
        (["--workers", "0"], "workers: got 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = ["tune", "--task", "beale", "--trials", "2", "--steps", "20", "--out", str(tmp_path)]
    code = main([*base, *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("steplab tune: error: ") and message in err
