"""The LR range test: analytic answers, exact restoration, honest 'no answer'."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from steplab.errors import SpecError
from steplab.optim import create_optimizer
from steplab.study import LRRangeResult, lr_range_test
from steplab.study.lr_find import lr_range_test_task


class NoisyQuadratic(nn.Module):
    """f(x) = L/2 · mean_j ||x − ξ_j||², ξ_j ~ N(0, σ²): curvature L, best constant GD rate 1/L."""

    def __init__(self, dim: int, curvature: float, generator: torch.Generator) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.randn(dim, generator=generator))
        self.curvature = curvature

    def forward(self, xi: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.curvature * ((self.x - xi) ** 2).sum(-1).mean()


def _quadratic_run(curvature: float, seed: int) -> LRRangeResult:
    gen = torch.Generator().manual_seed(seed)
    model = NoisyQuadratic(20, curvature, gen)
    batches = [(0.1 * torch.randn(8, 20, generator=gen), torch.zeros(1)) for _ in range(50)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return lr_range_test(
        model, opt, lambda out, _y: out, batches, min_lr=1e-6, max_lr=100.0, num_steps=100
    )


@pytest.mark.parametrize("curvature", [0.5, 5.0, 50.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_suggestion_is_within_3x_of_one_over_curvature(curvature: float, seed: int) -> None:
    result = _quadratic_run(curvature, seed)
    assert result.problem is None
    assert result.suggested_lr is not None
    assert 1 / 3 <= result.suggested_lr * curvature <= 3
    # the steepest-descent rule is reported too, and lies before the minimum
    assert result.steepest_lr is not None and result.min_loss_lr is not None
    assert result.steepest_lr <= result.min_loss_lr


def _mlp_setup(
    seed: int = 0,
) -> tuple[nn.Module, torch.optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # nn.Linear's init reads the global generator
    model = nn.Sequential(
        nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)
    )
    x = torch.randn(64, 8, generator=gen)
    y = torch.randint(0, 3, (64,), generator=gen)
    return (
        model,
        create_optimizer("adamw(lr=0.003, weight_decay=0.01)", model),
        [(x[:32], y[:32]), (x[32:], y[32:])],
    )


def _snapshot(
    model: nn.Module, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], list[float], dict[int, dict[str, torch.Tensor]]]:
    params = {k: v.clone() for k, v in model.state_dict().items()}
    lrs = [float(g["lr"]) for g in opt.param_groups]
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(opt.state.values())}
    return params, lrs, state


def test_model_optimizer_and_rngs_are_restored_bit_identically() -> None:
    model, opt, data = _mlp_setup()
    # give the optimizer some state first, so restoring it is not trivially empty
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    before = _snapshot(model, opt)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    lr_range_test(
        model, opt, nn.functional.cross_entropy, data, min_lr=1e-5, max_lr=10, num_steps=30
    )
    after = _snapshot(model, opt)
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])  # params and BN buffers
    assert before[1] == after[1]
    assert all(
        torch.equal(before[2][i][k], after[2][i][k]) for i in before[2] for k in before[2][i]
    )
    assert not model.training  # eval mode restored
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    # the RNG streams continue exactly where they were before the sweep
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    lr_range_test(
        model, opt, nn.functional.cross_entropy, data, min_lr=1e-5, max_lr=10, num_steps=30
    )
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_lookahead_and_training_continue_identically_after_the_sweep() -> None:
    model, _, data = _mlp_setup()
    opt = create_optimizer("lookahead(sgd(lr=0.05), k=3)", model)
    twin, _, _ = _mlp_setup()
    twin_opt = create_optimizer("lookahead(sgd(lr=0.05), k=3)", twin)
    lr_range_test(
        model, opt, nn.functional.cross_entropy, data, min_lr=1e-4, max_lr=1, num_steps=20
    )
    torch.manual_seed(0)
    for x, y in data * 2:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.manual_seed(0)
    for x, y in data * 2:
        twin_opt.zero_grad()
        nn.functional.cross_entropy(twin(x), y).backward()
        twin_opt.step()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True)
    )


def test_state_is_restored_when_the_loss_function_raises() -> None:
    model, opt, data = _mlp_setup()
    before = _snapshot(model, opt)
    calls = []

    def failing_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("boom")
        return nn.functional.cross_entropy(out, y)

    with pytest.raises(RuntimeError, match="boom"):
        lr_range_test(model, opt, failing_loss, data, num_steps=20)
    after = _snapshot(model, opt)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1] == after[1]


def test_a_flat_curve_gives_no_suggestion_and_says_why() -> None:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 4)
    result = lr_range_test(model, opt, lambda out, y: out.sum() * 0 + 1.0, [(x, x)], num_steps=30)
    assert result.suggested_lr is None and result.problem is not None
    assert "flat" in result.problem
    assert "no clear suggestion" in result.summary_line()


def test_a_curve_that_diverges_at_once_gives_no_suggestion() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(32, 4) * 10
    result = lr_range_test(
        model,
        opt,
        nn.functional.mse_loss,
        [(x, x.sum(1, keepdim=True))],
        min_lr=10.0,
        max_lr=1e4,
        num_steps=50,
    )
    assert result.suggested_lr is None
    assert result.problem is not None and (
        "steps were recorded" in result.problem or "never falls" in result.problem
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_lr": 0.0}, "min_lr"),
        ({"max_lr": 1e-8}, "max_lr"),
        ({"num_steps": 1}, "num_steps"),
        ({"beta": 1.0}, "beta"),
        ({"stop_factor": 1.0}, "stop_factor"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, float], field: str) -> None:
    model, opt, data = _mlp_setup()
    with pytest.raises(SpecError, match=f"^{field}: "):
        lr_range_test(model, opt, nn.functional.cross_entropy, data, **kwargs)  # type: ignore[arg-type]


def test_data_must_be_input_target_pairs() -> None:
    model, opt, _ = _mlp_setup()
    with pytest.raises(SpecError, match=r"^data: "):
        lr_range_test(model, opt, nn.functional.cross_entropy, [torch.randn(4, 8)])
    with pytest.raises(SpecError, match=r"^data: .*no batches"):
        lr_range_test(model, opt, nn.functional.cross_entropy, [])


def test_a_dataloader_works_and_the_json_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True
    )
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_range_test(
        model, opt, nn.functional.cross_entropy, loader, min_lr=1e-4, max_lr=100, num_steps=60
    )
    path = result.save_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["suggested_lr"] == result.suggested_lr and len(data["lrs"]) == len(result.lrs)
    assert result.suggested_lr is not None and 1e-3 < result.suggested_lr < 10


def test_mnist1d_task_sweep_writes_json_and_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = lr_range_test_task(
        "mnist1d-mlp", "adam", min_lr=1e-5, max_lr=10.0, num_steps=80, out_dir=tmp_path
    )
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggested_lr"] == result.suggested_lr
    # Adam on a small MLP: the known-good rates are around 1e-3..1e-2 (task default 1e-2)
    assert result.suggested_lr is not None and 1e-3 <= result.suggested_lr <= 0.1
    assert result.stop_reason.startswith("the smoothed loss exceeded")
