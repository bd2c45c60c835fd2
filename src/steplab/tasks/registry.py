"""The task registry: built-in tasks by name, user tasks added at run time.

Built-ins are created on demand (their data loads only in ``load_data``).
``get_task`` also accepts ``"package.module:attribute"``: the attribute is a
task object, or a callable returning one, so user tasks work from the command
line and in worker processes that never called :func:`register_task`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from steplab.errors import SpecError
from steplab.tasks.base import Target, Task, task_info
from steplab.tasks.digits import DigitsTask
from steplab.tasks.functions import FUNCTION_TASKS, FunctionTask
from steplab.tasks.images import Cifar10Task, MnistTask
from steplab.tasks.lm import LM_SIZES, ByteLMTask
from steplab.tasks.mnist1d import MNIST1D_TASKS, Mnist1dTask
from steplab.tasks.resnet import Cifar10ResNet18Task

__all__ = ["describe_tasks", "get_task", "list_tasks", "register_task"]

_Factory = Callable[[str | None], Task]
_REQUIRED = (
    "name",
    "description",
    "target",
    "default_batch_size",
    "default_steps",
    "default_lr",
    "trajectory",
    "load_data",
    "build_model",
    "loss",
    "metrics",
    "info",
)


def _mnist1d(kind: str) -> _Factory:
    defaults, target = MNIST1D_TASKS[kind]
    return lambda data_dir: Mnist1dTask(kind, defaults, target)


def _function(name: str) -> _Factory:
    fn, start, minimum, distance, lr, steps = FUNCTION_TASKS[name]
    target = Target("test_distance", distance, "min")
    return lambda data_dir: FunctionTask(name, fn, start, minimum, target, lr, steps)


_REGISTRY: dict[str, _Factory] = {
    "mnist1d-logreg": _mnist1d("logreg"),
    "mnist1d-mlp": _mnist1d("mlp"),
    "mnist1d-cnn": _mnist1d("cnn"),
    "digits-mlp": lambda data_dir: DigitsTask(),
    "rosenbrock": _function("rosenbrock"),
    "rastrigin": _function("rastrigin"),
    "beale": _function("beale"),
    "mnist": lambda data_dir: MnistTask(data_dir),
    "cifar10": lambda data_dir: Cifar10Task(data_dir),
    "cifar10-resnet18": lambda data_dir: Cifar10ResNet18Task(data_dir),
    "byte-lm": lambda data_dir: ByteLMTask("byte-lm", LM_SIZES["byte-lm"], data_dir),
    "byte-lm-gpu": lambda data_dir: ByteLMTask("byte-lm-gpu", LM_SIZES["byte-lm-gpu"], data_dir),
}


#: tasks added by register_task in this process (workers need them shipped: see steplab.study)
_USER: dict[str, Task] = {}


def registered_tasks() -> dict[str, Task]:
    """The tasks :func:`register_task` added in this process, by name.

    Example:
        >>> isinstance(registered_tasks(), dict)
        True
    """
    return dict(_USER)


def _check_task(task: object, where: str) -> Task:
    missing = [attr for attr in _REQUIRED if not hasattr(task, attr)]
    if missing:
        raise SpecError(
            f"{where}: got {type(task).__name__} without {', '.join(missing)}; "
            "expected an object implementing steplab.tasks.Task"
        )
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise SpecError(f"{where}: task name {name!r}, expected a non-empty string")
    if not isinstance(task.target, Target):  # type: ignore[attr-defined]
        raise SpecError(f"{where}: task {name!r} target must be a steplab.tasks.Target")
    return task  # type: ignore[return-value]


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a user task to the registry under ``task.name``.

    Args:
        task: any object implementing the :class:`~steplab.tasks.Task` protocol.
        replace: allow replacing a task already registered under that name.

    Returns:
        ``task``, so the call can wrap a definition.

    Raises:
        SpecError: a member of the protocol is missing, the name is empty, or
            the name is taken and ``replace`` is false.

    Example:
        >>> from steplab.tasks import get_task
        >>> task = get_task("rosenbrock")
        >>> task.name = "my-rosenbrock"
        >>> register_task(task) is task and get_task("my-rosenbrock") is task
        True
    """
    _check_task(task, "register_task")
    if task.name in _REGISTRY and not replace:
        raise SpecError(
            f"task name: got {task.name!r}, which is already registered; "
            "expected a new name or replace=True"
        )
    _REGISTRY[task.name] = lambda data_dir: task
    _USER[task.name] = task
    return task


