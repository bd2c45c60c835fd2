"""Everything a run needs, built and checked before the output directory is touched.

:func:`prepare` resolves the task, loads its data, plans batches and steps,
builds the model (initial weights from a ``torch.Generator`` seeded with the
run's seed), the optimizer, the scheduler and the gradient scaler, and checks
the output directory. Any bad input raises ``SpecError`` here, so a failed
start leaves ``--out`` exactly as it was.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from steplab.errors import SpecError
from steplab.optim import parse_spec
from steplab.state.names import canonical_module
from steplab.state.ranks import barrier
from steplab.tasks import Task, TaskData, get_task
from steplab.train.batches import Plan, plan_run
from steplab.train.config import TrainConfig
from steplab.train.distributed import World, build_optimizer, check_batch, join, wrap_model
from steplab.train.output import RunDir
from steplab.train.schedules import build_scheduler

__all__ = ["Session", "prepare", "seed_everything"]


@dataclass
class Session:
    """The live objects of one run (see :func:`prepare`)."""

    config: TrainConfig
    task: Task
    data: TaskData
    plan: Plan
    model: nn.Module
    names: list[str]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    eval_every: int
    run_dir: RunDir | None
    exists: bool  # the run directory already holds this run (resume)
    world: World | None = None  # None: one process


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (dropout and the like use them).

    Example:
        >>> seed_everything(3); a = torch.rand(1); seed_everything(3)
        >>> bool(torch.equal(a, torch.rand(1)))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_device(name: str) -> torch.device:
    """The device, once this torch build and machine can train on it."""
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise SpecError(f"device: got {name!r}, expected 'cpu' ({why})")
        if device.index is not None and device.index >= count:
            raise SpecError(f"device: got {name!r}, expected cuda:0..cuda:{count - 1}")
    return device


def _to_device(data: TaskData, device: torch.device) -> TaskData:
    if device.type == "cpu":
        return data
    moved = {
        f.name: getattr(data, f.name).to(device)
        for f in dataclasses.fields(data)
        if isinstance(getattr(data, f.name), torch.Tensor)
    }
    return dataclasses.replace(data, **moved)


def _build_optimizer(config: TrainConfig, task: Task, model: nn.Module,
                     world: World | None) -> torch.optim.Optimizer:
    spec = parse_spec(config.optimizer)
    overrides: dict[str, Any] = {}
    if config.lr is not None:
        overrides["lr"] = config.lr
    elif "lr" not in spec.innermost.kwargs and task.default_lr is not None:
        overrides["lr"] = task.default_lr
    return build_optimizer(spec, model, world, overrides)


def _check_metric_names(config: TrainConfig, task: Task, model: nn.Module, data: TaskData) -> None:
    """Check ``early_stop_metric`` is a metric the task reports, on two validation rows."""
    if config.early_stop_metric is None:
        return
    names = {
        f"{split}_{name}"
        for split in config.eval_splits
        for name in task.metrics(model, getattr(data, f"x_{split}")[:2],
                                 getattr(data, f"y_{split}")[:2])
    }
    if config.early_stop_metric not in names:
        raise SpecError(
            f"early_stop_metric: got {config.early_stop_metric!r}, expected one of "
            f"{', '.join(sorted(names))}"
        )


def prepare(config: TrainConfig, out_dir: str | Path | None, resume: bool) -> Session:
    """Build and check everything for ``config``; touches no file.

    Raises:
        SpecError: unknown task, missing data files, a batch larger than the
            data, warmup not shorter than the run, a bad optimizer
            hyperparameter, an unknown early-stop metric, or an ``out_dir``
            holding another run (or this one, without ``resume``).
    """
    task = get_task(config.task, config.data_dir)
    device = _check_device(config.device)
    world = join(config.parallel, device)
    data = _to_device(task.load_data(config.data_dir), device)
    plan = plan_run(len(data.x_train), config.batch_size, config.steps, config.epochs,
                    task.default_batch_size, task.default_steps)
    check_batch(plan.batch_size, world)
    seed_everything(config.seed)
    model = task.build_model(torch.Generator().manual_seed(config.seed)).to(device)
    model = wrap_model(model, world)
    named = list(canonical_module(model).named_parameters())
    optimizer = _build_optimizer(config, task, model, world)
    if world is not None:  # each rank its own dropout stream, all reproducible from the seed
        seed_everything(config.seed + 7919 * world.rank)
    scheduler = build_scheduler(optimizer, config, plan.total_steps)
    scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
    _check_metric_names(config, task, model, data)
    run_dir = RunDir(out_dir, config.run_id) if out_dir is not None else None
    if run_dir is None and resume:
        raise SpecError("resume: got True without an output directory, expected out_dir to be set")
    exists = run_dir.check(resume) if run_dir is not None else False
    barrier()  # every rank has looked at the run directory before rank 0 writes into it
    eval_every = config.eval_every or max(1, plan.total_steps // 10)
    return Session(config, task, data, plan, model, [n for n, _ in named], [p for _, p in named],
                   optimizer, scheduler, scaler, eval_every, run_dir, exists, world)
