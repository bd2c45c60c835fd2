"""Resume after SIGKILL at random points is bit-exact (issue 3, section 5).

Each run is a real process: forked from the test process (so torch is not
imported again for every trial) or, once, a fresh interpreter running the
loop as a script. The process is killed with SIGKILL at a random step and
resumed from ``Checkpointer.latest()`` until it finishes; the final parameters
must hash equal to an uninterrupted run's.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import state_resume_loop as loop
import torch

from steplab.state import capture_rng, restore_rng

STEPS = 40
# fused=False: torch's fused SGD, handed a GradScaler's found_inf on its first step, keeps a
# momentum buffer from torch.empty_like (uninitialised memory), so even uninterrupted runs
# depend on what the allocator hands out (torch 2.13); the foreach path starts it properly.
SPECS = [
    "momentum(lr=0.1, momentum=0.9, fused=False)",
    "adamw(lr=0.01)",
    "lookahead(adamw(lr=0.01), k=3)",
    "adamw(lr=0.01, state=int4)",  # packed 4-bit codes and fp32 scales (the loop widens the model)
]
_FORK = mp.get_context("fork")


def _child(root: str, spec: str, progress: object, out: str) -> None:
    digest = loop.train(root, spec, STEPS, progress=progress)
    Path(out).write_text(digest)


def _run(root: Path, spec: str, kill_at: int | None, out: Path) -> bool:
    """Run the loop in a forked process; SIGKILL it once it passes ``kill_at``. True if finished."""
    progress = _FORK.RawValue("i", 0)
    proc = _FORK.Process(target=_child, args=(str(root), spec, progress, str(out)))
    proc.start()
    deadline = time.monotonic() + 60
    while kill_at is not None and proc.is_alive() and time.monotonic() < deadline:
        if progress.value >= kill_at:
            time.sleep(random.uniform(0, 0.01))  # land anywhere in the step, or in a save
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.join(60)
    return proc.exitcode == 0


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run each loop briefly here first, so forked children do not pay torch's lazy set-up."""
    threads, rng = torch.get_num_threads(), capture_rng()
    for i, spec in enumerate(SPECS):
        loop.train(tmp_path_factory.mktemp(f"warm{i}"), spec, 2)
    torch.set_num_threads(threads)
    restore_rng(rng)


@pytest.mark.parametrize("spec", SPECS)
def test_resume_after_random_sigkills_is_bit_exact(tmp_path: Path, spec: str) -> None:
    rng = random.Random(spec)
    baseline_out = tmp_path / "baseline.txt"
    assert _run(tmp_path / "baseline", spec, None, baseline_out)
    out, kills = tmp_path / "resumed.txt", 0
    for kill_at in [*sorted(rng.sample(range(2, STEPS - 2), 3)), None]:
        if _run(tmp_path / "resumed", spec, kill_at, out):
            break
        kills += 1
    assert kills >= 1, "the process was never killed: the test did not exercise resume"
    assert out.read_text() == baseline_out.read_text()


@pytest.mark.slow
def test_resume_in_fresh_interpreters_is_bit_exact(tmp_path: Path) -> None:
    spec = "lookahead(adamw(lr=0.01), k=3)"
    baseline_out = tmp_path / "baseline.txt"
    assert _run(tmp_path / "baseline", spec, None, baseline_out)
    script = str(Path(loop.__file__))
    root = tmp_path / "fresh"
    killed = subprocess.Popen([sys.executable, script, str(root), spec, str(STEPS)],
                              stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(root.glob("step-*/manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = subprocess.run([sys.executable, script, str(root), spec, str(STEPS)],
                          capture_output=True, text=True, check=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert done.stdout.strip() == baseline_out.read_text()
