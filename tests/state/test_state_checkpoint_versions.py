"""Checkpoints across versions and into production: read, migrate, export (issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_net, trained
from test_state_checkpoint_files import _as_format_1

from steplab import checkpoint
from steplab.errors import CheckpointError, SpecError
from steplab.optim import create_optimizer
from steplab.state import params_sha256, transfer
from steplab.state.migrate import MIGRATIONS, chain, register_migration


def _saved(tmp_path: Path, spec: str = "adamw(lr=0.01)") -> tuple[Path, torch.nn.Module,
                                                                   torch.optim.Optimizer]:
    model, opt = trained(spec)
    path = checkpoint.save(tmp_path / "ckpt", model=model, optimizer=opt, step=3,
                           extra={"epoch": 2})
    return path, model, opt


def test_read_returns_named_model_and_optimizer_state_without_the_model(tmp_path: Path) -> None:
    path, model, opt = _saved(tmp_path)
    contents = checkpoint.read(path)
    assert contents.step == 3 and contents.extra == {"epoch": 2}
    assert contents.format == "steplab.checkpoint/2"
    assert set(contents.model) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(contents.model[name], value)
    assert contents.optimizer is not None
    assert torch.equal(contents.optimizer["state"]["head.weight"]["exp_avg"],
                       opt.state[model.head.weight]["exp_avg"])
    assert contents.rng is not None and contents.scheduler is None


def test_read_optimizer_state_feeds_transfer(tmp_path: Path) -> None:
    """Found broken: ``transfer(manifest["optimizer"], ...)`` raised AttributeError."""
    path, model, opt = _saved(tmp_path)
    new = make_net(seed=7, width=6)
    new_opt = create_optimizer("adamw(lr=0.01)", new)
    report = transfer(checkpoint.read(path).optimizer, new_opt, new)
    assert set(report.carried) == {n for n, _ in new.named_parameters()}
    assert torch.equal(new_opt.state[new.head.weight]["exp_avg_sq"],
                       opt.state[model.head.weight]["exp_avg_sq"])


def test_read_refuses_a_pickle(tmp_path: Path) -> None:
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="never unpickles"):
        checkpoint.read(tmp_path / "x.pt")


def test_migrate_format_1_to_2_rewrites_checksums_and_keeps_every_tensor(tmp_path: Path) -> None:
    path, model, _ = _saved(tmp_path)
    before = checkpoint.read(path)
    _as_format_1(path)
    assert chain("steplab.checkpoint/1") == ["steplab.checkpoint/1 -> steplab.checkpoint/2"]
    report = checkpoint.migrate(path)
    assert report.steps == ("steplab.checkpoint/1 -> steplab.checkpoint/2",)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "steplab.checkpoint/2" and manifest["checksum"] == "crc32"
    assert all("crc32" in info and "sha256" not in info for info in manifest["tensors"].values())
    after = checkpoint.read(path)
    assert after.step == before.step and after.extra == before.extra
    assert all(torch.equal(after.model[k], v) for k, v in before.model.items())
    loaded = make_net(seed=4)
    checkpoint.load(path, model=loaded)
    assert params_sha256(loaded) == params_sha256(model)
    again = checkpoint.migrate(path)
    assert again.steps == ()  # already current: untouched


def test_migrate_into_out_leaves_the_source(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    _as_format_1(path)
    checkpoint.migrate(path, tmp_path / "new")
    assert json.loads((path / "manifest.json").read_text())["format"] == "steplab.checkpoint/1"
    assert checkpoint.read(tmp_path / "new").format == "steplab.checkpoint/2"


def test_chain_follows_registered_migrations_and_refuses_unknown_formats() -> None:
    @register_migration("steplab.checkpoint/0", "steplab.checkpoint/1")
    def _zero_to_one(manifest: dict) -> dict:
        return manifest

    try:
        assert chain("steplab.checkpoint/0") == [
            "steplab.checkpoint/0 -> steplab.checkpoint/1",
            "steplab.checkpoint/1 -> steplab.checkpoint/2"]
        with pytest.raises(ValueError, match="already registered"):
            register_migration("steplab.checkpoint/0", "x")(_zero_to_one)
    finally:
        del MIGRATIONS["steplab.checkpoint/0"]
    with pytest.raises(CheckpointError, match=r"format: got 'steplab.checkpoint/9'"):
        chain("steplab.checkpoint/9")


_LOAD_WITHOUT_STEPLAB = textwrap.dedent("""
    import importlib.util, json, sys
    sys.path[:0] = json.loads(sys.argv[1])
    assert importlib.util.find_spec("steplab") is None, "steplab must not be importable here"
    import torch
    from safetensors.torch import load_file
    out = sys.argv[2]
    model = (load_file(out + "/model.safetensors") if sys.argv[3] == "safetensors"
             else torch.load(out + "/model.pt", weights_only=True))
    opt = torch.load(out + "/optimizer.pt", weights_only=True)
    print(json.dumps({"model": {k: v.sum().item() for k, v in model.items()},
                      "names": opt["param_names"],
                      "lookahead": all("slow_param" in s for s in opt["state"].values())
                      and all("lookahead_step" in g for g in opt["param_groups"]),
                      "exp_avg": {str(i): s["exp_avg"].sum().item()
                                  for i, s in opt["state"].items()},
                      "groups": [g["params"] for g in opt["param_groups"]]}))
