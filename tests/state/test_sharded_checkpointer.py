"""ShardedCheckpointer.latest() checks the files, not only the marker; data position and GradScaler.

One process (a sharded checkpoint of world size 1 is the same format); the
2-rank kill -9 mid-save is in ``tests/train/test_train_crash.py``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from steplab.cli import main
from steplab.errors import CheckpointError
from steplab.state.sharded import save_sharded
from steplab.state.sharded_checkpointer import ShardedCheckpointer
from steplab.state.sharded_load import check_sharded, load_sharded
from steplab.train.batches import BatchStream, plan_run


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))


def _root(tmp_path: Path) -> ShardedCheckpointer:
    ck = ShardedCheckpointer(tmp_path / "checkpoints", every=4, keep_last=None)
    model = _net()
    opt = torch.optim.Adam(model.parameters())
    for step in (4, 8):
        model(torch.ones(2, 3)).sum().backward()
        opt.step()
        ck.save(step, model=model, optimizer=opt)
    return ck


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_last_byte, Path.unlink])
def test_latest_falls_back_past_a_committed_checkpoint_whose_rank_file_is_damaged(
        tmp_path: Path, damage: object) -> None:
    ck = _root(tmp_path)
    damage(ck.path_for(8) / "rank-00000.safetensors")  # type: ignore[operator]
    with pytest.raises(CheckpointError):
        load_sharded(ck.path_for(8), model=_net())  # the marker alone would have let it through
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ck.latest() == ck.path_for(4)
        assert ck.latest() == ck.path_for(4)
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and lines[0].startswith("skipping checkpoint step-00000008:"), lines
    assert load_sharded(ck.path_for(4), model=_net())["step"] == 4


def test_latest_set_aside_renames_the_damaged_one_and_saving_that_step_again_works(
        tmp_path: Path) -> None:
    ck = _root(tmp_path)
    _flip_last_byte(ck.path_for(8) / "rank-00000.safetensors")
    with pytest.warns(UserWarning, match="damaged .*moved it aside"):
        assert ck.latest(set_aside=True) == ck.path_for(4)
    assert (ck.root / "damaged-step-00000008").is_dir()
    ck.save(8, model=_net())
    assert ck.latest() == ck.path_for(8)
    assert check_sharded(ck.path_for(8))["step"] == 8


def test_data_position_and_grad_scaler_are_fields_of_the_sharded_checkpoint(
        tmp_path: Path) -> None:
    plan = plan_run(40, 4, 30, None, 4, 30)
    sampler = BatchStream(40, plan, seed=3)
    for _ in range(13):
        sampler.next()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=7)
    scaler.scale(torch.ones(1))  # its scale and growth tracker come to life
    scaler.update(new_scale=96.0)
    path = save_sharded(tmp_path / "ck", model=_net(), step=13, sampler=sampler, scaler=scaler,
                        extra={"note": 1})
    meta = json.loads((Path(str(path)) / "metadata.json").read_text())
    assert meta["data"] == {"seed": 3, "epoch": 1, "position": 3} and meta["extra"] == {"note": 1}
    fresh = BatchStream(40, plan, seed=3)
    fresh_scaler = torch.amp.GradScaler("cpu")
    result = load_sharded(path, model=_net(), sampler=fresh, scaler=fresh_scaler)
    assert {"sampler", "scaler"} <= set(result["restored"])
    assert fresh_scaler.state_dict() == scaler.state_dict()
    assert torch.equal(fresh.next(), sampler.next())  # the order goes on where it was


def test_inspect_of_a_sharded_root_reads_the_latest_complete_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = _root(tmp_path)
    _truncate(ck.path_for(8) / "rank-00000.safetensors")
    assert main(["inspect", str(ck.root), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "warning: skipping checkpoint step-00000008:" in err
    report = json.loads(out)
    assert report["source"] == "step-00000004, step 4, 1 ranks"
    assert "exp_avg_sq" in {b["name"] for p in report["params"] for b in p["buffers"]}


def test_convert_carries_the_data_position_and_grad_scaler_both_ways(tmp_path: Path) -> None:
    from steplab import checkpoint
    from steplab.state.sharded_convert import convert

    plan = plan_run(40, 4, 30, None, 4, 30)
    sampler = BatchStream(40, plan, seed=3)
    sampler.next()
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    scaler.scale(torch.ones(1))
    sharded = save_sharded(tmp_path / "ck", model=_net(), step=1, sampler=sampler, scaler=scaler)
    single = convert(Path(str(sharded)), tmp_path / "single")
    fresh = torch.amp.GradScaler("cpu")
    result = checkpoint.load(single, model=_net(), scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict()
    assert result.extra["data"] == sampler.state_dict()  # where fit looks for it on one process
    back = check_sharded(convert(single, tmp_path / "back"))
    assert back["data"] == sampler.state_dict() and "data" not in back["extra"]
    assert back["scaler"] == json.loads((Path(str(sharded)) / "metadata.json").read_text())[
        "scaler"]
