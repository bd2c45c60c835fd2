"""LR schedules: closed-form values, agreement with torch's own schedulers, exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler as tls

from steplab.errors import SpecError
from steplab.train import SCHEDULES, TrainConfig, build_scheduler

BASE = 0.1


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)


def _lrs(sched: tls.LRScheduler, opt: torch.optim.Optimizer, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _steplab(schedule: str, total: int, warmup: int = 0) -> list[float]:
    opt = _opt()
    cfg = TrainConfig(task="digits-mlp", optimizer="sgd", schedule=schedule, warmup_steps=warmup)
    return _lrs(build_scheduler(opt, cfg, total), opt, total)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", lambda t, n: BASE),
        ("linear", lambda t, n: BASE * (1 - t / n)),
        ("cosine", lambda t, n: BASE * 0.5 * (1 + math.cos(math.pi * t / n))),
        ("step", lambda t, n: BASE * (1.0 if t < n / 2 else 0.1 if t < 3 * n / 4 else 0.01)),
    ],
)
def test_schedule_matches_closed_form(schedule: str, expected: object) -> None:
    n = 40
    got = _steplab(schedule, n)
    want = [expected(t, n) for t in range(n)]  # type: ignore[operator]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_warmup_is_linear_then_cosine_over_the_rest() -> None:
    total, w = 50, 10
    got = _steplab("cosine", total, warmup=w)
    assert got[:w] == pytest.approx([BASE * (t + 1) / w for t in range(w)], rel=1e-12)
    rest = [BASE * 0.5 * (1 + math.cos(math.pi * (t - w) / (total - w))) for t in range(w, total)]
    assert got[w:] == pytest.approx(rest, rel=1e-12, abs=1e-15)


def test_cosine_equals_torch_cosine_annealing() -> None:
    opt = _opt()
    want = _lrs(tls.CosineAnnealingLR(opt, T_max=60), opt, 60)
    assert _steplab("cosine", 60) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_cyclical_equals_torch_cyclic_lr_triangular() -> None:
    total = 80
    opt = _opt()
    torch_sched = tls.CyclicLR(opt, base_lr=BASE / 10, max_lr=BASE, step_size_up=total // 8,
                               mode="triangular", cycle_momentum=False)
    want = _lrs(torch_sched, opt, total)
    assert _steplab("cyclical", total) == pytest.approx(want, rel=1e-9)


def test_one_cycle_equals_torch_one_cycle_lr() -> None:
    total = 100
    opt = _opt()
    want = _lrs(tls.OneCycleLR(opt, max_lr=BASE, total_steps=total, cycle_momentum=False),
                opt, total)
    assert _steplab("one-cycle", total) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_resume_from_state_dict_gives_identical_lrs(schedule: str) -> None:
    total, cut, w = 64, 23, 5
    cfg = TrainConfig(task="digits-mlp", optimizer="sgd", schedule=schedule, warmup_steps=w)
    straight = _steplab(schedule, total, warmup=w)
    opt = _opt()
    first = build_scheduler(opt, cfg, total)
    head = _lrs(first, opt, cut)
    opt_state, sched_state = opt.state_dict(), first.state_dict()
    opt2 = _opt()
    second = build_scheduler(opt2, cfg, total)
    opt2.load_state_dict(opt_state)
    second.load_state_dict(sched_state)
    assert head + _lrs(second, opt2, total - cut) == straight  # bit-exact, not approx


def test_warmup_as_long_as_the_run_is_refused() -> None:
    cfg = TrainConfig(task="digits-mlp", warmup_steps=10)
    with pytest.raises(SpecError, match="warmup_steps: got 10"):
        build_scheduler(_opt(), cfg, total_steps=10)


def test_unknown_schedule_is_refused_by_the_config() -> None:
    with pytest.raises(SpecError, match=r"schedule: got 'cosin'.*cosine"):
        TrainConfig(task="digits-mlp", schedule="cosin")
