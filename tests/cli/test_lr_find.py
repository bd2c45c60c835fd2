"""``steplab lr-find``: one line on the terminal, JSON and PNG on disk, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steplab.cli import main


def test_lr_find_prints_one_line_and_writes_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "lr-find",
            "--task",
            "mnist1d-logreg",
            "--optimizer",
            "adam",
            "--min-lr",
            "1e-5",
            "--steps",
            "60",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out.strip()
    assert code == 0
    assert len(out.splitlines()) == 1 and out.startswith("mnist1d-logreg, adam: suggested lr ")
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggested_lr"] is not None and f"{saved['suggested_lr']:.3g}" in out
    assert (tmp_path / "lr_find.png").stat().st_size > 1000


def test_lr_find_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "lr-find",
            "--task",
            "rosenbrock",
            "--optimizer",
            "sgd",
            "--min-lr",
            "1e-6",
            "--max-lr",
            "1",
            "--steps",
            "40",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code in (0, 1)  # 1: the curve gave no clear answer (said in "problem")
    assert (code == 0) == (data["suggested_lr"] is not None)
    assert len(data["lrs"]) == len(data["losses"]) >= 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nosuchtask"], "nosuchtask"),
        (["--task", "beale", "--min-lr", "0"], "--min-lr: got 0.0"),
        (["--task", "beale", "--min-lr", "1", "--max-lr", "0.1"], "--max-lr: got 0.1"),
        (["--task", "beale", "--optimizer", "adam(lrr=1)"], "lrr"),
        (["--task", "beale", "--steps", "1"], "--steps: got 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(["lr-find", *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert (
        len(err.splitlines()) == 1 and err.startswith("steplab lr-find: error: ") and message in err
    )
