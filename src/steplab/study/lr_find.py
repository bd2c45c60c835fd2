"""The learning-rate range test (Smith 2015/2017), restored afterwards bit for bit.

The test trains for ``num_steps`` steps while raising the learning rate
exponentially from ``min_lr`` to ``max_lr``,

    lr_i = min_lr · (max_lr / min_lr) ** (i / (num_steps - 1)),

records the training loss of every step, and stops once the smoothed loss
exceeds ``stop_factor`` times the best smoothed loss seen (or turns non-finite).
The curve is then read by the rules in :mod:`steplab.study.lr_find_curve`. The model
(parameters and buffers, train/eval mode), the optimizer (state and every
group's hyperparameters) and the Python, NumPy and torch random generators are
put back exactly as they were, even when the sweep raises.

References:
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks",
    WACV 2017 (arXiv:1506.01186), section 3.3.
    L. N. Smith, "A disciplined approach to neural network hyper-parameters",
    arXiv:1803.09820, 2018.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from steplab.errors import SpecError
from steplab.study.lr_find_curve import LRRangeResult, analyse_curve, plot_curve

__all__ = ["LRRangeResult", "lr_range_test", "lr_range_test_task"]

LossFn = Callable[[Any, Any], Tensor]


@dataclass
class _Snapshot:
    """Everything the sweep changes, copied before it starts."""

    model_state: dict[str, Tensor]
    training: dict[str, bool]
    optimizer_state: dict[str, Any]
    python_rng: Any
    numpy_rng: Any
    torch_rng: Tensor
    cuda_rng: list[Tensor] | None

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer) -> _Snapshot:
        return cls(
            model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
            training={name: m.training for name, m in model.named_modules()},
            optimizer_state=copy.deepcopy(optimizer.state_dict()),
            python_rng=random.getstate(),
            numpy_rng=np.random.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        )

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            model.load_state_dict(self.model_state)
        for name, module in model.named_modules():
            module.training = self.training[name]
        optimizer.load_state_dict(self.optimizer_state)
        random.setstate(self.python_rng)
        np.random.set_state(self.numpy_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _check_args(min_lr: float, max_lr: float, num_steps: int, beta: float, stop: float) -> None:
    if not (math.isfinite(min_lr) and min_lr > 0):
        raise SpecError(f"min_lr: got {min_lr!r}, expected a number > 0")
    if not (math.isfinite(max_lr) and max_lr > min_lr):
        raise SpecError(f"max_lr: got {max_lr!r}, expected a number > min_lr ({min_lr!r})")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise SpecError(f"num_steps: got {num_steps!r}, expected an integer >= 2")
    if not 0.0 <= beta < 1.0:
        raise SpecError(f"beta: got {beta!r}, expected a smoothing factor in [0, 1)")
    if not (math.isfinite(stop) and stop > 1.0):
        raise SpecError(f"stop_factor: got {stop!r}, expected a finite number > 1")


def _batches(data: Iterable[Any]) -> Iterator[Any]:
    """Yield batches forever, starting the iterable again when it runs out."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise SpecError("data: the iterable yielded no batches; expected (input, target) pairs")


def _set_lr(optimizer: torch.optim.Optimizer, lr: float, ratios: list[float]) -> None:
    for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr * ratio)
        else:
            group["lr"] = lr * ratio


