"""digits-mlp: bundled data, seeded split, scaling fitted on train only, reachable target."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from steplab.tasks import TaskData, get_task


@pytest.fixture(scope="module")
def data() -> TaskData:
    return get_task("digits-mlp").load_data()


def test_split_is_seeded_disjoint_and_covers_all_digits(data: TaskData) -> None:
    a, b = data, get_task("digits-mlp").load_data()
    assert a.sizes() == {"train": 1294, "val": 144, "test": 359}
    assert sum(a.sizes().values()) == 1797
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_val, b.y_val)
    rows = torch.cat([a.x_train, a.x_val, a.x_test])
    assert len(torch.unique(rows, dim=0)) >= 1790  # the digits set has few exact duplicates
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64


def test_features_are_standardised_with_training_statistics(data: TaskData) -> None:
    mean, std = data.x_train.mean(0), data.x_train.std(0)
    varying = std > 0
    torch.testing.assert_close(mean, torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(std[varying], torch.ones(int(varying.sum())), atol=1e-4, rtol=0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_adam_at_the_defaults_reaches_the_target(data: TaskData) -> None:
    task = get_task("digits-mlp")
    gen = torch.Generator().manual_seed(0)
    model = task.build_model(gen)
    assert task.default_lr is not None
    opt = torch.optim.Adam(model.parameters(), lr=task.default_lr)
    n, bs = len(data.x_train), task.default_batch_size
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(task.default_steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        opt.zero_grad()
        task.loss(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    accuracy = task.metrics(model, data.x_test, data.y_test)["accuracy"]
    assert task.target.met_by(accuracy), accuracy
