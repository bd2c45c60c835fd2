"""Reference quality: MNIST-1D built-ins at their defaults against the published figures.

The paper reports test accuracy of about 32% (logistic regression), 68% (MLP)
and 94% (CNN). A minimal Adam loop at each task's defaults (batch size, steps,
lr; seeded shuffling; one torch thread) is run for three seeds and the mean
test accuracy must land within 2 points of the paper. The MLP is built at
the width of the repository's trainer arguments (``hidden_size`` 256); at
``MLPBase``'s default width 100 it plateaus near 65% (docs/benchmarks.md).
Run with ``-s`` to print the figures recorded there.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from steplab.tasks import get_task

PAPER = {"mnist1d-logreg": 0.32, "mnist1d-mlp": 0.68, "mnist1d-cnn": 0.94}
SEEDS = (0, 1, 2)


def train_at_defaults(name: str, seed: int) -> tuple[float, float, int | None]:
    """Train ``name`` at its defaults; return (test accuracy, steps/s, first target step)."""
    task = get_task(name)
    data = task.load_data()
    gen = torch.Generator().manual_seed(seed)
    model = task.build_model(gen)
    assert task.default_lr is not None
    opt = torch.optim.Adam(model.parameters(), lr=task.default_lr)
    n, bs = len(data.x_train), task.default_batch_size
    perm, pos, train_time, target_step = torch.randperm(n, generator=gen), 0, 0.0, None
    every = max(task.default_steps // 10, 1)  # the loop's default: 10 evaluations per run
    for step in range(1, task.default_steps + 1):
        start = time.perf_counter()
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        opt.zero_grad()
        task.loss(model(data.x_train[idx]), data.y_train[idx]).backward()  # type: ignore[no-untyped-call]
        opt.step()
        train_time += time.perf_counter() - start
        if target_step is None and step % every == 0:
            acc = task.metrics(model, data.x_test, data.y_test)["accuracy"]
            target_step = step if task.target.met_by(acc) else None
    accuracy = task.metrics(model, data.x_test, data.y_test)["accuracy"]
    return accuracy, task.default_steps / train_time, target_step


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER))
def test_mnist1d_defaults_land_within_two_points_of_the_reference(name: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [train_at_defaults(name, seed) for seed in SEEDS]
    finally:
        torch.set_num_threads(threads)
    accuracies = [r[0] for r in runs]
    mean = statistics.mean(accuracies)
    print(
        f"\n{name}: test_accuracy mean {mean:.3f} over seeds {SEEDS} "
        f"({', '.join(f'{a:.3f}' for a in accuracies)}); paper {PAPER[name]:.2f}; "
        f"steps/s {', '.join(f'{r[1]:.0f}' for r in runs)}; "
        f"target first met at steps {[r[2] for r in runs]}"
    )
    assert abs(mean - PAPER[name]) <= 0.02
    assert all(r[2] is not None for r in runs)  # the documented target is reachable
