"""Workloads for training and comparing optimizers.

A :class:`Task` gives a model factory, train/validation/test data
(:class:`TaskData`), the loss, the metrics and a documented :class:`Target`.
Built in, with no download at run time: ``mnist1d-logreg``, ``mnist1d-mlp``,
``mnist1d-cnn`` (MNIST-1D, Greydanus 2020), ``digits-mlp`` (scikit-learn's
8x8 digits), the 2-D functions ``rosenbrock``, ``rastrigin``, ``beale``,
``mnist``/``cifar10``/``cifar10-resnet18`` read from local files, and the
byte-level transformer language models ``byte-lm``/``byte-lm-gpu`` on the
Python standard library's own source (or any text file). See ``docs/tasks.md``.

Example:
    >>> import torch
    >>> from steplab.tasks import get_task
    >>> task = get_task("digits-mlp")
    >>> data = task.load_data()
    >>> model = task.build_model(torch.Generator().manual_seed(0))
    >>> loss = task.loss(model(data.x_train[:8]), data.y_train[:8])
    >>> loss.shape, sorted(task.metrics(model, data.x_val, data.y_val))
    (torch.Size([]), ['accuracy', 'ece', 'loss', 'nll'])
"""

from __future__ import annotations

from steplab.tasks.base import ClassificationTask, Target, Task, TaskData, split_validation
from steplab.tasks.registry import (
    describe_tasks,
    get_task,
    list_tasks,
    register_task,
    registered_tasks,
)

__all__ = [
    "ClassificationTask",
    "Target",
    "Task",
    "TaskData",
    "describe_tasks",
    "get_task",
    "list_tasks",
    "register_task",
    "registered_tasks",
    "split_validation",
]
