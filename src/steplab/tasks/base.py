"""The task protocol: what a workload gives the training loop.

A task is a model factory, data, a loss, metrics and a documented target.
:class:`Task` is a :class:`typing.Protocol`: any object with these attributes
and methods is a task (subclassing is allowed, not required).
:class:`ClassificationTask` is a concrete base the built-in classifiers share;
user tasks may reuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from steplab.errors import SpecError
from steplab.tasks.calibration import classification_scores

__all__ = [
    "ClassificationTask",
    "Target",
    "Task",
    "TaskData",
    "count_params",
    "init_from_generator",
    "split_validation",
]

#: normalisation layers init_from_generator sets to the identity
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
#: rows per forward pass when a metric runs over a whole split (bounds memory)
EVAL_CHUNK = 1000


@dataclass(frozen=True)
class Target:
    """The quality a run should reach: ``metric`` compared to ``value``.

    Args:
        metric: a key of the loop's evaluation metrics, prefixed with the split
            (``"test_accuracy"``, ``"val_loss"``, ``"test_distance"``).
        value: the threshold.
        mode: ``"max"`` (met when ``metric >= value``) or ``"min"``
            (met when ``metric <= value``).

    Raises:
        SpecError: ``mode`` not ``"max"``/``"min"``, or ``value`` not finite.

    Example:
        >>> t = Target("test_accuracy", 0.9, "max")
        >>> t.met_by(0.93), t.met_by(0.5)
        (True, False)
    """

    metric: str
    value: float
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise SpecError(f"target mode: got {self.mode!r}, expected 'max' or 'min'")
        if not math.isfinite(float(self.value)):
            raise SpecError(f"target value: got {self.value!r}, expected a finite number")
        if not self.metric:
            raise SpecError("target metric: got '', expected a metric name like 'test_accuracy'")

    def met_by(self, value: float) -> bool:
        """Whether a measured ``value`` of :attr:`metric` meets the target."""
        if not math.isfinite(value):
            return False
        return value >= self.value if self.mode == "max" else value <= self.value

    def to_dict(self) -> dict[str, Any]:
        """``{"metric", "value", "mode"}`` as plain JSON values."""
        return {"metric": self.metric, "value": float(self.value), "mode": self.mode}


@dataclass(frozen=True)
class TaskData:
    """Train, validation and test tensors of a task (CPU; x float32, y int64 for classes).

    The validation split is carved from the training data with a fixed seed
    (:func:`split_validation`); hyperparameters are chosen on it, never on test.
    ``meta`` describes where the data came from as JSON values (e.g. a corpus
    hash); the loop copies it into ``summary.json`` as ``data``.
    ``x_shift``/``y_shift``, when a task has them, are a test set drawn under
    input shift (stronger corruption than training saw); the loop reports the
    task's metrics on it as ``test_shift_<metric>`` whenever it evaluates test.

    Raises:
        SpecError: a split whose x and y disagree in length.

    Example:
        >>> z = torch.zeros(4, 2)
        >>> y = torch.zeros(4, dtype=torch.long)
        >>> TaskData(z, y, z[:1], y[:1], z[:2], y[:2]).sizes()
        {'train': 4, 'val': 1, 'test': 2}
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    meta: dict[str, Any] = field(default_factory=dict)
    x_shift: Tensor | None = None
    y_shift: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.x_shift is None) != (self.y_shift is None):
            raise SpecError("x_shift/y_shift: got one without the other, expected both or neither")
        splits = ("train", "val", "test", "shift") if self.x_shift is not None else (
            "train", "val", "test")
        for split in splits:
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise SpecError(
                    f"x_{split}/y_{split}: got {len(x)} inputs and {len(y)} labels, "
                    "expected the same number"
                )

    def sizes(self) -> dict[str, int]:
        """Number of examples in each split."""
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


