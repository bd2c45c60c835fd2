"""Fuzzed manifests and safetensors headers: a correct load or a clear error, nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import make_net, trained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steplab import checkpoint
from steplab.errors import CheckpointError, StateMismatchError
from steplab.optim import create_optimizer
from steplab.state import params_sha256

_SETTINGS = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
_EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    model, opt = trained("lookahead(adamw(lr=0.01), k=2)")
    path = checkpoint.save(tmp_path_factory.mktemp("fuzz") / "good", model=model, optimizer=opt,
                           step=5, extra={"epoch": 1})
    return path, params_sha256(model)


def _mutate(good: Path, work: Path, name: str, edits: list[tuple[int, int]],
            region: slice | None) -> Path:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(good, work)
    data = bytearray((work / name).read_bytes())
    start, stop = (0, len(data)) if region is None else (region.start, region.stop)
    for offset, value in edits:
        data[start + offset % (stop - start)] = value
    (work / name).write_bytes(bytes(data))
    return work


def _load_or_clear_error(path: Path, expected_hash: str) -> None:
    model = make_net(seed=6)
    opt = create_optimizer("lookahead(adamw(lr=0.01), k=2)", model)
    try:
        result = checkpoint.load(path, model=model, optimizer=opt, restore_rng=False)
    except (CheckpointError, StateMismatchError) as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert result.step == 5 and params_sha256(model) == expected_hash


@_SETTINGS
@given(edits=_EDITS)
def test_fuzzed_manifest_loads_correctly_or_raises_a_checkpoint_error(
    good: tuple[Path, str], tmp_path: Path, edits: list[tuple[int, int]]
) -> None:
    path = _mutate(good[0], tmp_path / "m", "manifest.json", edits, None)
    _load_or_clear_error(path, good[1])


@_SETTINGS
@given(edits=_EDITS)
def test_fuzzed_safetensors_header_loads_correctly_or_raises_a_checkpoint_error(
    good: tuple[Path, str], tmp_path: Path, edits: list[tuple[int, int]]
) -> None:
    raw = (good[0] / "tensors.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    path = _mutate(good[0], tmp_path / "h", "tensors.safetensors", edits, slice(0, header_end))
    _load_or_clear_error(path, good[1])
