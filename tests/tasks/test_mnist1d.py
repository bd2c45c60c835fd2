"""MNIST-1D: generated locally with the package defaults, cached atomically, paper models."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from steplab.tasks import get_task
from steplab.tasks import mnist1d as m1d


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bool]]:
    """Generate MNIST-1D once into an empty cache dir; report whether global RNG survived."""
    cache = tmp_path_factory.mktemp("steplab-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("STEPLAB_CACHE", str(cache))
    m1d._MEMO.clear()
    random.seed(7)
    np.random.seed(7)
    before = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    m1d.mnist1d_arrays()
    untouched = (random.random(), np.random.rand()) == before
    yield cache, untouched
    patch.undo()
    m1d._MEMO.clear()


def test_generation_matches_the_package_defaults(fresh_cache: tuple[Path, bool]) -> None:
    arrays = m1d.mnist1d_arrays()
    assert arrays["x"].shape == (4000, 40) and arrays["x_test"].shape == (1000, 40)
    assert arrays["x"].dtype == np.float32 and arrays["y"].dtype == np.int64
    assert sorted(np.unique(arrays["y"]).tolist()) == list(range(10))


def test_generation_leaves_global_rng_alone(fresh_cache: tuple[Path, bool]) -> None:
    assert fresh_cache[1]


def test_cache_is_one_npz_loadable_without_pickle(fresh_cache: tuple[Path, bool]) -> None:
    cache, _ = fresh_cache
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("mnist1d-") and files[0].suffix == ".npz"
    with np.load(files[0], allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["x"], m1d.mnist1d_arrays()["x"])


def test_cache_is_read_back_instead_of_regenerating(fresh_cache: tuple[Path, bool]) -> None:
    cache, _ = fresh_cache
    path = next(cache.iterdir())
    original = dict(m1d.mnist1d_arrays())
    marked = dict(original, x=original["x"] + 1.0)  # same shapes, recognisable values
    np.savez(path, **marked)
    m1d._MEMO.clear()
    try:
        np.testing.assert_array_equal(m1d.mnist1d_arrays()["x"], marked["x"])
    finally:
        np.savez(path, **original)
        m1d._MEMO.clear()


def test_corrupt_cache_is_regenerated(fresh_cache: tuple[Path, bool]) -> None:
    cache, _ = fresh_cache
    path = next(cache.iterdir())
    expected = m1d.mnist1d_arrays()["x"].copy()
    path.write_bytes(b"not an npz file")
    m1d._MEMO.clear()
    np.testing.assert_array_equal(m1d.mnist1d_arrays()["x"], expected)
    with np.load(path, allow_pickle=False) as npz:  # and rewritten whole
        np.testing.assert_array_equal(npz["x"], expected)
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp files left


def test_splits_are_3600_400_1000_and_deterministic(fresh_cache: tuple[Path, bool]) -> None:
    a = get_task("mnist1d-cnn").load_data()
    b = get_task("mnist1d-mlp").load_data()
    assert a.sizes() == {"train": 3600, "val": 400, "test": 1000}
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64


@pytest.mark.parametrize(
    ("name", "n_params"), [("mnist1d-logreg", 410), ("mnist1d-mlp", 78858), ("mnist1d-cnn", 5210)]
)
def test_models_have_the_papers_sizes_and_seeded_init(name: str, n_params: int) -> None:
    task = get_task(name)
    a = task.build_model(torch.Generator().manual_seed(3))
    b = task.build_model(torch.Generator().manual_seed(3))
    assert sum(p.numel() for p in a.parameters()) == n_params
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    x = torch.randn(7, 40)
    assert a(x).shape == (7, 10)


def test_metrics_are_mean_loss_and_accuracy_fraction() -> None:
    task = get_task("mnist1d-logreg")
    model = task.build_model(torch.Generator().manual_seed(0))
    x, y = torch.randn(2500, 40), torch.randint(0, 10, (2500,))  # more than one eval chunk
    metrics = task.metrics(model, x, y)
    out = model(x)
    assert metrics["loss"] == pytest.approx(float(task.loss(out, y).detach()), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(float((out.argmax(1) == y).float().mean()))
    assert model.training  # metrics restore the mode they found


def test_shifted_test_set_is_the_generator_with_stronger_noise_and_new_draws() -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    from steplab.tasks.mnist1d import SHIFT_ARGS, mnist1d_arrays, mnist1d_shift_arrays

    defaults = vars(get_dataset_args())
    # exactly these knobs change: noise x2 (correlated) and x5 (i.i.d.), a new seed, 1000 rows
    assert {k: v for k, v in SHIFT_ARGS.items() if defaults[k] != v} == SHIFT_ARGS
    assert SHIFT_ARGS["corr_noise_scale"] == 2 * defaults["corr_noise_scale"]
    assert SHIFT_ARGS["iid_noise_scale"] == pytest.approx(5 * defaults["iid_noise_scale"])
    shift, clean = mnist1d_shift_arrays(), mnist1d_arrays()
    args = get_dataset_args()
    for key, value in SHIFT_ARGS.items():
        setattr(args, key, value)
    state = np.random.get_state()
    expected = make_dataset(args)
    np.random.set_state(state)
    np.testing.assert_array_equal(shift["x_test"], np.asarray(expected["x_test"], np.float32))
    np.testing.assert_array_equal(shift["y_test"], expected["y_test"])
    assert shift["x_test"].shape == (1000, 40)
    assert np.bincount(shift["y_test"]).tolist() == [100] * 10

    # stronger corruption: rougher signals (larger mean absolute step between neighbours)
    def roughness(x: np.ndarray) -> float:
        return float(np.abs(np.diff(x, axis=1)).mean())

    assert roughness(shift["x_test"]) > 1.3 * roughness(clean["x_test"])


def test_classifier_runs_report_accuracy_under_shift(tmp_path: Path) -> None:
    from steplab.train import TrainConfig, fit

    summary = fit(TrainConfig(task="mnist1d-logreg", steps=50), tmp_path, progress=False).summary
    metrics = summary["metrics"]
    assert {"test_shift_accuracy", "test_shift_nll", "test_shift_ece", "test_nll"} <= set(metrics)
    assert "val_shift_accuracy" not in metrics  # shift is a test-time measure only
    # Adam: exp_avg + exp_avg_sq (410 float32 each) and a float32 step count per tensor
    assert summary["peak_state_bytes"] == 2 * 410 * 4 + 2 * 4
