"""Distributed checkpoints: per-rank safetensors, JSON metadata, a commit marker; 2 -> 1, 1 -> 2.

The 2-rank part is one spawned run (``sharded_checks.worker``): a checkpoint
saved at 2 loads at 1, and one saved at 1 (bit-equal to the world-size-2 state,
as every rank sees the same batch) loads at 2.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import sharded_checks as checks
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steplab.errors import CheckpointError
from steplab.optim import Lookahead
from steplab.state.sharded import MARKER, save_sharded
from steplab.state.sharded_load import load_sharded, read_sharded

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Save at 1 (4 steps of one process); in one 2-rank run save at 2 and load the
    world-size-1 checkpoint; then load the world-size-2 checkpoint here, at 1."""
    out = tmp_path_factory.mktemp("sharded")
    facts: dict[str, Any] = {"out": out, "one": {}}
    for mode in checks.MODES:
        ref_model, ref_opt = checks.build(mode, False)
        checks.train(ref_model, ref_opt, 0, 4)  # one process, never interrupted
        save_sharded(out / f"{mode}-ws1", model=ref_model, optimizer=ref_opt, step=4)
        facts["one"][mode] = (ref_model, ref_opt)
    mp.spawn(checks.worker, args=(str(out),), nprocs=2)
    for mode in checks.MODES:
        model, opt = checks.build(mode, False)
        meta = load_sharded(out / f"{mode}-ws2", model=model, optimizer=opt)
        facts["one"][mode] = (meta, model, opt, *facts["one"][mode])
    facts["uninterrupted"] = json.loads((out / "uninterrupted.json").read_text())
    facts["resumed2"] = json.loads((out / "resumed-ws2.json").read_text())
    return facts


@pytest.mark.parametrize("mode", checks.MODES)
def test_world_size_2_checkpoint_loads_bit_equal_into_one_process(
        roundtrip: dict[str, Any], mode: str) -> None:
    meta, model, opt, ref_model, ref_opt = roundtrip["one"][mode]
    assert meta["world_size"] == 2 and meta["step"] == 4 and meta["extra"] == {"mode": mode}
    assert isinstance(opt, Lookahead) and opt.la_step == ref_opt.la_step == 4
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
        assert set(opt.state[p]) == set(ref_opt.state[q])
        for key, value in ref_opt.state[q].items():
            assert torch.equal(torch.as_tensor(opt.state[p][key]), torch.as_tensor(value)), key


@pytest.mark.parametrize("mode", checks.MODES)
def test_next_steps_after_2_to_1_and_1_to_2_equal_an_uninterrupted_run(
        roundtrip: dict[str, Any], mode: str) -> None:
    _, model, opt, _, _ = roundtrip["one"][mode]
    checks.train(model, opt, 4, 5)
    assert checks.full_params(model) == roundtrip["uninterrupted"][mode]
    assert roundtrip["resumed2"][mode] == roundtrip["uninterrupted"][mode]


def test_rank_files_are_safetensors_and_metadata_is_json(roundtrip: dict[str, Any]) -> None:
    path = roundtrip["out"] / "fsdp-ws2"
    names = sorted(p.name for p in path.iterdir())
    assert names == [MARKER, "metadata.json", "rank-00000.safetensors", "rank-00001.safetensors"]
    meta = json.loads((path / "metadata.json").read_text())
    pieces = meta["tensors"]["model/0.weight"]["pieces"]
    assert [p["rows"] for p in pieces] == [3, 2]  # 5 rows on 2 ranks, in rank order


def _small(tmp_path: Path) -> Path:
    model = checks.net()
    opt = checks.lookahead("fsdp", model.parameters())
    checks.train(model, opt, 0, 2)
    return Path(str(save_sharded(tmp_path / "ck", model=model, optimizer=opt, step=2)))


def test_loading_never_calls_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _small(tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle.load called")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model, opt = checks.build("fsdp", False)
    assert load_sharded(path, model=model, optimizer=opt)["step"] == 2


def test_a_planted_pickle_is_refused(tmp_path: Path) -> None:
    path = _small(tmp_path)
    (path / "rank-00000.safetensors").write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(CheckpointError):
        read_sharded(path)


def test_a_directory_without_commit_marker_is_never_loaded(tmp_path: Path) -> None:
    path = _small(tmp_path)
    (path / MARKER).unlink()
    with pytest.raises(CheckpointError, match="interrupted save"):
        read_sharded(path)


def test_async_save_writes_the_values_of_the_call_not_later_ones(tmp_path: Path) -> None:
    model = checks.net()
    before = [p.detach().clone() for p in model.parameters()]
    pending = save_sharded(tmp_path / "async", model=model, step=1, blocking=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # changed after the call returned
    assert not isinstance(pending, Path)
    path = pending.wait()
    saved = read_sharded(path).model
    for (name, _), value in zip(model.named_parameters(), before, strict=True):
        assert torch.equal(saved[name], value)


def test_convert_to_single_and_back_keeps_everything(roundtrip: dict[str, Any],
                                                     tmp_path: Path) -> None:
    from steplab import checkpoint
    from steplab.state.sharded_convert import convert

    single = convert(roundtrip["out"] / "fsdp-ws2", tmp_path / "single")
    model, opt = checks.build("fsdp", False)
    result = checkpoint.load(single, model=model, optimizer=opt)
    assert result.step == 4 and isinstance(opt, Lookahead) and opt.la_step == 4
    _, _, _, ref_model, ref_opt = roundtrip["one"]["fsdp"]
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["slow_param"], ref_opt.state[q]["slow_param"])
    back = convert(single, tmp_path / "sharded")
    again = read_sharded(back)
    first = read_sharded(roundtrip["out"] / "fsdp-ws2")
    assert again.model.keys() == first.model.keys()
    assert all(torch.equal(again.model[k], first.model[k]) for k in first.model)
    assert again.optimizer is not None and first.optimizer is not None
    for name, buffers in first.optimizer["state"].items():
        for key, value in buffers.items():
            assert torch.equal(torch.as_tensor(again.optimizer["state"][name][key]),
                               torch.as_tensor(value))


def test_cli_convert_and_inspect_read_both_formats(roundtrip: dict[str, Any],
                                                   tmp_path: Path) -> None:
    from steplab.cli import main

    src = roundtrip["out"] / "zero-ws2"
    assert main(["inspect", str(src), "--json"]) == 0
    assert main(["checkpoint", "convert", str(src), str(tmp_path / "one")]) == 0
    assert main(["inspect", str(tmp_path / "one"), "--json"]) == 0
    assert main(["checkpoint", "convert", str(src), str(tmp_path / "one")]) == 2  # exists


def test_latest_skips_what_a_killed_save_leaves(tmp_path: Path) -> None:
    """A save killed before its marker leaves a temporary or unmarked directory: never returned."""
    import shutil

    from steplab.state.sharded_checkpointer import ShardedCheckpointer

    ck = ShardedCheckpointer(tmp_path, every=1, keep_last=None)
    model = checks.net()
    good = ck.save(4, model=model)
    killed = ck.path_for(8)
    shutil.copytree(good, killed)
    (killed / MARKER).unlink()  # files written, marker never reached
    shutil.copytree(good, tmp_path / ".tmp-step-00000012-dead")
    with pytest.warns(UserWarning, match="skipping checkpoint step-00000008: .*interrupted"):
        assert ck.latest() == good
    assert load_sharded(ck.latest() or good, model=checks.net())["step"] == 4
