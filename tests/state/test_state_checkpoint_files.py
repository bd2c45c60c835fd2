"""Checkpoint files: round trip, matching by name, refusal of bad input (issue 3, sections 4, 6)."""

from __future__ import annotations

import json
import pickle
import zlib
from pathlib import Path

import pytest
import torch
from conftest import Net, make_net, trained
from safetensors import safe_open
from torch import nn

from steplab import checkpoint
from steplab.errors import CheckpointError, StateMismatchError
from steplab.optim import create_optimizer
from steplab.state import params_sha256, tensor_sha256
from steplab.state.hashing import tensor_bytes
from steplab.state.manifest import manifest_digest


def _saved(tmp_path: Path, spec: str = "adamw(lr=0.01)") -> tuple[Path, Net, torch.optim.Optimizer]:
    model, opt = trained(spec)
    path = checkpoint.save(tmp_path / "ckpt", model=model, optimizer=opt, step=3,
                           extra={"epoch": 2, "index": 5})
    return path, model, opt


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_round_trip_restores_model_optimizer_scheduler_scaler_and_extra(tmp_path: Path) -> None:
    model, opt = trained()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    sched.step()
    path = checkpoint.save(tmp_path / "c", model=model, optimizer=opt, scheduler=sched,
                           scaler=scaler, step=11, extra={"best": 0.5})
    model2 = make_net(seed=9)
    opt2 = create_optimizer("adamw(lr=0.01)", model2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    scaler2 = torch.amp.GradScaler("cpu")
    result = checkpoint.load(path, model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2,
                             restore_rng=True)
    assert result.step == 11 and result.extra == {"best": 0.5}
    assert result.restored == ("model", "optimizer", "scheduler", "scaler", "rng")
    assert params_sha256(model2) == params_sha256(model)
    saved_mean, loaded_mean = model.norm.running_mean, model2.norm.running_mean
    assert saved_mean is not None and loaded_mean is not None
    assert torch.equal(loaded_mean, saved_mean)  # buffers too
    assert sched2.state_dict() == sched.state_dict()
    assert scaler2.get_scale() == 256.0
    assert torch.equal(opt2.state[model2.head.weight]["exp_avg"],
                       opt.state[model.head.weight]["exp_avg"])


def test_directory_holds_manifest_and_safetensors_keyed_by_name(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "tensors.safetensors"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "steplab.checkpoint/2" and manifest["step"] == 3
    assert manifest["checksum"] == "crc32"
    with safe_open(str(path / "tensors.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert torch.equal(f.get_tensor("model/head.bias"), _saved_model_bias(path))
    assert {"model/encoder.weight", "optim/encoder.weight/exp_avg",
            "optim/encoder.weight/exp_avg_sq", "model/norm.running_var"} <= keys
    assert set(manifest["tensors"]) == keys
    with safe_open(str(path / "tensors.safetensors"), framework="pt") as f:
        for key, info in manifest["tensors"].items():  # plain zlib CRC-32 of the bytes
            assert info["crc32"] == format(zlib.crc32(tensor_bytes(f.get_tensor(key))), "08x")


def _as_format_1(path: Path) -> None:
    """Rewrite a checkpoint's manifest as format 1 wrote it: SHA-256 per tensor, no checksum."""
    manifest = json.loads((path / "manifest.json").read_text())
    with safe_open(str(path / "tensors.safetensors"), framework="pt") as f:
        for key, info in manifest["tensors"].items():
            del info["crc32"]
            info["sha256"] = tensor_sha256(f.get_tensor(key))
    del manifest["checksum"]
    manifest["format"] = "steplab.checkpoint/1"
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_format_1_checkpoints_with_sha256_still_load_and_are_verified(tmp_path: Path) -> None:
    path, model, _ = _saved(tmp_path)
    _as_format_1(path)
    loaded = make_net(seed=4)
    assert checkpoint.load(path, model=loaded).step == 3
    assert params_sha256(loaded) == params_sha256(model)
    data = bytearray((path / "tensors.safetensors").read_bytes())
    data[-3] ^= 0x01
    (path / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        checkpoint.load(path, model=make_net())


def test_unknown_checksum_algorithm_is_refused(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["checksum"] = "none"
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"checksum: got 'none'"):
        checkpoint.load(path, model=make_net())


def _saved_model_bias(path: Path) -> torch.Tensor:
    model = make_net(seed=5)
    checkpoint.load(path, model=model, restore_rng=False)
    return model.head.bias.detach()


def test_model_built_in_another_parameter_order_loads_by_name(tmp_path: Path) -> None:
    path, model, opt = _saved(tmp_path)
    other = make_net(seed=4, reverse=True)
    other_opt = create_optimizer("adamw(lr=0.01)", other)
    checkpoint.load(path, model=other, optimizer=other_opt)
    for name, param in other.named_parameters():
        assert torch.equal(param, dict(model.named_parameters())[name])
        assert torch.equal(other_opt.state[param]["exp_avg"],
                           opt.state[dict(model.named_parameters())[name]]["exp_avg"])


def test_loads_into_another_dtype_and_map_location(tmp_path: Path) -> None:
    path, model, _ = _saved(tmp_path)
    double = make_net(seed=3).double()
    double_opt = create_optimizer("adamw(lr=0.01)", double)
    checkpoint.load(path, model=double, optimizer=double_opt, map_location="cpu")
    assert double.head.weight.dtype == torch.float64
    assert torch.equal(double.head.weight, model.head.weight.double())
    assert double_opt.state[double.head.weight]["exp_avg"].dtype == torch.float64


def test_checkpoint_of_a_different_model_is_a_state_mismatch(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    with pytest.raises(StateMismatchError, match=r"model: .*missing \['0.weight'"):
        checkpoint.load(path, model=nn.Sequential(nn.Linear(4, 3)))
    wider = make_net(width=8)
    with pytest.raises(StateMismatchError, match="shape-mismatched"):
        checkpoint.load(path, model=wider)


def test_asking_for_state_the_checkpoint_lacks_is_a_mismatch(tmp_path: Path) -> None:
    model = make_net()
    path = checkpoint.save(tmp_path / "c", model=model)
    with pytest.raises(StateMismatchError, match="optimizer: the checkpoint holds no optimizer"):
        checkpoint.load(path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_missing_path_and_directory_without_manifest_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope", model=make_net())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"has no manifest\.json"):
        checkpoint.load(tmp_path / "empty", model=make_net())


class _Payload:
    """Unpickling this would create a file: the proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_pickle_and_torch_save_files_are_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "state.pkl"
    raw.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    zipped = tmp_path / "state.pt"
    torch.save({"model": _Payload(marker)}, zipped)
    with pytest.raises(CheckpointError, match=r"a pickle file"):
        checkpoint.load(raw, model=make_net())
    with pytest.raises(CheckpointError, match=r"torch\.save format"):
        checkpoint.load(zipped, model=make_net())
    path, _, _ = _saved(tmp_path)  # a checkpoint directory with pickles planted inside
    (path / "tensors.safetensors").write_bytes(raw.read_bytes())
    with pytest.raises(CheckpointError):
        checkpoint.load(path, model=make_net())
    (path / "manifest.json").write_bytes(zipped.read_bytes())
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load(path, model=make_net())
    assert not marker.exists()


def test_truncated_tensors_file_is_refused(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = (path / "tensors.safetensors").read_bytes()
    (path / "tensors.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path, model=make_net())


def test_flipped_byte_in_tensor_data_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = bytearray((path / "tensors.safetensors").read_bytes())
    data[-3] ^= 0x10
    (path / "tensors.safetensors").write_bytes(bytes(data))
    model = make_net(seed=8)
    before = params_sha256(model)
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        checkpoint.load(path, model=model)
    assert params_sha256(model) == before


def test_edited_manifest_is_refused(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["step"] = 4
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        checkpoint.load(path, model=make_net())


def test_wrong_format_version_is_refused(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format"] = "steplab.checkpoint/99"
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"format: got 'steplab\.checkpoint/99'"):
        checkpoint.load(path, model=make_net())


def test_saving_over_a_checkpoint_replaces_it_and_other_paths_are_refused(tmp_path: Path) -> None:
    path, model, _ = _saved(tmp_path)
    with torch.no_grad():
        model.head.bias.fill_(7.0)
    checkpoint.save(path, model=model, step=4)
    assert checkpoint.load(path, model=make_net()).step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="is not a steplab checkpoint"):
        checkpoint.save(tmp_path / "notes", model=model)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_bad_step_extra_and_non_data_state_are_refused(tmp_path: Path) -> None:
    model = make_net()
    with pytest.raises(CheckpointError, match="step: got -1"):
        checkpoint.save(tmp_path / "a", model=model, step=-1)
    with pytest.raises(CheckpointError, match="extra: not JSON-serialisable"):
        checkpoint.save(tmp_path / "b", model=model, extra={"gen": torch.Generator()})

    class CodeInState:
        def state_dict(self) -> dict[str, object]:
            return {"fn": print}

    with pytest.raises(CheckpointError, match=r"scheduler\.fn: a builtin_function_or_method"):
        checkpoint.save(tmp_path / "c", model=model, scheduler=CodeInState())
    assert not any(tmp_path.iterdir())


def test_background_save_writes_the_state_of_the_moment_it_was_called(tmp_path: Path) -> None:
    model, opt = trained()
    expected = params_sha256(model)
    pending = checkpoint.save(tmp_path / "c", model=model, optimizer=opt, blocking=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert isinstance(pending, checkpoint.PendingSave)
    path = pending.wait()
    loaded = make_net(seed=3)
    checkpoint.load(path, model=loaded)
    assert params_sha256(loaded) == expected


def test_verify_false_skips_the_content_hashes(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = bytearray((path / "tensors.safetensors").read_bytes())
    data[-3] ^= 0x10
    (path / "tensors.safetensors").write_bytes(bytes(data))
    assert checkpoint.load(path, model=make_net(), verify=False).step == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_moves_between_cuda_and_cpu(tmp_path: Path) -> None:
    model, opt = trained()
    cuda_model = make_net(seed=2).cuda()
    cuda_opt = create_optimizer("adamw(lr=0.01)", cuda_model)
    checkpoint.load(_saved_path(tmp_path, model, opt), model=cuda_model, optimizer=cuda_opt,
                    map_location="cuda")
    assert cuda_opt.state[cuda_model.head.weight]["exp_avg"].is_cuda
    back = checkpoint.save(tmp_path / "from-cuda", model=cuda_model, optimizer=cuda_opt, step=1)
    cpu_model = make_net(seed=5)
    checkpoint.load(back, model=cpu_model)
    assert params_sha256(cpu_model) == params_sha256(model)


def _saved_path(tmp_path: Path, model: Net, opt: torch.optim.Optimizer) -> Path:
    return checkpoint.save(tmp_path / "cpu", model=model, optimizer=opt, step=1)


class _Odd(nn.Module):
    """Tied weights, a bfloat16 layer and a non-contiguous (transposed) parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight
        self.low = nn.Linear(3, 2).bfloat16()
        self.t = nn.Parameter(torch.randn(4, 3).t())


def test_tied_bfloat16_and_non_contiguous_parameters_round_trip(tmp_path: Path) -> None:
    model = _Odd()
    path = checkpoint.save(tmp_path / "odd", model=model)
    other = _Odd()
    checkpoint.load(path, model=other)
    assert params_sha256(other) == params_sha256(model)
    assert other.out.weight is other.emb.weight and other.low.weight.dtype == torch.bfloat16


def test_save_killed_between_its_two_renames_still_loads_the_previous_checkpoint(
    tmp_path: Path,
) -> None:
    """The window where the old checkpoint is aside and the new one not yet in place."""
    model, opt = trained(steps=2)
    target = tmp_path / "ckpt"
    checkpoint.save(target, model=model, optimizer=opt, step=2)
    aside = tmp_path / ".old-ckpt-123-abcd"
    target.rename(aside)  # exactly what a SIGKILL after the first rename leaves
    fresh, fresh_opt = make_net(seed=9), None
    fresh_opt = create_optimizer("adamw(lr=0.01)", fresh)
    with pytest.warns(UserWarning, match="interrupted"):
        result = checkpoint.load(target, model=fresh, optimizer=fresh_opt)
    assert result.step == 2
    assert params_sha256(fresh) == params_sha256(model)
    checkpoint.save(target, model=model, optimizer=opt, step=3)  # the next save tidies up
    assert not aside.exists()
    assert checkpoint.load(target, model=fresh, optimizer=fresh_opt).step == 3
