"""Crash-proof runs: resume from a checkpoint is bit-exact, also after SIGKILL at random steps."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from steplab.errors import SpecError
from steplab.train import TrainConfig, fit

_CLI = [sys.executable, "-m", "steplab", "train", "--quiet", "--json"]


def _rows(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_resume_after_losing_the_end_of_a_run_is_bit_exact(toy: Any, tmp_path: Path) -> None:
    cfg = TrainConfig(task=toy.name, optimizer="lookahead(adamw, k=5)", steps=47,
                      schedule="cosine", warmup_steps=6, checkpoint_every=9, log_every=2,
                      eval_every=10)
    run = tmp_path / "run"
    straight = fit(cfg, run, progress=False).summary
    rows_before = _rows(run)
    # a crash after step 27's checkpoint: later checkpoints and the summary never got written
    (run / "summary.json").unlink()
    for ckpt in (run / "checkpoints").iterdir():
        if int(ckpt.name.split("-")[1]) > 27:
            shutil.rmtree(ckpt)
    resumed = fit(cfg, run, resume=True, progress=False).summary
    assert resumed["final_params_sha256"] == straight["final_params_sha256"]
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["best_metrics"] == straight["best_metrics"]
    rows_after = _rows(run)
    assert [r["step"] for r in rows_after] == [r["step"] for r in rows_before]  # no duplicates
    assert [r.get("val_loss") for r in rows_after] == [r.get("val_loss") for r in rows_before]


def test_resume_of_an_ended_run_returns_its_summary(toy: Any, tmp_path: Path) -> None:
    cfg = TrainConfig(task=toy.name, steps=10)
    first = fit(cfg, tmp_path / "r", progress=False)
    again = fit(cfg, tmp_path / "r", resume=True, progress=False)
    assert again.summary == json.loads(json.dumps(first.summary))
    assert again.model is None


def test_resume_without_checkpoints_starts_over(toy: Any, tmp_path: Path) -> None:
    cfg = TrainConfig(task=toy.name, steps=12, log_every=3, eval_every=6)
    straight = fit(cfg, tmp_path / "a", progress=False).summary
    (tmp_path / "a" / "summary.json").unlink()
    again = fit(cfg, tmp_path / "a", resume=True, progress=False).summary
    assert again["final_params_sha256"] == straight["final_params_sha256"]
    assert [r["step"] for r in _rows(tmp_path / "a")] == [3, 6, 9, 12]


def test_out_dir_holding_another_run_is_refused_and_left_untouched(
    toy: Any, tmp_path: Path
) -> None:
    run = tmp_path / "r"
    fit(TrainConfig(task=toy.name, steps=5), run, progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for resume in (False, True):
        with pytest.raises(SpecError, match=r"out: got .* holds run"):
            fit(TrainConfig(task=toy.name, steps=6), run, resume=resume, progress=False)
    with pytest.raises(SpecError, match=r"already holds run .*--resume"):
        fit(TrainConfig(task=toy.name, steps=5), run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# -- SIGKILL at random steps -----------------------------------------------------------------

_STEPS = 150
_ARGS = ["--task", "digits-mlp", "--steps", str(_STEPS), "--batch-size", "32", "--lr", "0.003",
         "--schedule", "cosine", "--warmup-steps", "30", "--checkpoint-every", "11",
         "--log-every", "1", "--eval-every", "40", "--seed", "3", "--no-monitor"]


def _reference(optimizer: str) -> dict[str, Any]:
    """The same run, uninterrupted, in this process (one thread, like the subprocesses)."""
    cfg = TrainConfig(task="digits-mlp", optimizer=optimizer, steps=_STEPS, batch_size=32,
                      lr=0.003, schedule="cosine", warmup_steps=30, checkpoint_every=11,
                      log_every=1, eval_every=40, seed=3, monitor=False)
    return json.loads(json.dumps(fit(cfg, progress=False).summary))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _last_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except ValueError:
            continue
    return 0


def _kill_at(proc: subprocess.Popen[bytes], run: Path, step: int) -> bool:
    """SIGKILL ``proc`` once the run logged ``step``; False when it ended first."""
    while proc.poll() is None:
        if _last_step(run) >= step:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    return False


@pytest.mark.parametrize(
    ("optimizer", "n_kills"),
    [("adamw", 2), ("lookahead(adamw)", 2),
     ("lookahead(adamw(state=int8), slow=bf16)", 2),  # uint8 codes, fp32 scales, bf16 slow
     pytest.param("lookahead(adamw, k=6)", 5, marks=pytest.mark.slow)],
)
def test_sigkill_at_random_steps_then_resume_is_bit_exact(
    optimizer: str, n_kills: int, tmp_path: Path
) -> None:
    args = [*_CLI, *_ARGS, "--optimizer", optimizer, "--out", str(tmp_path / "run")]
    run, rng, kills, lives = tmp_path / "run", random.Random(optimizer), 0, 0
    while not (run / "summary.json").exists():
        lives += 1
        assert lives <= n_kills + 4, "the run did not finish after resumes"
        proc = subprocess.Popen([*args, *(["--resume"] if lives > 1 else [])], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < n_kills:
            target = min(_last_step(run) + rng.randint(3, 50), _STEPS - 1)
            kills += _kill_at(proc, run, target)
        else:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
    assert kills == n_kills
    expected = _reference(optimizer)
    got = json.loads((run / "summary.json").read_text())
    assert got["status"] == expected["status"] == "completed"
    assert got["final_params_sha256"] == expected["final_params_sha256"]
    assert got["metrics"] == expected["metrics"]
    steps = [r["step"] for r in _rows(run) if "train_loss" in r]
    assert steps == list(range(1, _STEPS + 1))
