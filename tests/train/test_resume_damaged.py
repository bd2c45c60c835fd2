"""A damaged checkpoint never blocks a resumed run: it is moved aside, kept, and named once.

Issue 11, item 1: deleting ``step-00001500/manifest.json`` and resuming used to
warn, retrain from step 1000 and then fail at step 1500 with "exists and is not
a steplab checkpoint", on every later ``--resume`` too.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from steplab import checkpoint
from steplab.cli import main
from steplab.train import TrainConfig, fit


def _damaged(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith("damaged-"))


def test_resume_past_a_checkpoint_without_manifest_finishes(
    toy: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's exact scenario, through the CLI: 2000 steps, a checkpoint every 500."""
    run = tmp_path / "run"
    args = ["train", "--task", toy.name, "--steps", "2000", "--checkpoint-every", "500",
            "--log-every", "100", "--eval-every", "500", "--quiet", "--json", "--out", str(run)]
    assert main(args) == 0
    straight = json.loads((run / "summary.json").read_text())
    # the run "crashed" after step 1500's checkpoint was written, and its manifest was lost
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step-00002000")
    (run / "checkpoints" / "step-00001500" / "manifest.json").unlink()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["steps"] == 2000
    assert resumed["final_params_sha256"] == straight["final_params_sha256"]
    moved = _damaged(run / "checkpoints")
    assert [p.name for p in moved] == ["damaged-step-00001500"]
    assert (moved[0] / "tensors.safetensors").is_file()  # kept for the user to recover
    lines = [line for line in err.splitlines() if "step-00001500" in line]
    assert len(lines) == 1, err
    assert "moved it aside to" in lines[0] and "damaged-step-00001500" in lines[0]
    assert "Traceback" not in err and "warnings.warn" not in err
    # and again: the run is finished, so a further --resume just reports it
    assert main([*args, "--resume"]) == 0


def _drop_manifest(p: Path) -> None:
    (p / "manifest.json").unlink()


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(p: Path) -> None:
        data = (p / name).read_bytes()
        (p / name).write_bytes(data[: len(data) // 2])
    return damage


def _flip_last_byte(p: Path) -> None:
    data = bytearray((p / "tensors.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (p / "tensors.safetensors").write_bytes(bytes(data))


def _edit_manifest(p: Path) -> None:
    body = json.loads((p / "manifest.json").read_text())
    body["step"] = 999
    (p / "manifest.json").write_text(json.dumps(body))


def _empty_dir(p: Path) -> None:
    shutil.rmtree(p)
    p.mkdir()


def _plain_file(p: Path) -> None:
    shutil.rmtree(p)
    p.write_text("not a checkpoint")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "manifest missing": _drop_manifest,
    "manifest truncated": _truncate("manifest.json"),
    "manifest edited": _edit_manifest,
    "tensors missing": lambda p: (p / "tensors.safetensors").unlink(),
    "tensors truncated": _truncate("tensors.safetensors"),
    "tensor bytes flipped": _flip_last_byte,
    "empty directory": _empty_dir,
    "a file in its place": _plain_file,
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_kind_of_damaged_latest_checkpoint_is_set_aside_and_the_run_finishes(
    kind: str, toy: Any, tmp_path: Path
) -> None:
    """The guard for the class: whatever is wrong with the newest checkpoint, resume finishes."""
    cfg = TrainConfig(task=toy.name, steps=20, checkpoint_every=5, log_every=5, eval_every=10)
    run = tmp_path / "run"
    straight = fit(cfg, run, progress=False).summary
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoints" / "step-00000020")
    DAMAGE[kind](run / "checkpoints" / "step-00000015")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = fit(cfg, run, resume=True, progress=False).summary
    assert resumed["final_params_sha256"] == straight["final_params_sha256"]
    assert [p.name for p in _damaged(run / "checkpoints")] == ["damaged-step-00000015"]
    messages = [str(w.message) for w in caught if "step-00000015" in str(w.message)]
    assert len(messages) == 1 and "moved it aside" in messages[0], messages
    again = fit(cfg, run, resume=True, progress=False)
    assert again.model is None  # finished: nothing to do


def test_a_second_damage_at_the_same_step_gets_its_own_name(toy: Any, tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    ckpt = checkpoint.Checkpointer(root, every=1)
    model = toy.build_model(__import__("torch").Generator().manual_seed(0))
    for round_ in range(2):
        ckpt.save(3, model=model)
        (root / "step-00000003" / "manifest.json").unlink()
        with pytest.warns(UserWarning, match="moved it aside"):
            assert ckpt.latest(set_aside=True) is None
        assert len(_damaged(root)) == round_ + 1


def test_saving_over_a_damaged_checkpoint_of_its_own_sets_it_aside(
    toy: Any, tmp_path: Path
) -> None:
    """A Checkpointer owns its root: its own damaged step directory never stops a save."""
    import torch

    root = tmp_path / "ckpts"
    model = toy.build_model(torch.Generator().manual_seed(0))
    ckpt = checkpoint.Checkpointer(root, every=1)
    (root / "step-00000004").mkdir()
    (root / "step-00000004" / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="moved it aside"):
        path = ckpt.save(4, model=model)
    assert (path / "manifest.json").is_file()
    assert (root / "damaged-step-00000004" / "notes.txt").read_text() == "mine"


def test_latest_without_set_aside_only_reads(toy: Any, tmp_path: Path) -> None:
    """``steplab inspect`` and other readers never move anything."""
    import torch

    root = tmp_path / "ckpts"
    model = toy.build_model(torch.Generator().manual_seed(0))
    ckpt = checkpoint.Checkpointer(root, every=1)
    ckpt.save(1, model=model)
    ckpt.save(2, model=model)
    (root / "step-00000002" / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="skipping checkpoint step-00000002"):
        assert ckpt.latest() == root / "step-00000001"
    assert (root / "step-00000002").is_dir() and not _damaged(root)


@pytest.mark.parametrize("kind", ["no commit marker", "empty directory", "a file in its place"])
def test_a_damaged_sharded_checkpoint_is_set_aside_too(kind: str, tmp_path: Path) -> None:
    """The same guard for the distributed checkpoints (ShardedCheckpointer)."""
    import torch

    from steplab.state.sharded_checkpointer import ShardedCheckpointer

    model = torch.nn.Linear(3, 2)
    ckpt = ShardedCheckpointer(tmp_path, every=1, keep_last=None)
    ckpt.save(1, model=model)
    ckpt.save(2, model=model)
    damaged = tmp_path / "step-00000002"
    if kind == "no commit marker":
        (damaged / "COMMITTED").unlink()
    else:
        shutil.rmtree(damaged)
        damaged.mkdir() if kind == "empty directory" else damaged.write_text("x")
    with pytest.warns(UserWarning, match="step-00000002 is damaged .* moved it aside"):
        assert ckpt.latest(set_aside=True) == tmp_path / "step-00000001"
    assert [p.name for p in _damaged(tmp_path)] == ["damaged-step-00000002"]
    assert (ckpt.save(2, model=model) / "COMMITTED").is_file()  # the step can be saved again
    (tmp_path / "step-00000002" / "COMMITTED").unlink()
    with pytest.warns(UserWarning, match="moved it aside to .*damaged-step-00000002-2"):
        ckpt.save(2, model=model)  # save itself sets a damaged directory in its way aside
    assert len(_damaged(tmp_path)) == 2
