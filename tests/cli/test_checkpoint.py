"""``steplab checkpoint migrate`` and ``steplab checkpoint export``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from steplab import checkpoint
from steplab.cli import main
from steplab.optim import create_optimizer


def _checkpoint(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = create_optimizer("adam(lr=0.01)", model)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    return checkpoint.save(tmp_path / "c", model=model, optimizer=opt, step=1), model


def test_export_writes_safetensors_weights_and_prints_the_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, model = _checkpoint(tmp_path)
    assert main(["checkpoint", "export", str(path), "--out", str(tmp_path / "e"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)
    assert [Path(f).name for f in files] == ["model.safetensors", "optimizer.pt"]
    weights = load_file(str(tmp_path / "e" / "model.safetensors"))
    assert torch.equal(weights["1.bias"], model.state_dict()["1.bias"])


def test_migrate_of_a_current_checkpoint_says_so(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _checkpoint(tmp_path)
    assert main(["checkpoint", "migrate", str(path)]) == 0
    assert "already steplab.checkpoint/2" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checkpoint", "migrate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("steplab checkpoint migrate: error: path:") and err.count("\n") == 1