def _group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's lr relative to the first group's, so discriminative rates keep their ratio."""
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    if lrs[0] > 0 and all(lr > 0 for lr in lrs):
        return [lr / lrs[0] for lr in lrs]
    return [1.0] * len(lrs)


def _move(value: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return value
    return value.to(device) if isinstance(value, Tensor) else value


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    batch: Any,
    device: torch.device | str | None,
) -> float:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise SpecError(
            f"data: got a batch of type {type(batch).__name__}; expected (input, target) pairs"
        )
    x, y = _move(batch[0], device), _move(batch[1], device)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    value = float(loss.detach())
    if math.isfinite(value):
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return value


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    beta: float = 0.95,
    stop_factor: float = 4.0,
    device: torch.device | str | None = None,
) -> LRRangeResult:
    """Run the LR range test on any model, optimizer, loss and data; restore them after.

    Step ``i`` uses ``lr_i = min_lr · (max_lr/min_lr)^(i/(num_steps-1))`` (other
    parameter groups keep their lr ratio to the first group). The recorded loss
    is smoothed with a bias-corrected exponential moving average,

        a_i = β·a_{i-1} + (1-β)·loss_i,   smoothed_i = a_i / (1 - β^(i+1)),

    and the sweep stops when ``smoothed_i > stop_factor · min_j smoothed_j`` or the
    loss is not finite. Suggestions come from
    :func:`steplab.study.lr_find_curve.analyse_curve` (steepest descent per log-lr and
    the valley rule); ``result.problem`` says when the curve gives no clear answer.

    Args:
        model: the module to train; switched to train mode during the sweep.
        optimizer: an optimizer over ``model``'s parameters (any kind, Lookahead too).
        loss_fn: ``loss_fn(model(x), y) -> scalar tensor``.
        data: an iterable of ``(x, y)`` batches (a ``DataLoader`` or a list);
            started again when it runs out.
        min_lr: first learning rate (> 0).
        max_lr: last learning rate (> min_lr).
        num_steps: number of steps of the full sweep (>= 2).
        beta: EMA coefficient of the smoothed loss, in [0, 1).
        stop_factor: stop once the smoothed loss exceeds this multiple of its best.
        device: move each batch's tensors to this device (None: leave them).

    Returns:
        An :class:`LRRangeResult` with the curve and the suggestions.

    Raises:
        SpecError: a bad bound, step count or factor, or data that is not ``(x, y)`` batches.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x = torch.randn(64, 4); y = x @ torch.ones(4, 1)
        >>> before = [p.clone() for p in model.parameters()]
        >>> res = lr_range_test(model, opt, torch.nn.functional.mse_loss, [(x, y)],
        ...                     min_lr=1e-4, max_lr=10.0, num_steps=60)
        >>> all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        True
        >>> opt.param_groups[0]["lr"], res.suggested_lr is not None
        (0.1, True)
    """
    _check_args(min_lr, max_lr, num_steps, beta, stop_factor)
    snapshot = _Snapshot.take(model, optimizer)
    try:
        lrs, losses, reason = _sweep(
            model, optimizer, loss_fn, data, (min_lr, max_lr, num_steps), beta, stop_factor, device
        )
    finally:
        snapshot.restore(model, optimizer)
    return analyse_curve(lrs, losses, beta=beta, stop_reason=reason, num_steps=num_steps)


def _sweep(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: Iterable[Any],
    grid: tuple[float, float, int],
    beta: float,
    stop_factor: float,
    device: torch.device | str | None,
) -> tuple[list[float], list[float], str]:
    """Train with the growing lr; return the lrs, raw losses and why the sweep ended."""
    min_lr, max_lr, num_steps = grid
    ratios = _group_ratios(optimizer)
    model.train()
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    batches = _batches(data)
    for i in range(num_steps):
        lr = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))
        _set_lr(optimizer, lr, ratios)
        loss = _train_step(model, optimizer, loss_fn, next(batches), device)
        if not math.isfinite(loss):
            return lrs, losses, f"the loss became non-finite at lr={lr:.3g}"
        lrs.append(lr)
        losses.append(loss)
        avg = beta * avg + (1.0 - beta) * loss
        smoothed = avg / (1.0 - beta ** (i + 1))
        best = min(best, smoothed)
        if i > 0 and best > 0 and smoothed > stop_factor * best:
            reason = f"the smoothed loss exceeded {stop_factor:g}x its best at lr={lr:.3g}"
            return lrs, losses, reason
    return lrs, losses, "the sweep reached max_lr"


def _shuffled_batches(
    x: Tensor, y: Tensor, batch_size: int, seed: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Minibatches of a fresh seeded permutation each pass (the last partial batch dropped)."""
    gen = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(x))
    while True:
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - size + 1, size):
            idx = perm[start : start + size]
            yield x[idx], y[idx]


def lr_range_test_task(
    task: str,
    optimizer: str = "adam",
    *,
    batch_size: int | None = None,
    seed: int = 0,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    beta: float = 0.95,
    stop_factor: float = 4.0,
    data_dir: str | None = None,
    out_dir: str | Path | None = None,
) -> LRRangeResult:
    """Run :func:`lr_range_test` on a built-in task's model and training data.

    The model is built from ``seed``, the optimizer from the ``optimizer`` spec
    (its own lr is replaced by the sweep), and batches are drawn from a seeded
    permutation of the training split. With ``out_dir``, writes
    ``lr_find.json`` (the curve and suggestions) and ``lr_find.png`` there.

    Args:
        task: a task name (see ``steplab tasks``).
        optimizer: an optimizer spec string.
        batch_size: examples per step (None: the task's default).
        seed: seeds the model's initialisation and the batch order.
        min_lr: first learning rate.
        max_lr: last learning rate.
        num_steps: steps of the full sweep.
        beta: EMA coefficient of the smoothed loss.
        stop_factor: stop once the smoothed loss exceeds this multiple of its best.
        data_dir: where tasks that read files find them.
        out_dir: where to write the JSON and PNG (None: write nothing).

    Returns:
        The :class:`LRRangeResult`.

    Raises:
        SpecError: an unknown task or a bad optimizer spec or bound.

    Example:
        >>> res = lr_range_test_task("rosenbrock", "sgd", min_lr=1e-6, max_lr=1.0, num_steps=40)
        >>> len(res.lrs) > 10
        True
    """
    from steplab.optim import create_optimizer
    from steplab.tasks import get_task
    from steplab.train.output import check_out_dir, make_out_dir

    if batch_size is not None and batch_size < 1:
        raise SpecError(f"batch_size: got {batch_size!r}, expected an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise SpecError(f"seed: got {seed!r}, expected an integer in [0, 2**63)")
    _check_args(min_lr, max_lr, num_steps, beta, stop_factor)
    if out_dir is not None:
        check_out_dir(out_dir)
    task_obj = get_task(task, data_dir)
    data = task_obj.load_data(data_dir)
    if batch_size is not None and batch_size > len(data.x_train):
        raise SpecError(f"batch_size: got {batch_size}, expected at most the "
                        f"{len(data.x_train)} training examples of {task}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task_obj.build_model(torch.Generator().manual_seed(seed))
        opt = create_optimizer(optimizer, model)
        batches = _shuffled_batches(
            data.x_train, data.y_train, batch_size or task_obj.default_batch_size, seed
        )
        result = lr_range_test(
            model, opt, task_obj.loss, batches, min_lr=min_lr, max_lr=max_lr,
            num_steps=num_steps, beta=beta, stop_factor=stop_factor,
        )
    if out_dir is not None:
        out = make_out_dir(out_dir)
        result.save_json(out / "lr_find.json")
        plot_curve(result, out / "lr_find.png", title=f"LR range test: {task}, {optimizer}")
    return result
