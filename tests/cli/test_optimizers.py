"""``steplab optimizers``: the table for people and the JSON for scripts."""

from __future__ import annotations

import json

import pytest

from steplab.cli import main
from steplab.optim import OPTIMIZERS


def test_json_lists_every_optimizer_with_rule_defaults_buffers_bytes_and_space(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["optimizers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(OPTIMIZERS)
    adam = next(row for row in rows if row["name"] == "adam")
    assert adam["defaults"] == {
        "lr": 0.001,
        "betas": [0.9, 0.999],
        "eps": 1e-08,
        "weight_decay": 0.0,
        "state": "fp32",
        "min_size": 4096,
    }
    assert adam["buffers"] == ["step", "exp_avg", "exp_avg_sq"] and adam["bytes_per_param"] == 8
    assert adam["search_space"]["lr"] == [1e-05, 0.1, "log", 1]
    assert all(row["rule"] and "torch_class" in row for row in rows)
    for name in ("adam", "adamw"):
        row = next(r for r in rows if r["name"] == name)
        assert row["state_bytes"]["fp32"] == 8 and row["state_bytes"]["bf16"] == 4
        assert row["state_bytes"]["int8"] <= 2.05 and row["state_bytes"]["int4"] <= 1.07


def test_table_shows_bytes_per_parameter_for_each_state_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["optimizers", "--width", "200"]) == 0
    out = capsys.readouterr().out
    assert "int8 2.03" in out and "int4 1.06" in out and "bf16 4" in out


def test_table_shows_each_name_rule_and_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimizers", "--width", "200"]) == 0
    out = capsys.readouterr().out
    for name, info in OPTIMIZERS.items():
        assert f"│ {name} " in out
        assert info.rule[:12] in out
    assert "max_exp_avg_sq" in out and "search space" in out


def test_help_states_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["optimizers", "--help"])
    assert info.value.code == 0
    assert "default: table" in capsys.readouterr().out


def test_shows_the_path_each_rule_takes_here_and_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPLAB_COMPILE", "never")
    assert main(["optimizers", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["adamw"]["cpu_path"]["large"] == "fused"
    assert rows["rmsprop"]["cpu_path"] == {
        "small": "for-loop",
        "large": "for-loop",
        "why": "STEPLAB_COMPILE=never",
    }
    assert rows["lookahead"]["cpu_path"]["large"] == "inner, then sync"
    monkeypatch.setenv("STEPLAB_COMPILE", "auto")
    assert main(["optimizers", "--json"]) == 0
    lookahead = {row["name"]: row for row in json.loads(capsys.readouterr().out)}["lookahead"]
    assert lookahead["cpu_path"]["small"] == "inner, then sync"  # under 1M elements
    assert lookahead["cpu_path"]["large"] == "fused k-th step"  # g++ is on every test machine
    assert "average" in lookahead["cpu_path"]["why"]
    monkeypatch.setenv("STEPLAB_COMPILE", "always")
    assert main(["optimizers", "--json"]) == 0
    lookahead = {row["name"]: row for row in json.loads(capsys.readouterr().out)}["lookahead"]
    assert lookahead["cpu_path"]["large"] == "fused k-th step"  # g++ is on every test machine
    assert "adam/adamw/amsgrad" in lookahead["cpu_path"]["why"]
    assert main(["optimizers", "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "implementation on this machine" in out and "│ nadam " in out
    assert "fused k-th step" in out


@pytest.mark.parametrize("mode", ["auto", "never"])
def test_lean_state_paths_are_the_ones_the_optimizer_takes(
    mode: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from steplab.optim import create_optimizer

    monkeypatch.setenv("STEPLAB_COMPILE", mode)
    assert main(["optimizers", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "cpu_path_by_state" not in rows["rmsprop"]  # no state= form
    assert rows["momentum"]["cpu_path_by_state"]["bf16"]["large"] == "chunked"
    assert rows["adamw"]["cpu_path_by_state"]["int4"]["large"] == "chunked"
    for size, key in ((100_000, "small"), (10_000_000, "large")):
        opt = create_optimizer("adamw(state=bf16)", [torch.nn.Parameter(torch.zeros(size))])
        shown = rows["adamw"]["cpu_path_by_state"]["bf16"][key]
        assert shown == ("compiled" if opt._compile else "chunked"), (mode, size)
    assert main(["optimizers", "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "state=bf16" in out and "state=int8/int4" in out
