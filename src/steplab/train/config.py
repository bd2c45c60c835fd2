"""``TrainConfig``: every setting of one training run, as a value.

A config is a frozen dataclass that round-trips through JSON; its ``run_id`` is
the first 12 hex digits of the SHA-256 of its canonical JSON, so the same
settings always name the same run. Every field is checked when the config is
made, and a bad one raises :class:`~steplab.errors.SpecError` whose one-line
message names the option, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from steplab.errors import SpecError
from steplab.train.schedules import SCHEDULES

__all__ = ["EVAL_SPLITS", "OBSERVATION_FIELDS", "PRECISIONS", "TrainConfig"]

#: splits the loop can evaluate on; metrics are reported as ``<split>_<name>``
EVAL_SPLITS: tuple[str, ...] = ("val", "test")
#: ``precision`` values: full float32, bfloat16 autocast, float16 autocast + GradScaler (CUDA)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: fields that change only what is observed, not the trained weights (not hashed into run_id)
OBSERVATION_FIELDS: frozenset[str] = frozenset(
    {"state_every", "histogram_every", "tensorboard", "keep_checkpoints"})
#: fields that change how the work is spread over processes, not the run (not in run_id)
EXECUTION_FIELDS: frozenset[str] = frozenset({"parallel"})

BatchSize = int | Literal["full"] | None


def _bad(option: str, value: object, allowed: str) -> SpecError:
    return SpecError(f"{option}: got {value!r}, expected {allowed}")


def _check_positive(option: str, value: float | None, *, integer: bool = False) -> None:
    if value is None:
        return
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(option, value, "an integer >= 1")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise _bad(option, value, "a finite number > 0")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (see ``docs/training.md``).

    Args:
        task: name of a built-in or registered task (``steplab tasks`` lists them).
        optimizer: optimizer spec string, e.g. ``"lookahead(adamw, k=5)"``.
        lr: learning rate of the innermost optimizer; None keeps the spec's or
            the task's default.
        batch_size: examples per step, ``"full"`` for full-batch gradient
            descent, None for the task's default.
        steps: optimizer steps to run; ``steps`` and ``epochs`` are exclusive,
            and with neither the task's default step count is used.
        epochs: passes over the training split (may be fractional).
        schedule: LR schedule, one of ``SCHEDULES``.
        warmup_steps: linear warmup steps before the schedule starts.
        clip_norm: clip gradients to this global L2 norm (None: off).
        clip_value: clamp each gradient element to ``[-v, v]`` (None: off).
        on_nonfinite: ``"skip"`` a step whose loss or gradient is NaN/Inf and
            count it, or ``"stop"`` the run as diverged.
        divergence_factor: a loss above this times the first step's loss ends
            the run as diverged.
        early_stop_metric: evaluated metric to early-stop on, e.g. ``"val_loss"``.
        patience: evaluations without improvement before stopping (None: 5).
        min_delta: smallest change that counts as an improvement.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"fp16"`` (CUDA only).
        eval_every: evaluate every this many steps (None: 10 evaluations).
        log_every: write a ``metrics.jsonl`` row every this many steps.
        seed: the one seed of the run: model init, data order, RNGs.
        checkpoint_every: write a checkpoint every this many steps (None: off).
        data_dir: directory holding data files for tasks that read them.
        monitor: log gradient norms and update ratios at log steps.
        eval_splits: splits to evaluate, a subset of ``("val", "test")``.
        device: torch device to train on (``"cpu"`` or ``"cuda"``).
        state_every: with ``monitor``, measure the optimizer state (moments,
            effective step sizes, update ratios, Lookahead's gap) every this many
            steps (see :mod:`steplab.observe.state_monitor`).
        histogram_every: write TensorBoard histograms of the moments every this
            many steps (None: every ``10 * state_every``).
        tensorboard: write TensorBoard event files into the run directory
            (only when there is one).
        target_every: between evaluations, check the target metric alone (one
            split) every this many steps until it is met, so ``target_step``
            has this resolution at a fraction of a full evaluation's cost
            (None: only at evaluations).
        target_value: replaces the task target's value (its metric and
            direction stay) for ``target_step`` (None: the task's own).
        parallel: under several processes (``steplab train --nproc N`` or
            torchrun), how model and optimizer are spread: ``"ddp"``,
            ``"zero"`` or ``"fsdp"`` (see :mod:`steplab.train.distributed`);
            not part of ``run_id``. ``batch_size`` stays the global batch.
        keep_checkpoints: checkpoints kept in ``checkpoints/`` (older ones are
            removed); None keeps all (``steplab landscape`` projects the path
            through every one).

    ``state_every``, ``histogram_every``, ``tensorboard`` and ``keep_checkpoints``
    only change what is observed or kept, never the trained weights, so they are
    not part of ``run_id``. ``target_every`` and ``target_value`` are in
    ``run_id`` only when set.

    Raises:
        SpecError: a field is out of range; the message names it.

    Example:
        >>> cfg = TrainConfig(task="digits-mlp", optimizer="adamw", lr=1e-3, steps=100)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> len(cfg.run_id)
        12
        >>> TrainConfig(task="digits-mlp", lr=-1.0)
        Traceback (most recent call last):
        ...
        steplab.errors.SpecError: lr: got -1.0, expected a finite number > 0
    """

    task: str
    optimizer: str = "adam"
    lr: float | None = None
    batch_size: BatchSize = None
    steps: int | None = None
    epochs: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    clip_norm: float | None = None
    clip_value: float | None = None
    on_nonfinite: Literal["skip", "stop"] = "skip"
    divergence_factor: float = 1e3
    early_stop_metric: str | None = None
    patience: int | None = None
    min_delta: float = 0.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    eval_every: int | None = None
    log_every: int = 10
    seed: int = 0
    checkpoint_every: int | None = None
    data_dir: str | None = None
    monitor: bool = True
    eval_splits: tuple[str, ...] = field(default=EVAL_SPLITS)
    device: str = "cpu"
    state_every: int = 200
    histogram_every: int | None = None
    tensorboard: bool = True
    target_every: int | None = None
    target_value: float | None = None
    parallel: str = "ddp"
    keep_checkpoints: int | None = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_splits", tuple(self.eval_splits))
        self._check_names()
        self._check_numbers()
        self._check_choices()

    def _check_names(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise _bad("task", self.task, "a task name (see `steplab tasks`)")
        if not isinstance(self.optimizer, str) or not self.optimizer.strip():
            raise _bad("optimizer", self.optimizer, "an optimizer spec such as 'adamw'")
        from steplab.optim import parse_spec  # raises SpecError with a hint

        parse_spec(self.optimizer)
        if self.schedule not in SCHEDULES:
            raise _bad("schedule", self.schedule, f"one of {', '.join(SCHEDULES)}")

    def _check_numbers(self) -> None:
        _check_positive("lr", self.lr)
        if self.batch_size != "full" and self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise _bad("batch_size", self.batch_size, "an integer >= 1 or 'full'")
        _check_positive("steps", self.steps, integer=True)
        _check_positive("epochs", self.epochs)
        if self.steps is not None and self.epochs is not None:
            raise _bad("epochs", self.epochs, "either steps or epochs, not both")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or (
            self.warmup_steps < 0
        ):
            raise _bad("warmup_steps", self.warmup_steps, "an integer >= 0")
        _check_positive("clip_norm", self.clip_norm)
        _check_positive("clip_value", self.clip_value)
        if not isinstance(self.divergence_factor, (int, float)) or not (
            math.isfinite(self.divergence_factor) and self.divergence_factor > 1
        ):
            raise _bad("divergence_factor", self.divergence_factor, "a finite number > 1")
        _check_positive("patience", self.patience, integer=True)
        if not isinstance(self.min_delta, (int, float)) or not (
            math.isfinite(self.min_delta) and self.min_delta >= 0
        ):
            raise _bad("min_delta", self.min_delta, "a finite number >= 0")
        if self.target_value is not None and (
            isinstance(self.target_value, bool)
            or not isinstance(self.target_value, (int, float))
            or not math.isfinite(self.target_value)
        ):
            raise _bad("target_value", self.target_value, "a finite number")
        for option in ("eval_every", "checkpoint_every", "target_every"):
            _check_positive(option, getattr(self, option), integer=True)
        _check_positive("log_every", self.log_every, integer=True)
        _check_positive("state_every", self.state_every, integer=True)
        _check_positive("histogram_every", self.histogram_every, integer=True)
        _check_positive("keep_checkpoints", self.keep_checkpoints, integer=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not (
            0 <= self.seed < 2**63
        ):
            raise _bad("seed", self.seed, "an integer in [0, 2**63)")

    def _check_choices(self) -> None:
        if self.on_nonfinite not in ("skip", "stop"):
            raise _bad("on_nonfinite", self.on_nonfinite, "'skip' or 'stop'")
        if self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, f"one of {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and not str(self.device).startswith("cuda"):
            raise _bad(
                "precision", self.precision, "'fp32' or 'bf16' on CPU (fp16 needs a CUDA device)"
            )
        if self.parallel not in ("ddp", "zero", "fsdp"):
            raise _bad("parallel", self.parallel, "one of ddp, zero, fsdp")
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise _bad("device", self.device, "'cpu' or 'cuda[:N]'")
        if not self.eval_splits or any(s not in EVAL_SPLITS for s in self.eval_splits):
            raise _bad(
                "eval_splits", list(self.eval_splits), f"a non-empty subset of {EVAL_SPLITS}"
            )
        metric = self.early_stop_metric
        if metric is not None and not any(metric.startswith(f"{s}_") for s in self.eval_splits):
            prefixes = " or ".join(f"'{s}_<metric>'" for s in self.eval_splits)
            raise _bad("early_stop_metric", metric, f"an evaluated metric such as {prefixes}")

    # -- JSON round trip ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a plain JSON-ready dict (``eval_splits`` as a list)."""
        out = dataclasses.asdict(self)
        out["eval_splits"] = list(self.eval_splits)
        if out["parallel"] == "ddp":  # absent when default: old config.json files stay equal
            del out["parallel"]
        for optional in ("target_every", "target_value"):  # absent when unset: run ids stay
            if out[optional] is None:
                del out[optional]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise ``SpecError``.

        A ``run_id`` key (as in ``config.json``) is accepted and ignored.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"run_id"})
        if unknown:
            raise _bad("config", unknown[0], f"one of the TrainConfig fields {sorted(names)}")
        kwargs = {k: v for k, v in data.items() if k in names}
        if "eval_splits" in kwargs:
            kwargs["eval_splits"] = tuple(kwargs["eval_splits"])
        return cls(**kwargs)

    def to_json(self) -> str:
        """Return the canonical JSON text (sorted keys, no spaces) that ``run_id`` hashes.

        Fields in ``OBSERVATION_FIELDS`` are left out: they do not change the result.
        """
        skipped = OBSERVATION_FIELDS | EXECUTION_FIELDS
        identity = {k: v for k, v in self.to_dict().items() if k not in skipped}
        return json.dumps(identity, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        """First 12 hex digits of the SHA-256 of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]
