"""TensorBoard event files written by fit, read back with tensorboard's EventAccumulator."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from steplab.train import TrainConfig, fit

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run: Path) -> list[Path]:
    return sorted(run.glob("events.out.tfevents.*"))


def _read(run: Path) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(run), size_guidance={"scalars": 0,
                                                                       "histograms": 0})
    acc.Reload()
    return acc


def test_fit_writes_scalars_equal_to_metrics_rows_and_moment_histograms(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig(task="digits-mlp", optimizer="adam", steps=40, log_every=10,
                      state_every=10, histogram_every=20, eval_every=20)
    fit(cfg, run, progress=False)
    assert len(_events(run)) == 1
    acc = _read(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "lr", "monitor/grad_norm", "loss/val", "metrics/val_accuracy",
            "state/m_norm", "state/step_size_median"} <= tags
    train = {e.step: e.value for e in acc.Scalars("loss/train")}
    assert train == pytest.approx({r["step"]: r["train_loss"] for r in rows if "train_loss" in r})
    val = {e.step: e.value for e in acc.Scalars("metrics/val_accuracy")}
    assert val == pytest.approx({r["step"]: r["val_accuracy"] for r in rows
                                 if "val_accuracy" in r})
    state = {e.step: e.value for e in acc.Scalars("state/0.weight/v_p50")}
    assert state == pytest.approx({r["step"]: r["state"]["layers"]["0.weight"]["v_p50"]
                                   for r in rows if "state" in r}, rel=1e-6)
    histograms = set(acc.Tags()["histograms"])
    assert {"moments/0.weight/exp_avg", "moments/0.weight/exp_avg_sq"} <= histograms
    assert [e.step for e in acc.Histograms("moments/0.weight/exp_avg")] == [20, 40]


def test_no_tensorboard_writes_no_event_file(tmp_path: Path) -> None:
    fit(TrainConfig(task="rosenbrock", lr=0.01, steps=5, tensorboard=False), tmp_path / "r",
        progress=False)
    assert _events(tmp_path / "r") == []


_TWO_RANKS = textwrap.dedent("""
    import os, sys
    import torch.distributed as dist
    from steplab.observe import open_board
    from steplab.train.teardown import exit_process
    rank, logdir, store = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
    board = open_board(logdir)
    print("writer" if board is not None else "none")
    if board is not None:
        board.log_row({"step": 1, "train_loss": 0.5})
        board.close()
    dist.barrier()
    exit_process(0)
""")


def test_only_rank_zero_writes_under_several_processes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", _TWO_RANKS, str(rank), str(tmp_path / "tb"),
                               str(store)], stdout=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["writer", "none"]
    assert len(_events(tmp_path / "tb")) == 1
    assert [e.value for e in _read(tmp_path / "tb").Scalars("loss/train")] == [0.5]