def list_tasks() -> list[str]:
    """Names of every registered task, built-ins first, in registration order.

    Example:
        >>> list_tasks()[:3]
        ['mnist1d-logreg', 'mnist1d-mlp', 'mnist1d-cnn']
    """
    return list(_REGISTRY)


def _import_from_cwd_too(module_name: str) -> Any:
    """Import ``module_name``, also from the working directory, as ``python -m`` would.

    The ``steplab`` script's ``sys.path`` starts with its own directory, not the
    working directory; a module not found elsewhere is looked for there (the
    directory is added to the end of ``sys.path``, so it shadows nothing, and
    worker processes inherit it).
    """
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = module_name.split(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def _import_task(name: str) -> Task:
    module_name, _, attr = name.partition(":")
    try:
        obj = getattr(_import_from_cwd_too(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(
            f"task: got {name!r}, which could not be imported ({exc}); "
            "expected 'package.module:attribute'"
        ) from None
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "load_data")):
        obj = obj()  # a task class or a factory
    return _check_task(obj, f"task {name!r}")


def get_task(name: str, data_dir: str | None = None) -> Task:
    """Return the task registered as ``name`` (or imported from ``"module:attr"``).

    Args:
        name: a name from :func:`list_tasks`, or ``"package.module:attribute"``
            naming a task object or a callable returning one.
        data_dir: default data directory for tasks that read local files
            (``mnist``, ``cifar10``); ``load_data(data_dir)`` may still override it.

    Returns:
        The task. Built-ins are new objects on each call; user tasks are the
        registered object itself.

    Raises:
        SpecError: unknown name (with the closest names as suggestions), an
            import path that fails, or a ``data_dir`` that does not exist (each task
            then checks it holds what it needs).

    Example:
        >>> get_task("mnist1d-cnn").target
        Target(metric='test_accuracy', value=0.9, mode='max')
        >>> get_task("mnist1d-cn")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        steplab.errors.SpecError: task: got 'mnist1d-cn'; did you mean 'mnist1d-cnn'...
    """
    if not isinstance(name, str):
        raise SpecError(f"task: got {name!r}, expected a task name (str)")
    if data_dir is not None and not (str(data_dir).strip() and os.path.exists(data_dir)):
        raise SpecError(
            f"data_dir: got {str(data_dir)!r}, expected an existing directory "
            "(or, for the byte-lm tasks, a text file)"
        )
    if name in _REGISTRY:
        return _REGISTRY[name](data_dir)
    if ":" in name:
        return _import_task(name)
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise SpecError(f"task: got {name!r}; {hint}expected one of {', '.join(_REGISTRY)}")


def describe_tasks(names: list[str] | None = None) -> list[dict[str, Any]]:
    """``info()`` of each named task (default: every registered task), for ``steplab tasks``.

    Args:
        names: task names or import paths; ``None`` for all of :func:`list_tasks`.

    Returns:
        One dict per task: name, description, sizes, n_params, target, defaults.

    Raises:
        SpecError: an unknown name.

    Example:
        >>> [d["n_params"] for d in describe_tasks(["mnist1d-logreg", "beale"])]
        [410, 2]
    """
    return [_complete_info(get_task(name)) for name in (list_tasks() if names is None else names)]


def _complete_info(task: Task) -> dict[str, Any]:
    """``task.info()`` with every listed field present.

    A user's task may return only part of the dict (or a non-dict): the fields
    it leaves out are filled from the protocol's members (sizes unknown), so a
    listing never fails on one registered task.
    """
    info = getattr(task, "info", None)
    given = info() if callable(info) else {}
    if not isinstance(given, dict):
        given = {}
    if set(given) >= _FIELDS and all(isinstance(given[k], dict) for k in ("target", "defaults")):
        return given  # the built-ins: complete, no second model to build
    base = task_info(task, None)
    merged = {**base, **given}
    for key in ("target", "defaults"):
        if not isinstance(merged[key], dict):
            merged[key] = base[key]
    return merged


#: the fields ``steplab tasks`` lists
_FIELDS = frozenset({"name", "description", "sizes", "n_params", "target", "defaults"})
