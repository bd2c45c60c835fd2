"""Checkpointer: rotation, latest good checkpoint, background saves (issue 3, section 4)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_net, trained

from steplab import checkpoint
from steplab.errors import SpecError
from steplab.state import params_sha256


def test_maybe_save_saves_every_n_steps_and_keeps_the_last_ones(tmp_path: Path) -> None:
    model, opt = trained()
    with checkpoint.Checkpointer(tmp_path, every=3, keep_last=2) as ckpt:
        saved = [ckpt.maybe_save(step, model=model, optimizer=opt) for step in range(1, 11)]
    assert [p.name for p in saved if p is not None] == ["step-00000003", "step-00000006",
                                                         "step-00000009"]
    assert [p.name for p in ckpt.checkpoints()] == ["step-00000006", "step-00000009"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000006", "step-00000009"]


def test_latest_skips_corrupt_and_incomplete_checkpoints_with_a_warning(tmp_path: Path) -> None:
    model = make_net()
    ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep_last=None)
    for step in (1, 2, 3):
        ckpt.save(step, model=model)
    data = tmp_path / "step-00000003" / "tensors.safetensors"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    (tmp_path / "step-00000004").mkdir()  # a directory with no manifest: never completed
    with pytest.warns(UserWarning) as record:
        assert ckpt.latest() == tmp_path / "step-00000002"
    messages = [str(w.message) for w in record]
    assert "skipping checkpoint step-00000004" in messages[0]
    assert "step-00000003: tensors.safetensors: model/" in messages[1]
    assert "content hash mismatch" in messages[1]
    checkpoint.load(tmp_path / "step-00000002", model=make_net())


def test_latest_of_an_empty_root_is_none(tmp_path: Path) -> None:
    assert checkpoint.Checkpointer(tmp_path / "new").latest() is None


def test_background_saves_run_one_at_a_time_and_snapshot_the_state(tmp_path: Path) -> None:
    model, opt = trained()
    ckpt = checkpoint.Checkpointer(tmp_path, every=1, keep_last=None)
    hashes = {}
    for step in (1, 2, 3):
        hashes[step] = params_sha256(model)
        path = ckpt.save(step, model=model, optimizer=opt, blocking=False)
        with torch.no_grad():
            model.head.bias.add_(1.0)  # the training thread goes on at once
        if step > 1:  # the previous save finished before this one started
            assert (tmp_path / f"step-{step - 1:08d}" / "manifest.json").is_file()
    assert ckpt.wait() == path
    for step, digest in hashes.items():
        loaded = make_net(seed=7)
        checkpoint.load(tmp_path / f"step-{step:08d}", model=loaded)
        assert params_sha256(loaded) == digest


def test_a_background_save_error_is_raised_by_the_next_call(tmp_path: Path) -> None:
    model = make_net()
    root = tmp_path / "root"
    ckpt = checkpoint.Checkpointer(root, every=1)
    shutil.rmtree(root)
    root.write_text("a file where the directory was")  # the write will fail
    ckpt.save(1, model=model, blocking=False)
    with pytest.raises(OSError):
        ckpt.wait()
    ckpt.wait()  # the error is raised once


def test_leftovers_of_crashed_saves_are_removed_on_rotation(tmp_path: Path) -> None:
    model = make_net()
    ckpt = checkpoint.Checkpointer(tmp_path, every=1)
    dead_pid = 2**22 + 17
    (tmp_path / f".tmp-step-00000005-{dead_pid}-abcd1234").mkdir()
    ckpt.save(1, model=model)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="every: got 0"):
        checkpoint.Checkpointer(tmp_path, every=0)
    with pytest.raises(SpecError, match="keep_last: got 0"):
        checkpoint.Checkpointer(tmp_path, keep_last=0)
    ckpt = checkpoint.Checkpointer(tmp_path)
    with pytest.raises(SpecError, match="save arguments: got \\['modle'\\]"):
        ckpt.save(1, modle=make_net())
    assert os.listdir(tmp_path) == []
