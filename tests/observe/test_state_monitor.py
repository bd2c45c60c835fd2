"""The optimizer-state monitor's numbers equal hand computations (NumPy, written out here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from steplab.errors import SpecError
from steplab.observe import StateMonitor
from steplab.optim import Lookahead
from steplab.train import TrainConfig, fit

GRADS = [np.array([[0.3, -1.2, 0.5], [2.0, 0.1, -0.4]]), np.array([[-0.6, 0.8, 0.05],
                                                                  [1.5, -0.2, 0.9]])]
BIAS_GRADS = [np.array([0.7, -0.3]), np.array([0.2, 0.4])]


def _model() -> nn.Linear:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -0.25, 1.0], [0.75, 0.1, -2.0]]))
        model.bias.copy_(torch.tensor([0.2, -0.1]))
    return model


def _run(model: nn.Module, opt: torch.optim.Optimizer, monitor: StateMonitor,
         steps: int, clip: float | None = None) -> None:
    for t in range(steps):
        model.weight.grad = torch.tensor(GRADS[t % 2], dtype=torch.float32)
        model.bias.grad = torch.tensor(BIAS_GRADS[t % 2], dtype=torch.float32)
        monitor.observe_gradients()
        if clip is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), clip)
        opt.step()


def _adam_by_hand(lr: float, eps: float, b1: float, b2: float) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for name, w, grads in (("weight", _model().weight, GRADS), ("bias", _model().bias, BIAS_GRADS)):
        theta = w.detach().double().numpy().copy()
        m, v = np.zeros_like(theta), np.zeros_like(theta)
        for t, g in enumerate(grads, start=1):
            before = theta.copy()
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out[name] = {"m": m, "v": v, "size": lr / (np.sqrt(v_hat) + eps),
                     "before": before, "after": theta}
    return out


def test_adam_statistics_equal_hand_computation() -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1, eps=1e-8, betas=(0.9, 0.99), foreach=False)
    rows: list[tuple[int, dict]] = []
    with StateMonitor(opt, model, every=2, on_row=lambda s, r: rows.append((s, r))) as monitor:
        _run(model, opt, monitor, 2)
    hand = _adam_by_hand(0.1, 1e-8, 0.9, 0.99)
    assert [s for s, _ in rows] == [2]
    row = rows[0][1]
    for name, h in hand.items():
        layer = row["layers"][name]
        assert layer["m_norm"] == pytest.approx(np.linalg.norm(h["m"]), rel=1e-6)
        assert [layer["v_p5"], layer["v_p50"], layer["v_p95"]] == pytest.approx(
            np.quantile(h["v"].ravel(), [0.05, 0.5, 0.95]), rel=1e-5)
        assert layer["step_size_min"] == pytest.approx(h["size"].min(), rel=1e-5)
        assert layer["step_size_median"] == pytest.approx(np.median(h["size"]), rel=1e-5)
        assert layer["step_size_max"] == pytest.approx(h["size"].max(), rel=1e-5)
        ratio = np.linalg.norm(h["after"] - h["before"]) / np.linalg.norm(h["before"])
        assert layer["update_ratio"] == pytest.approx(ratio, rel=1e-5)
    all_m = np.concatenate([h["m"].ravel() for h in hand.values()])
    all_v = np.concatenate([h["v"].ravel() for h in hand.values()])
    all_size = np.concatenate([h["size"].ravel() for h in hand.values()])
    assert row["m_norm"] == pytest.approx(np.linalg.norm(all_m), rel=1e-6)
    assert row["v_p50"] == pytest.approx(np.median(all_v), rel=1e-5)
    assert row["step_size_median"] == pytest.approx(np.median(all_size), rel=1e-5)
    assert row["step_size_max"] == pytest.approx(all_size.max(), rel=1e-5)
    delta = np.concatenate([(h["after"] - h["before"]).ravel() for h in hand.values()])
    before = np.concatenate([h["before"].ravel() for h in hand.values()])
    assert row["update_ratio"] == pytest.approx(np.linalg.norm(delta) / np.linalg.norm(before),
                                                rel=1e-5)
    assert "slow_fast_distance" not in row and "clip_fraction" not in row


def test_momentum_sgd_has_first_moment_but_no_step_size() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with StateMonitor(opt, model, every=2) as monitor:
        _run(model, opt, monitor, 2)
    buf = 0.9 * GRADS[0] + GRADS[1]  # torch's buffer: b1 = g1, b2 = 0.9 b1 + g2
    row = monitor.last
    assert row is not None
    assert row["layers"]["weight"]["m_norm"] == pytest.approx(np.linalg.norm(buf), rel=1e-6)
    assert "step_size_median" not in row and "v_p50" not in row["layers"]["weight"]


def test_lookahead_slow_fast_distance_is_the_gap_before_the_step() -> None:
    model = _model()
    la = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=3, alpha=0.5)
    with StateMonitor(la, model, every=3) as monitor:
        model.weight.grad = torch.ones(2, 3)
        model.bias.grad = torch.ones(2)
        for _ in range(3):
            la.step()
    # two inner SGD steps after the last sync: fast = slow - 2 * 0.1 * g
    row = monitor.last
    assert row is not None
    assert row["layers"]["weight"]["slow_fast_distance"] == pytest.approx(0.2 * np.sqrt(6))
    assert row["slow_fast_distance"] == pytest.approx(0.2 * np.sqrt(8))


def test_clip_fraction_counts_elements_the_clip_changed() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with StateMonitor(opt, model, every=1, clip_value=0.5) as monitor:
        _run(model, opt, monitor, 1, clip=0.5)
    over = (np.abs(GRADS[0]) > 0.5).sum() + (np.abs(BIAS_GRADS[0]) > 0.5).sum()
    assert monitor.last is not None and monitor.last["clip_fraction"] == pytest.approx(over / 8)
    norm_clipped = StateMonitor(opt, model, every=1, clip_norm=0.1).attach()
    _run(model, opt, norm_clipped, 1)
    assert norm_clipped.last is not None and norm_clipped.last["clip_fraction"] == 1.0


def test_detached_monitor_measures_nothing() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = StateMonitor(opt, model, every=1).attach()
    monitor.detach()
    _run(model, opt, monitor, 2)
    assert monitor.last is None and monitor.step == 0


def test_every_must_be_a_positive_integer() -> None:
    with pytest.raises(SpecError, match=r"every: got 0, expected an integer >= 1"):
        StateMonitor(torch.optim.SGD(_model().parameters(), lr=0.1), every=0)


def test_fit_writes_state_rows_every_state_every_steps(tmp_path: Path) -> None:
    cfg = TrainConfig(task="rosenbrock", optimizer="lookahead(adam, k=5)", lr=0.01, steps=20,
                      state_every=5, tensorboard=False)
    fit(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    state_rows = [r for r in rows if "state" in r]
    assert [r["step"] for r in state_rows] == [5, 10, 15, 20]
    state = state_rows[-1]["state"]
    assert {"m_norm", "v_p50", "step_size_median", "update_ratio", "slow_fast_distance"} <= set(
        state)
    assert set(state["layers"]) == {"theta"} or len(state["layers"]) == 1
    assert state["slow_fast_distance"] > 0


def test_no_monitor_writes_no_state_rows(tmp_path: Path) -> None:
    cfg = TrainConfig(task="rosenbrock", lr=0.01, steps=10, state_every=5, monitor=False,
                      tensorboard=False)
    fit(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert rows and not any("state" in r for r in rows)


def test_observation_fields_do_not_change_the_run_id() -> None:
    base = TrainConfig(task="rosenbrock")
    assert TrainConfig(task="rosenbrock", state_every=7, tensorboard=False,
                       histogram_every=3).run_id == base.run_id


def test_lean_int8_state_is_decoded_before_it_is_measured() -> None:
    from steplab.optim.lean import LeanAdam
    from steplab.state.inspection import decoded_buffers

    model = _model()
    opt = LeanAdam(model.parameters(), lr=0.1, state="int8")
    with StateMonitor(opt, model, every=2) as monitor:
        _run(model, opt, monitor, 2)
    row = monitor.last
    assert row is not None
    moments = decoded_buffers(opt.state[model.weight], model.weight.numel())
    assert row["layers"]["weight"]["m_norm"] == pytest.approx(
        float(moments["exp_avg"].norm()), rel=1e-5)
    v = moments["exp_avg_sq"].float().numpy().ravel()
    assert row["layers"]["weight"]["v_p50"] == pytest.approx(np.quantile(v, 0.5), rel=1e-5)
    assert "step_size_median" in row
