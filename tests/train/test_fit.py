"""fit(): determinism, the non-finite guard, divergence, early stopping, precision, evaluation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from steplab.optim import Lookahead, inner_optimizer
from steplab.train import TrainConfig, fit
from steplab.train.guards import MAX_CONSECUTIVE_NONFINITE


def _fit(**kw: Any) -> dict[str, Any]:
    out = kw.pop("out", None)
    return fit(TrainConfig(**kw), out, progress=False).summary


def _state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = [t for s in inner_optimizer(opt).state.values() for t in s.values()
               if isinstance(t, torch.Tensor)]
    if isinstance(opt, Lookahead):
        tensors += [t for s in opt.slow_state.values() for t in s.values()]
    return tensors


def test_same_config_twice_gives_the_same_final_params(toy: Any) -> None:
    kw = dict(task=toy.name, optimizer="lookahead(adamw)", steps=30, schedule="cosine",
              warmup_steps=5, clip_norm=1.0)
    first, second = _fit(**kw), _fit(**kw)
    assert first["final_params_sha256"] == second["final_params_sha256"]
    assert first["metrics"] == second["metrics"]


def test_another_seed_gives_other_final_params(toy: Any) -> None:
    a = _fit(task=toy.name, steps=10, seed=0)
    b = _fit(task=toy.name, steps=10, seed=1)
    assert a["final_params_sha256"] != b["final_params_sha256"]


def test_dropout_model_is_deterministic_per_seed(make_toy: Any) -> None:
    task = make_toy(dropout=0.3)
    a = _fit(task=task.name, steps=15, seed=4)
    b = _fit(task=task.name, steps=15, seed=4)
    assert a["final_params_sha256"] == b["final_params_sha256"]


@pytest.mark.parametrize("optimizer", ["adam", "lookahead(adam)"])
def test_nan_loss_is_skipped_counted_and_never_reaches_optimizer_state(
    make_toy: Any, optimizer: str
) -> None:
    task = make_toy(nan_loss_steps=(3, 7), nan_grad_steps=(5,))
    result = fit(TrainConfig(task=task.name, optimizer=optimizer, steps=20), progress=False)
    assert result.summary["status"] == "completed"
    assert result.summary["nonfinite_skipped"] == 3
    assert result.model is not None
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_skipped_steps_leave_adam_state_finite_and_step_count_lower(make_toy: Any) -> None:
    from steplab.train.loop import _Loop
    from steplab.train.session import prepare

    task = make_toy(nan_grad_steps=(2, 4))
    cfg = TrainConfig(task=task.name, optimizer="adam", steps=10)
    session = prepare(cfg, None, resume=False)
    loop = _Loop(session, progress=False, report=None)
    loop.restore()
    from steplab.train.progress import NoProgress

    assert loop.run(NoProgress()) == "completed"
    state = _state_tensors(session.optimizer)
    assert state and all(torch.isfinite(t).all() for t in state)
    steps = {float(s["step"]) for s in session.optimizer.state.values()}
    assert steps == {8.0}  # 10 steps, 2 skipped: Adam saw only the 8 finite ones


def test_on_nonfinite_stop_ends_the_run_as_diverged(make_toy: Any, tmp_path: Path) -> None:
    task = make_toy(nan_loss_steps=(6,))
    summary = _fit(task=task.name, steps=30, on_nonfinite="stop", out=tmp_path / "run")
    assert summary["status"] == "diverged"
    assert summary["steps"] == 7
    assert "not finite" in summary["stop_reason"]
    assert (tmp_path / "run" / "summary.json").exists()


def test_persistent_nan_with_skip_ends_as_diverged(make_toy: Any) -> None:
    task = make_toy(nan_loss_steps=tuple(range(5, 100)))
    summary = _fit(task=task.name, steps=50)
    assert summary["status"] == "diverged"
    assert summary["nonfinite_skipped"] == MAX_CONSECUTIVE_NONFINITE
    assert summary["steps"] == 5 + MAX_CONSECUTIVE_NONFINITE


def test_persistent_nan_gradients_with_finite_loss_end_as_diverged(make_toy: Any) -> None:
    task = make_toy(nan_grad_steps=tuple(range(5, 100)))
    summary = _fit(task=task.name, steps=50)
    assert summary["status"] == "diverged"
    assert summary["nonfinite_skipped"] == MAX_CONSECUTIVE_NONFINITE
    assert "gradient" in summary["stop_reason"]


def test_huge_learning_rate_diverges_without_traceback(tmp_path: Path) -> None:
    summary = _fit(task="rosenbrock", optimizer="sgd", lr=1.0, steps=200, out=tmp_path / "r")
    assert summary["status"] == "diverged"
    assert summary["steps"] < 200
    assert summary["stop_reason"]


def test_early_stopping_stops_after_patience_evaluations(toy: Any) -> None:
    # min_delta of 1.0 means no evaluation can improve on the first one
    summary = _fit(task=toy.name, steps=100, eval_every=5, early_stop_metric="val_loss",
                   patience=3, min_delta=1.0)
    assert summary["status"] == "early_stopped"
    assert summary["steps"] == 20  # first eval at 5 sets the best, 3 more without improvement


def test_early_stop_metric_the_task_lacks_is_refused(toy: Any) -> None:
    from steplab.errors import SpecError

    with pytest.raises(SpecError, match=r"early_stop_metric: got 'val_auc'.*val_accuracy"):
        _fit(task=toy.name, steps=5, early_stop_metric="val_auc")


def test_bf16_autocast_runs_and_learns(toy: Any) -> None:
    fp32 = _fit(task=toy.name, steps=40, precision="fp32")
    bf16 = _fit(task=toy.name, steps=40, precision="bf16")
    assert bf16["status"] == "completed"
    assert math.isfinite(bf16["metrics"]["val_loss"])
    assert bf16["metrics"]["val_loss"] == pytest.approx(fp32["metrics"]["val_loss"], rel=0.1)
    assert bf16["final_params_sha256"] != fp32["final_params_sha256"]


def test_lookahead_is_evaluated_on_slow_weights(toy: Any) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    cfg = TrainConfig(task=toy.name, optimizer="lookahead(sgd, k=5, alpha=0.5)", lr=0.5,
                      steps=12, eval_every=3)
    result = fit(cfg, progress=False, report=lambda step, m: seen.append((step, m)))
    assert [s for s, _ in seen] == [3, 6, 9, 12]
    # at step 3 the slow weights are still the initial weights: evaluation must see them
    task = toy
    model = task.build_model(torch.Generator().manual_seed(0))
    data = task.load_data()
    initial = task.metrics(model, data.x_val, data.y_val)["loss"]
    assert seen[0][1]["val_loss"] == pytest.approx(initial, rel=1e-6)
    assert seen[1][1]["val_loss"] != pytest.approx(initial, rel=1e-6)
    assert result.summary["status"] == "completed"


def test_target_step_is_the_first_evaluation_meeting_the_target(make_toy: Any) -> None:
    task = make_toy(target=0.6)
    rows: list[tuple[int, float]] = []
    summary = fit(TrainConfig(task=task.name, steps=60, eval_every=5), progress=False,
                  report=lambda s, m: rows.append((s, m["val_accuracy"]))).summary
    first = next(s for s, acc in rows if acc >= 0.6)
    assert summary["target_step"] == first
    assert summary["target_time"] is not None and summary["target_time"] > 0
    assert summary["best_metrics"]["val_accuracy"] == max(acc for _, acc in rows)


def test_report_raising_trial_pruned_writes_a_pruned_summary(toy: Any, tmp_path: Path) -> None:
    class TrialPruned(Exception):
        pass

    def report(step: int, metrics: dict[str, float]) -> None:
        if step >= 10:
            raise TrialPruned

    with pytest.raises(TrialPruned):
        fit(TrainConfig(task=toy.name, steps=40, eval_every=5), tmp_path / "r", progress=False,
            report=report)
    import json

    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "pruned"
    assert summary["steps"] == 10


def test_clipping_by_norm_and_value_runs(toy: Any) -> None:
    a = _fit(task=toy.name, steps=20, clip_norm=0.01)
    b = _fit(task=toy.name, steps=20, clip_value=1e-4)
    c = _fit(task=toy.name, steps=20)
    assert len({a["final_params_sha256"], b["final_params_sha256"], c["final_params_sha256"]}) == 3


def test_full_batch_and_epochs(toy: Any) -> None:
    full = _fit(task=toy.name, batch_size="full", epochs=5)
    assert full["steps"] == 5
    mini = _fit(task=toy.name, batch_size=64, epochs=2.5)
    assert mini["steps"] == 10  # 256 examples / 64 per step = 4 steps per epoch


def test_every_close_runs_when_one_raises(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The observer's close raising still closes the run directory and leaves the group (a
    rank now ends with os._exit, so what is not closed there is never flushed)."""
    import steplab.train.loop as loop
    from steplab.observe import RunWatch
    from steplab.train.output import RunDir

    closed: list[str] = []
    run_dir_close = RunDir.close

    def failing(self: Any) -> None:
        closed.append("observer")
        raise OSError("disk full")

    def recording(self: RunDir) -> None:
        closed.append("run_dir")
        run_dir_close(self)

    monkeypatch.setattr(RunWatch, "close", failing)
    monkeypatch.setattr(RunDir, "close", recording)
    monkeypatch.setattr(loop, "leave", lambda world: closed.append("leave"))
    with pytest.raises(OSError, match="disk full"):
        _fit(task="rosenbrock", optimizer="adam", lr=0.05, steps=4, checkpoint_every=2,
             tensorboard=False, out=tmp_path / "run")
    assert closed == ["observer", "run_dir", "leave"]
