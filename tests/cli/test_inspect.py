"""``steplab inspect PATH [--json]``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from steplab import checkpoint
from steplab.cli import main
from steplab.optim import create_optimizer


def _checkpoint_root(tmp_path: Path) -> Path:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = create_optimizer("adamw(lr=0.01)", model)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    with checkpoint.Checkpointer(tmp_path / "run", every=1) as ckpt:
        ckpt.save(1, model=model, optimizer=opt)
        ckpt.save(2, model=model, optimizer=opt)
    return tmp_path / "run"


def test_inspect_json_reports_the_state_of_a_checkpoint(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = _checkpoint_root(tmp_path)
    assert main(["inspect", str(root / "step-00000001"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "step-00000001, step 1"
    assert data["ratio"] == pytest.approx(2.0, abs=0.2)  # tiny model: step counters count
    assert {p["name"] for p in data["params"]} == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_inspect_of_a_root_prints_tables_for_the_latest(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = _checkpoint_root(tmp_path)
    assert main(["inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert "step-00000002, step 2" in out and "exp_avg_sq" in out


def test_inspect_of_a_pickle_exits_2_with_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("steplab inspect: error: path:") and "pickle" in err
    assert len(err.splitlines()) == 1