@runtime_checkable
class Task(Protocol):
    """A workload: model factory, data, loss, metrics and target.

    Any object with these members is a task; register it with
    :func:`steplab.tasks.register_task`. See ``docs/tasks.md`` for a full
    example of a user task.

    Attributes:
        name: the registry name (``"mnist1d-cnn"``).
        description: one line for ``steplab tasks``.
        target: the quality a run should reach (:class:`Target`).
        default_batch_size: batch size when the run does not set one.
        default_steps: steps when the run sets neither steps nor epochs.
        default_lr: a good Adam learning rate for this task, or ``None``.
        trajectory: ``True`` for the 2-D test functions (the loop logs the
            parameters every step).
    """

    # read-only properties, so a plain class attribute (``default_lr = 0.01``) satisfies them
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def target(self) -> Target: ...
    @property
    def default_batch_size(self) -> int: ...
    @property
    def default_steps(self) -> int: ...
    @property
    def default_lr(self) -> float | None: ...
    @property
    def trajectory(self) -> bool: ...

    def load_data(self, data_dir: str | None = None) -> TaskData:
        """Return the data, deterministically; ``SpecError`` names missing files."""
        ...

    def build_model(self, generator: torch.Generator) -> nn.Module:
        """A fresh model whose initial weights come only from ``generator``."""
        ...

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Scalar loss, the mean over the batch."""
        ...

    def metrics(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """Metrics of ``model`` on ``(x, y)`` (the loop prefixes ``val_``/``test_``)."""
        ...

    def info(self) -> dict[str, Any]:
        """Name, description, sizes, n_params, target and defaults for ``steplab tasks``."""
        ...


def split_validation(
    x: Tensor, y: Tensor, fraction: float = 0.1, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Carve a validation split from training data with a fixed seed.

    Args:
        x: training inputs.
        y: training labels (same length).
        fraction: share of rows that go to validation, in ``(0, 1)``.
        seed: seed of the permutation (independent of any global RNG).

    Returns:
        ``(x_train, y_train, x_val, y_val)``; the validation rows are the first
        ``round(fraction * n)`` of a seeded permutation, and both parts keep
        the original row order.

    Raises:
        SpecError: ``fraction`` outside ``(0, 1)``, or fewer than 2 rows.

    Example:
        >>> xt, yt, xv, yv = split_validation(torch.arange(10.0), torch.arange(10))
        >>> len(xt), len(xv), sorted(yt.tolist() + yv.tolist()) == list(range(10))
        (9, 1, True)
    """
    if not 0.0 < fraction < 1.0:
        raise SpecError(f"validation fraction: got {fraction!r}, expected a number in (0, 1)")
    n = len(x)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise SpecError(
            f"training data: got {n} rows, expected at least 2 to carve a validation split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def init_from_generator(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise every Linear/Conv layer of ``module`` from ``generator`` only.

    Uses PyTorch's default scheme (weights and biases uniform in
    ``±1/sqrt(fan_in)``), so models match ``nn.Linear``'s own statistics while
    no global random state is read. BatchNorm, LayerNorm and GroupNorm start
    as the identity (weight 1, bias 0, fresh running statistics). Build the
    module on the ``meta`` device first to skip torch's own (global-RNG)
    initialisation.

    Raises:
        SpecError: the module holds a parameter of another layer type.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> m = init_from_generator(nn.Linear(3, 2, device="meta"), gen)
        >>> m.weight.device.type, bool(m.weight.abs().max() <= 3 ** -0.5)
        ('cpu', True)
    """
    module.to_empty(device="cpu")
    seen: set[int] = set()
    for layer in module.modules():
        if isinstance(layer, _NORMS):
            with torch.no_grad():  # normalisation layers start as the identity map
                for param, value in ((layer.weight, 1.0), (layer.bias, 0.0)):
                    if param is not None:
                        param.fill_(value)
                        seen.add(id(param))
            if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
                layer.reset_running_stats()  # to_empty left the buffers uninitialised
        if isinstance(layer, nn.Linear | nn.Conv1d | nn.Conv2d):
            fan_in = layer.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                seen.add(id(layer.weight))
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)
                    seen.add(id(layer.bias))
    for pname, param in module.named_parameters():
        if id(param) not in seen:
            raise SpecError(f"parameter {pname}: no generator initialisation for its layer type")
    return module


def count_params(module: nn.Module) -> int:
    """Number of parameter elements of ``module``."""
    return sum(p.numel() for p in module.parameters())


class ClassificationTask:
    """Shared loss, metrics and ``info()`` of the built-in classifiers.

    Subclasses set the class attributes and implement ``load_data`` and
    ``build_model``. ``sizes`` states the split sizes without loading data
    (tests check it against ``load_data``).

    Loss is cross-entropy (mean over the batch); metrics are
    ``{"loss", "accuracy", "nll", "ece"}`` with accuracy a fraction in
    ``[0, 1]`` (see :meth:`metrics`).
    """

    name: str = ""
    description: str = ""
    target: Target = Target("test_accuracy", 0.9, "max")
    default_batch_size: int = 100
    default_steps: int = 1000
    default_lr: float | None = None
    trajectory: bool = False
    sizes: ClassVar[dict[str, int] | None] = None

    def load_data(self, data_dir: str | None = None) -> TaskData:  # pragma: no cover
        raise NotImplementedError

    def build_model(self, generator: torch.Generator) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy, averaged over the batch (computed in float32)."""
        return F.cross_entropy(output.float(), target)

    def metrics(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss, accuracy, NLL and ECE of ``model`` on ``(x, y)``, forward in chunks.

        ``loss`` is the mean cross-entropy (float32), ``nll`` the same in float64
        from the softmax (they differ only for a subclass with another loss),
        ``ece`` the expected calibration error over 15 equal-mass bins
        (:mod:`steplab.tasks.calibration`).
        """
        was_training = model.training
        model.eval()
        total_loss, logits = 0.0, []
        with torch.no_grad():
            for start in range(0, len(x), EVAL_CHUNK):
                out = model(x[start : start + EVAL_CHUNK]).float()
                total_loss += float(F.cross_entropy(out, y[start : start + EVAL_CHUNK],
                                                    reduction="sum"))
                logits.append(out)
        model.train(was_training)
        n = max(len(x), 1)
        if not logits:
            return {"loss": 0.0, "accuracy": 0.0, "nll": 0.0, "ece": 0.0}
        scores = classification_scores(torch.cat(logits), y)
        return {"loss": total_loss / n, **scores}

    def info(self) -> dict[str, Any]:
        """Name, description, sizes, n_params, target and defaults (no data loaded)."""
        return task_info(self, self.sizes)


def task_info(task: Task, sizes: dict[str, int] | None) -> dict[str, Any]:
    """The ``info()`` dict of ``task`` with the given split ``sizes``."""
    model = task.build_model(torch.Generator().manual_seed(0))
    return {
        "name": task.name,
        "description": task.description,
        "sizes": dict(sizes) if sizes is not None else None,
        "n_params": count_params(model),
        "target": task.target.to_dict(),
        "defaults": {
            "optimizer": "adam",
            "batch_size": task.default_batch_size,
            "steps": task.default_steps,
            "lr": task.default_lr,
        },
        "trajectory": task.trajectory,
    }
