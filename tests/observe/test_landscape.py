"""Loss landscapes: a quadratic surface equals its closed form; PCA of a known path; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from steplab.cli import main
from steplab.observe.landscape import evaluate_points, filter_normalized_direction, pca_directions
from steplab.tasks import get_task
from steplab.train import TrainConfig, fit

GEN = torch.Generator().manual_seed(3)
H_ROOT = torch.randn(6, 6, generator=GEN, dtype=torch.float64)
H = H_ROOT @ H_ROOT.T + torch.eye(6, dtype=torch.float64)  # symmetric positive definite
MINIMUM = torch.randn(6, generator=GEN, dtype=torch.float64)


class Quadratic(nn.Module):
    """A 2x3 weight whose forward returns it flattened, whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.reshape(1, 6).expand(len(x), 6)


def quadratic_loss(out: Tensor, y: Tensor) -> Tensor:
    e = out[0] - MINIMUM
    return 0.5 * e @ H @ e


def test_quadratic_surface_equals_the_closed_form() -> None:
    model = Quadratic()
    center = {"weight": torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]], dtype=torch.float64)}
    gen = torch.Generator().manual_seed(0)
    d1, d2 = (filter_normalized_direction(center, gen) for _ in range(2))
    for d in (d1, d2):  # Li et al.: each filter (row) as long as the weights' row
        assert d["weight"].norm(dim=1) == pytest.approx(center["weight"].norm(dim=1))
    grid = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)
    a, b = (g.reshape(-1) for g in torch.meshgrid(grid, grid, indexing="xy"))
    batches = [(torch.zeros(4, 1), torch.zeros(4)), (torch.zeros(2, 1), torch.zeros(2))]
    got = evaluate_points(model, quadratic_loss, batches, center, [d1, d2],
                          torch.stack([a, b], dim=1), chunk=5)
    # L(c + a d1 + b d2) = 1/2 e'He + a d1'He + b d2'He + 1/2 (a^2 d1'Hd1 + 2ab d1'Hd2 + b^2 d2'Hd2)
    e = center["weight"].reshape(-1) - MINIMUM
    u, v = d1["weight"].reshape(-1), d2["weight"].reshape(-1)
    closed = (0.5 * e @ H @ e + a * (u @ H @ e) + b * (v @ H @ e)
              + 0.5 * (a**2 * (u @ H @ u) + 2 * a * b * (u @ H @ v) + b**2 * (v @ H @ v)))
    assert got.numpy() == pytest.approx(closed.numpy(), rel=1e-10)
    assert model.weight.abs().sum() == 0  # the model's own parameters are untouched


def test_one_dimensional_parameters_get_no_direction_unless_all_are() -> None:
    gen = torch.Generator().manual_seed(1)
    mixed = filter_normalized_direction({"w": torch.ones(3, 2), "b": torch.ones(3)}, gen)
    assert torch.count_nonzero(mixed["b"]) == 0
    alone = filter_normalized_direction({"theta": torch.tensor([3.0, 4.0])}, gen)
    assert float(alone["theta"].norm()) == pytest.approx(5.0)


def test_pca_recovers_the_plane_of_a_planar_path() -> None:
    u = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    v = torch.tensor([0.0, 0.6, 0.8, 0.0], dtype=torch.float64)
    final = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=torch.float64)
    coords = [(4.0, 1.0), (2.5, -0.5), (1.0, 0.3), (0.0, 0.0)]
    path = [{"w": (final + a * u + b * v).reshape(2, 2)} for a, b in coords]
    d1, d2, got, explained = pca_directions(path)
    assert sum(explained) == pytest.approx(1.0)
    basis = torch.stack([d1["w"].reshape(-1), d2["w"].reshape(-1)])
    # the plane is span(u, v): projecting u and v onto it loses nothing
    for w in (u, v):
        assert float((basis @ w).norm()) == pytest.approx(1.0)
    # distances within the plane are kept whatever the signs of the directions
    want = torch.tensor(coords, dtype=torch.float64)
    assert torch.cdist(got, got).numpy() == pytest.approx(torch.cdist(want, want).numpy())


def test_landscape_cli_writes_grids_the_path_and_a_png(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig(task="digits-mlp", steps=30, checkpoint_every=10, keep_checkpoints=None,
                      tensorboard=False)
    result = fit(cfg, run, progress=False)
    assert main(["landscape", str(run), "--resolution", "5", "--batches", "1", "--quiet",
                 "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert Path(paths["png"]).read_bytes()[:4] == b"\x89PNG"
    data = json.loads(Path(paths["json"]).read_text())
    assert np.array(data["random_plane"]["loss"]).shape == (5, 5)
    assert np.array(data["pca_plane"]["loss"]).shape == (5, 5)
    assert data["pca_plane"]["path_steps"] == [0, 10, 20, 30]
    assert data["pca_plane"]["path"][-1] == [0.0, 0.0]
    # alpha = 0 and 1 are the initial and final weights: the loss there is the model's loss
    task = get_task("digits-mlp")
    train = task.load_data()
    idx = torch.randperm(len(train.x_train), generator=torch.Generator().manual_seed(0))
    idx = idx[:task.default_batch_size]
    alphas = data["interpolation"]["alpha"]
    assert alphas[0] == -0.5 and alphas[-1] == 1.5
    grid_alpha = torch.linspace(-0.5, 1.5, 5, dtype=torch.float64).tolist()
    final_model = result.model
    assert final_model is not None
    with torch.no_grad():
        final_loss = float(task.loss(final_model.eval()(train.x_train[idx]), train.y_train[idx]))
    at_one = data["interpolation"]["loss"][grid_alpha.index(1.0)]
    assert at_one == pytest.approx(final_loss, rel=1e-5)
    assert data["random_plane"]["loss"][2][2] == pytest.approx(final_loss, rel=1e-5)


def test_landscape_of_a_run_without_checkpoints_is_one_line_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fit(TrainConfig(task="beale", lr=0.01, steps=3, tensorboard=False), tmp_path / "r",
        progress=False)
    assert main(["landscape", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "which has no checkpoints" in err and err.count("\n") == 1
