"""``steplab compare``: bad input exits 2 with one line; a tiny study prints where its report is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steplab.cli import main

TINY = [
    "--tasks",
    "rosenbrock",
    "--optimizers",
    "sgd(lr=0.0001),adam",
    "--budget",
    "1",
    "--seeds",
    "1",
    "--steps",
    "10",
    "--trajectories",
    "none",
    "--workers",
    "1",
]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--optimizers", "adamm"], "adamm"),
        (["--tasks", "mnist1d-cnnn"], "mnist1d-cnnn"),
        (["--optimizers", ""], "optimizers"),
        (["--seeds", "0"], "seeds"),
        (["--budget", "0"], "budget"),
        (["--level", "1.5"], "level"),
        (["--tuning-repeats", "0"], "tuning-repeats"),
        (["--executor", "ray", "--workers", "0"], "workers"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", *args, "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert line.startswith("steplab compare: error:") and needle in line


def test_an_unreadable_spec_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read" in _error_line(capsys)


def test_an_out_dir_holding_another_study_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"spec_hash": "0123456789ab"}))
    assert main(["compare", *TINY, "--out", str(out)]) == 2
    assert "holds another study" in _error_line(capsys)


def test_a_tiny_study_runs_and_reports_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["compare", *TINY, "--out", str(out), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert Path(body["report_html"]).exists() and body["n_runs"] == 4  # 1 trial + 1 seed each
    verdicts = body["verdicts"]
    assert [(v["optimizer"], v["baseline"], v["quantity"]) for v in verdicts] == [
        ("sgd(lr=0.0001)", "adam", "final"),
        ("sgd(lr=0.0001)", "adam", "steps_to_target"),
    ]
    assert all(v["outcome"] == "inconclusive" and v["n_pairs"] == 1 for v in verdicts)
    assert body["claims"] == []
    # the recorded spec reproduces the study: re-running it trains nothing
    assert main(["compare", str(out / "study.toml"), "--out", str(out), "--quiet"]) == 0
    assert "0 trained now" in capsys.readouterr().out
