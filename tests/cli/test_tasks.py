"""``steplab tasks``: the table, ``--json`` and bad names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from steplab.cli import main


def test_json_lists_every_builtin_with_sizes_target_and_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tasks", "--json"]) == 0
    infos = {info["name"]: info for info in json.loads(capsys.readouterr().out)}
    assert {"mnist1d-cnn", "digits-mlp", "rosenbrock", "mnist", "cifar10"} <= set(infos)
    cnn = infos["mnist1d-cnn"]
    assert cnn["sizes"] == {"train": 3600, "val": 400, "test": 1000}
    assert cnn["n_params"] == 5210
    assert cnn["target"]["metric"] == "test_accuracy" and cnn["target"]["mode"] == "max"
    assert cnn["defaults"]["optimizer"] == "adam" and cnn["defaults"]["steps"] > 0
    assert infos["beale"]["target"] == {"metric": "test_distance", "value": 0.05, "mode": "min"}


def test_table_shows_the_named_tasks_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "beale", "digits-mlp"]) == 0
    out = capsys.readouterr().out
    assert "beale" in out and "digits-mlp" in out and "mnist1d-cnn" not in out
    assert "4,810" in out  # parameters of digits-mlp


def test_unknown_task_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "mnist1d-cn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("steplab tasks: error: task: got 'mnist1d-cn'; did you mean")
    assert err.count("\n") == 1


def test_module_entry_point_prints_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "steplab", "tasks", "rosenbrock", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["start"] == [-2.0, 2.0]
