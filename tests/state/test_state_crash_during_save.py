"""A SIGKILL in the middle of a save never costs the last good checkpoint (issue 3, section 6).

A forked process saves in a loop (blocking and background saves through a
Checkpointer, and repeated saves over one fixed path); it is killed at a
random moment. Afterwards ``latest()`` must return a checkpoint that loads,
whose tensors agree with its step, and every complete checkpoint must load.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from steplab import checkpoint

_FORK = mp.get_context("fork")
TRIALS = 8


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 256)).sum().backward()
    opt.step()
    return model, opt


def _fill(model: nn.Module, opt: torch.optim.Optimizer, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
            opt.state[p]["exp_avg"].fill_(value)


def _saver(root: str, progress: object) -> None:
    torch.set_num_threads(1)
    model, opt = _model()
    ckpt = checkpoint.Checkpointer(Path(root) / "run", every=1, keep_last=2)
    for i in range(10_000):
        _fill(model, opt, float(i))
        ckpt.save(i, model=model, optimizer=opt, blocking=i % 2 == 0, extra={"i": i})
        checkpoint.save(Path(root) / "fixed", model=model, optimizer=opt, step=i)
        progress.value = i + 1  # type: ignore[attr-defined]


def _assert_consistent(path: Path) -> None:
    model, opt = _model()
    result = checkpoint.load(path, model=model, optimizer=opt)
    for p in model.parameters():
        assert torch.all(p == result.step)
        assert torch.all(opt.state[p]["exp_avg"] == result.step)


def _trial(tmp_path: Path, trial: int) -> bool:
    """Kill a saver at a random moment, check what is left; True if a save was cut short."""
    rng = random.Random(trial)
    progress = _FORK.RawValue("i", 0)
    proc = _FORK.Process(target=_saver, args=(str(tmp_path), progress))
    proc.start()
    target, deadline = rng.randint(1, 3), time.monotonic() + 60
    while progress.value < target and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    ckpt = checkpoint.Checkpointer(tmp_path / "run", every=1)
    latest = ckpt.latest()
    assert latest is not None
    _assert_consistent(latest)
    for path in ckpt.checkpoints():
        _assert_consistent(path)
    # load() of the fixed path itself must succeed, also when the kill landed
    # between moving the old checkpoint aside and renaming the new one in
    if (tmp_path / "fixed").exists() or any(tmp_path.glob(".old-fixed-*")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _assert_consistent(tmp_path / "fixed")
    return any(p.name.startswith(".tmp-") for p in (tmp_path / "run").iterdir())


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_during_saves_leaves_a_loadable_latest(tmp_path: Path, trial: int) -> None:
    _trial(tmp_path, trial)


def test_some_kills_landed_inside_a_save(tmp_path: Path) -> None:
    """The trials are only meaningful if SIGKILLs hit a save half-way: rerun them until one does.

    (Self-contained, so it holds whichever pytest-xdist worker runs it.)
    """
    assert any(_trial(tmp_path / f"t{trial}", trial) for trial in range(TRIALS))
