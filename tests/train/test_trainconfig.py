"""TrainConfig validation and JSON round trip; batch order; guards."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from steplab.errors import SpecError
from steplab.train import TrainConfig
from steplab.train.batches import BatchStream, plan_run
from steplab.train.config import OBSERVATION_FIELDS
from steplab.train.guards import DivergenceWatch, EarlyStopper


def test_config_round_trips_through_json_and_keeps_its_run_id() -> None:
    cfg = TrainConfig(task="mnist1d-cnn", optimizer="lookahead(adamw, k=5)", lr=3e-4,
                      batch_size="full", epochs=2.5, schedule="one-cycle", warmup_steps=3,
                      clip_norm=1.0, eval_splits=("val",), early_stop_metric="val_loss")
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.run_id == cfg.run_id
    # observation-only fields (monitor rate, TensorBoard) are not part of the identity
    identity = {k: v for k, v in cfg.to_dict().items() if k not in OBSERVATION_FIELDS}
    assert json.loads(cfg.to_json()) == identity


def test_run_id_changes_with_any_field() -> None:
    base = TrainConfig(task="digits-mlp")
    assert base.run_id != TrainConfig(task="digits-mlp", seed=1).run_id
    assert base.run_id == TrainConfig(task="digits-mlp").run_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr: got 0.0, expected a finite number > 0"),
        ({"lr": float("nan")}, "lr: got nan"),
        ({"steps": 0}, "steps: got 0, expected an integer >= 1"),
        ({"steps": 10, "epochs": 1.0}, "epochs: got 1.0, expected either steps or epochs"),
        ({"clip_norm": 0.0}, "clip_norm: got 0.0"),
        ({"clip_value": -1.0}, "clip_value: got -1.0"),
        ({"batch_size": 0}, "batch_size: got 0"),
        ({"batch_size": "fulll"}, "batch_size: got 'fulll'.*'full'"),
        ({"schedule": "cosinus"}, "schedule: got 'cosinus'.*one-cycle"),
        ({"optimizer": "adamz"}, "adamz.*did you mean"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite: got 'ignore'.*'skip' or 'stop'"),
        ({"precision": "fp16"}, "precision: got 'fp16'.*CUDA"),
        ({"precision": "fp8"}, "precision: got 'fp8'"),
        ({"warmup_steps": -1}, "warmup_steps: got -1"),
        ({"patience": 0}, "patience: got 0"),
        ({"eval_splits": ("train",)}, "eval_splits: got"),
        ({"early_stop_metric": "train_loss"}, "early_stop_metric: got 'train_loss'"),
        ({"divergence_factor": 1.0}, "divergence_factor: got 1.0"),
        ({"seed": -3}, "seed: got -3"),
    ],
)
def test_bad_config_value_names_option_value_and_allowed(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        TrainConfig(task="digits-mlp", **kwargs)


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(SpecError, match="config: got 'learning_rate'"):
        TrainConfig.from_dict({"task": "digits-mlp", "learning_rate": 0.1})


def test_batch_larger_than_the_data_is_refused_unless_full() -> None:
    with pytest.raises(SpecError, match="batch_size: got 500, expected at most the 400"):
        plan_run(400, 500, 10, None, 32, 100)
    assert plan_run(400, "full", None, 3, 32, 100).total_steps == 3


def test_each_epoch_is_a_seeded_permutation_and_resumes_mid_epoch() -> None:
    plan = plan_run(50, 10, 100, None, 10, 100)
    a = BatchStream(50, plan, seed=7)
    order = [a.next() for _ in range(12)]
    epoch0 = torch.cat(order[:5])
    assert sorted(epoch0.tolist()) == list(range(50))
    assert not torch.equal(torch.cat(order[5:10]), epoch0)  # a new order each epoch
    b = BatchStream(50, plan, seed=7)
    for _ in range(7):
        b.next()
    c = BatchStream(50, plan, seed=7)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert all(torch.equal(c.next(), order[i]) for i in range(7, 12))
    other = BatchStream(50, plan, seed=8)
    assert not torch.equal(other.next(), order[0])


def test_divergence_watch_counts_and_diverges_on_a_loss_blowup() -> None:
    w = DivergenceWatch("skip", factor=100.0)
    assert [w.check_loss(v) for v in (2.0, 3.0, float("inf"), 150.0, 201.0)] == [
        "ok", "ok", "skip", "ok", "diverged"]
    assert w.skipped == 1


def test_early_stopper_on_accuracy_maximises() -> None:
    es = EarlyStopper("val_accuracy", patience=2, min_delta=0.01)
    assert [es.update({"val_accuracy": v}) for v in (0.5, 0.6, 0.605, 0.7, 0.69, 0.7)] == [
        False, False, False, False, False, True]
    assert es.best == 0.7