""")


def _site_dirs() -> list[str]:
    import numpy
    import safetensors

    dirs = {str(Path(m.__file__).parent.parent) for m in (torch, safetensors, numpy)}
    assert not any((Path(d) / "steplab").exists() for d in dirs)
    return sorted(dirs)


@pytest.mark.parametrize("to", ["safetensors", "torch"])
def test_export_loads_where_steplab_cannot_be_imported(tmp_path: Path, to: str) -> None:
    path, model, opt = _saved(tmp_path, "lookahead(adamw(lr=0.01), k=2)")
    files = checkpoint.export(path, tmp_path / "out", to=to)
    assert [f.name for f in files] == [f"model.{'safetensors' if to == 'safetensors' else 'pt'}",
                                       "optimizer.pt"]
    proc = subprocess.run(  # -I -S: no PYTHONPATH, no site-packages .pth (the editable install)
        [sys.executable, "-I", "-S", "-c", _LOAD_WITHOUT_STEPLAB, json.dumps(_site_dirs()),
         str(tmp_path / "out"), to], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["model"] == pytest.approx({k: v.sum().item() for k, v in model.state_dict().items()})
    assert got["lookahead"] is True
    names = [n for g in got["names"] for n in g]
    params = dict(model.named_parameters())
    inner = opt.optimizer  # type: ignore[attr-defined]
    assert got["exp_avg"] == pytest.approx(
        {str(i): inner.state[params[n]]["exp_avg"].sum().item() for i, n in enumerate(names)})


def test_exported_optimizer_state_loads_into_a_plain_torch_optimizer(tmp_path: Path) -> None:
    path, model, opt = _saved(tmp_path, "adam(lr=0.01)")
    checkpoint.export(path, tmp_path / "out")
    state = torch.load(tmp_path / "out" / "optimizer.pt", weights_only=True)
    fresh = make_net(seed=0)
    params = dict(fresh.named_parameters())
    plain = torch.optim.Adam([{"params": [params[n] for n in names]}
                              for names in state["param_names"]], lr=0.5)
    plain.load_state_dict({"state": state["state"], "param_groups": state["param_groups"]})
    assert torch.equal(plain.state[params["encoder.weight"]]["exp_avg"],
                       opt.state[model.encoder.weight]["exp_avg"])


def test_export_refuses_an_unknown_format(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    with pytest.raises(SpecError, match=r"to: got 'onnx', expected one of safetensors, torch"):
        checkpoint.export(path, tmp_path / "out", to="onnx")
