"""``steplab train``: flags map to TrainConfig, --json prints the summary, bad input exits 2."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from steplab.cli import main


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_writes_the_run_and_prints_json(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run"
    code = main(["train", "--task", "digits-mlp", "--optimizer", "lookahead(adamw)",
                 "--lr", "0.003", "--batch-size", "32", "--steps", "30", "--schedule", "cosine",
                 "--warmup-steps", "5", "--clip-norm", "1.0", "--log-every", "10",
                 "--checkpoint-every", "15", "--seed", "2", "--out", str(out), "--quiet",
                 "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["steps"] == 30
    config = json.loads((out / "config.json").read_text())
    assert (config["optimizer"], config["lr"], config["batch_size"], config["schedule"],
            config["warmup_steps"], config["clip_norm"], config["seed"]) == (
        "lookahead(adamw)", 0.003, 32, "cosine", 5, 1.0, 2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000015", "step-00000030"]
    # --resume on an ended run prints the same summary without training again
    assert main(["train", "--task", "digits-mlp", "--optimizer", "lookahead(adamw)",
                 "--lr", "0.003", "--batch-size", "32", "--steps", "30", "--schedule", "cosine",
                 "--warmup-steps", "5", "--clip-norm", "1.0", "--log-every", "10",
                 "--checkpoint-every", "15", "--seed", "2", "--out", str(out), "--quiet",
                 "--json", "--resume"]) == 0
    assert json.loads(capsys.readouterr().out) == summary


def test_full_batch_and_table_output(capsys: Any) -> None:
    assert main(["train", "--task", "rosenbrock", "--optimizer", "adam", "--lr", "0.05",
                 "--batch-size", "full", "--steps", "20", "--quiet"]) == 0
    assert "completed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--task", "digits-mpl"], "task: got 'digits-mpl'"),
        (["--task", "digits-mlp", "--optimizer", "adamm"], "unknown optimizer 'adamm'"),
        (["--task", "digits-mlp", "--schedule", "cos"], "schedule: got 'cos'"),
        (["--task", "digits-mlp", "--lr", "0"], "lr: got 0.0, expected a finite number > 0"),
        (["--task", "digits-mlp", "--steps", "0"], "steps: got 0, expected an integer >= 1"),
        (["--task", "digits-mlp", "--clip-norm", "-1"], "--clip-norm: got -1.0"),
        (["--task", "digits-mlp", "--batch-size", "99999"], "--batch-size: got 99999"),
        (["--task", "mnist", "--data-dir", "/nonexistent"], "--data-dir: got '/nonexistent'"),
    ],
)
def test_bad_input_exits_2_with_one_line(flags: list[str], expected: str, capsys: Any) -> None:
    assert main(["train", *flags, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("steplab train: error: ") and expected in err


def test_out_holding_another_run_exits_2_and_is_not_touched(
    tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "r"
    assert main(["train", "--task", "beale", "--steps", "5", "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", "--task", "beale", "--steps", "6", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "out: got" in err and "holds run" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_launched_ranks_get_the_observation_options() -> None:
    from steplab.cli import build_parser
    from steplab.cli.train import _worker_args

    args = build_parser().parse_args(["train", "--task", "beale", "--keep-checkpoints", "all",
                                      "--no-tensorboard", "--state-every", "5"])
    worker = _worker_args(args)
    assert "--no-tensorboard" in worker
    assert worker[worker.index("--keep-checkpoints") + 1] == "all"
    assert worker[worker.index("--state-every") + 1] == "5"

def test_nproc_run_whose_ranks_fail_ends_with_one_line_naming_the_rank(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "steplab", "train", "--task", "mnist1d-logreg", "--steps", "3",
         "--batch-size", "31", "--quiet", "--nproc", "2"],
        capture_output=True, text=True, timeout=480)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    # both ranks refuse the batch; the launcher stops the slower one, the line names the first
    assert re.match(r"steplab train: error: rank [01] of 2 exited with code 2;", last), last
    assert "Traceback" not in proc.stderr
