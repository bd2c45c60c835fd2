"""The study spec: which optimizers to compare, on which tasks, with what budget.

A :class:`StudySpec` is a frozen value. It comes from a TOML file
(:func:`steplab.study.spec_load.load_study_spec`, which also holds the
default and ``--quick`` studies), from ``steplab compare`` flags, or from code; its
:attr:`StudySpec.spec_hash` names the study, so an output directory holding a
different study is refused instead of mixed.

TOML layout (every key optional; the keys may also sit at the top level)::

    [study]
    tasks = ["mnist1d-cnn"]
    optimizers = ["adam", "lookahead(adam)"]
    seeds = 10         # fresh seeds of the best setting, shared by all optimizers (>= 1)
    budget = 5         # search trials per optimizer and task (>= 1)
    selection = "auto" # choose the best trial by: final | steps_to_target | auc
    level = 0.95       # confidence level of every interval and verdict
    margins = { final = 0.01, steps_to_target = 0.10 }  # equivalence margins
    steps = 500        # steps per run (default: the task's)
    lr_span = 10.0     # search lr in [center / lr_span, center * lr_span]
    divergence_loss = 3.0  # a run ending with val loss above this counts as diverged

    [study.arms."adam+warmup"]  # an optimizer with its own run settings (spec_arms);
    optimizer = "adam"          # list "adam+warmup" in optimizers to run it
    warmup_steps = 100

>>> spec = StudySpec(tasks=("mnist1d-cnn",), optimizers=("adam", "sgd"), seeds=2, budget=3)
>>> spec.seeds, len(spec.spec_hash)
(2, 12)
>>> StudySpec(seeds=0)
Traceback (most recent call last):
...
steplab.errors.SpecError: seeds: got 0, expected an integer >= 1
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from steplab.errors import SpecError
from steplab.study.spec_arms import Arm, arms_to_toml, canonical_name, parse_arms
from steplab.study.spec_claims import (
    DEFAULT_MARGINS,
    SELECTIONS,
    claims_to_toml,
    parse_claims,
    parse_margins,
)
from steplab.study.verdicts.decide import Claim

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "DEFAULT_TRAJECTORY_TASKS",
    "FINAL_SEED_BASE",
    "LOOKAHEAD_CLAIM_TEXT",
    "StudySpec",
]

#: the optimizers of the default study (``steplab compare`` with no arguments)
DEFAULT_OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "momentum",
    "rmsprop",
    "adam",
    "lookahead(momentum)",
    "lookahead(adam)",
)
#: the claim people make about Lookahead, judged by the default study (Zhang et al. 2019)
LOOKAHEAD_CLAIM_TEXT = "Lookahead converges 30-50% faster"
#: final seeds are FINAL_SEED_BASE, FINAL_SEED_BASE + 1, ...; tuning uses 0, 1, ...
FINAL_SEED_BASE = 1000
#: the 2-D test functions whose optimizer trajectories the report draws
DEFAULT_TRAJECTORY_TASKS: tuple[str, ...] = ("rosenbrock", "rastrigin", "beale")
_SEARCH_MODES = ("auto", "grid", "halton")


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a comparison study; a value with a stable hash.

    Args:
        tasks: task names (``steplab tasks`` lists them).
        optimizers: optimizer spec strings (``"adam"``, ``"lookahead(sgd, k=5)"``).
        seeds: fresh runs of each optimizer's best setting at seeds
            ``FINAL_SEED_BASE .. FINAL_SEED_BASE + seeds - 1``: the same seeds for
            every optimizer (paired), disjoint from the tuning seeds.
        budget: search trials per optimizer and task, the same for every optimizer.
        tuning_repeats: independent searches per optimizer (tuning seeds ``0 ..
            tuning_repeats - 1``); final seed ``i`` uses the best setting of search
            ``i mod tuning_repeats``, so tuning variance enters the intervals.
        selection: what picks the best search trial on validation: ``final``
            (final metric), ``steps_to_target`` (first evaluation meeting the
            target), ``auc`` (mean metric over evaluations) or ``auto`` (what
            the claims are about; ``final`` without claims).
        level: confidence level of intervals and verdicts (Holm across the study).
        margins: equivalence margins by quantity (``final``: absolute metric
            difference; ``steps_to_target``: fraction of the baseline's steps).
        claims: stated claims judged supported / refuted / inconclusive.
        steps: training steps per run (None: each task's default).
        batch_size: batch size per run (None: each task's default).
        lr_span: the learning rate is searched in ``[c / lr_span, c * lr_span]``
            around each optimizer's sensible default ``c`` (log-spaced).
        search: ``"grid"`` (log grid over the lr only), ``"halton"`` (scrambled
            Halton over the lr and the optimizer's other searchable
            hyperparameters whose minimum trial count fits the budget), or
            ``"auto"`` (grid).
        baseline: the optimizer every other one is compared with (None: the
            inner optimizer for each Lookahead, else ``adam``, else the first).
        schedule: learning-rate schedule of every run (``constant``, ``cosine``...).
        warmup_steps: warmup steps of every run.
        eval_every: steps between evaluations (None: 10 per run).
        trajectories: 2-D test functions to draw optimizer paths on (may be empty).
        trajectory_steps: steps of each trajectory run.
        trajectory_budget: learning rates tried per optimizer on each 2-D function
            (log grid over ``[1e-4, 1]``, shared by every optimizer).
        targets: ``(task, value)`` pairs replacing a task's own target value
            (its metric and direction stay); a TOML table ``{task = value}``.
        data_dir: where tasks read or cache their data (None: their default).
        metrics: metrics beyond the target to tabulate and judge against each
            baseline (``nll``, ``ece``, ``shift_accuracy``, ``peak_state_bytes``,
            ``step_time_ms`` or any ``test_``/``val_`` metric; see
            :mod:`steplab.study.report_metrics`; ``divergence``: the share of
            search runs that diverged, :mod:`steplab.study.report_divergence`);
            empty by default.
        arms: named optimizers with their own run settings (``schedule``,
            ``warmup_steps``, ``clip_norm``), listed in ``optimizers`` by name
            (:mod:`steplab.study.spec_arms`); a TOML table ``{name = {...}}``.
        divergence_loss: a run whose final validation loss (the task's loss,
            e.g. nats) is above this counts as diverged, as does one that ended
            ``diverged`` or with a non-finite loss (None: only those two).

    Raises:
        SpecError: a field is out of range or an optimizer/task list is empty.
    """

    tasks: tuple[str, ...] = ("mnist1d-cnn",)
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    seeds: int = 3
    budget: int = 5
    tuning_repeats: int = 1
    selection: str = "auto"
    level: float = 0.95
    margins: tuple[tuple[str, float], ...] = DEFAULT_MARGINS
    claims: tuple[Claim, ...] = ()
    steps: int | None = None
    batch_size: int | None = None
    lr_span: float = 10.0
    search: str = "auto"
    baseline: str | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    eval_every: int | None = None
    trajectories: tuple[str, ...] = DEFAULT_TRAJECTORY_TASKS
    trajectory_steps: int = 300
    trajectory_budget: int = 5
    targets: tuple[tuple[str, float], ...] = ()
    data_dir: str | None = None
    metrics: tuple[str, ...] = ()
    arms: tuple[Arm, ...] = ()
    divergence_loss: float | None = None

    def __post_init__(self) -> None:
        for name in ("tasks", "optimizers", "trajectories"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise SpecError(f"{name}: got {value!r}, expected a list of names")
            object.__setattr__(self, name, tuple(value))
        for name in ("tasks", "optimizers"):
            if not getattr(self, name):
                raise SpecError(f"{name}: got an empty list, expected at least one name")
        _check_int("seeds", self.seeds, 1)
        _check_int("budget", self.budget, 1)
        _check_int("tuning_repeats", self.tuning_repeats, 1)
        if self.tuning_repeats > FINAL_SEED_BASE:
            raise SpecError(
                f"tuning_repeats: got {self.tuning_repeats}, expected at most {FINAL_SEED_BASE}"
            )
        if self.selection not in SELECTIONS:
            raise SpecError(f"selection: got {self.selection!r}, expected one of {SELECTIONS}")
        if isinstance(self.level, bool) or not isinstance(self.level, int | float) or not (
            0.5 <= self.level < 1.0
        ):
            raise SpecError(f"level: got {self.level!r}, expected a number in [0.5, 1)")
        object.__setattr__(self, "margins", parse_margins(self.margins))
        object.__setattr__(self, "claims", parse_claims(self.claims))
        for claim in self.claims:
            if claim.task is not None and claim.task not in self.tasks:
                raise SpecError(
                    f"claims: got task {claim.task!r}, expected one of tasks {list(self.tasks)}"
                )
        _check_int("trajectory_steps", self.trajectory_steps, 1)
        _check_int("trajectory_budget", self.trajectory_budget, 1)
        _check_int("warmup_steps", self.warmup_steps, 0)
        for name in ("steps", "batch_size", "eval_every"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if isinstance(self.lr_span, bool) or not isinstance(self.lr_span, int | float):
            raise SpecError(f"lr_span: got {self.lr_span!r}, expected a number > 1")
        if not self.lr_span > 1.0:
            raise SpecError(f"lr_span: got {self.lr_span!r}, expected a number > 1")
        if self.search not in _SEARCH_MODES:
            raise SpecError(f"search: got {self.search!r}, expected one of {_SEARCH_MODES}")
        object.__setattr__(self, "targets", _target_pairs(self.targets))
        from steplab.study.report_metrics import check_metric_names

        object.__setattr__(self, "metrics", check_metric_names(self.metrics))
        for task, _ in self.targets:
            if task not in self.tasks:
                raise SpecError(
                    f"targets: got task {task!r}, expected one of tasks {list(self.tasks)}"
                )
        if len(set(self.optimizers)) != len(self.optimizers):
            raise SpecError(f"optimizers: got duplicates in {list(self.optimizers)}")
        self._check_arms()

    def _check_arms(self) -> None:
        object.__setattr__(self, "arms", parse_arms(self.arms))
        for arm in self.arms:
            if arm.name not in self.optimizers:
                raise SpecError(
                    f"arms.{arm.name}: not in optimizers {list(self.optimizers)}; expected "
                    "every arm to be listed there"
                )
        limit = self.divergence_loss
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                                  or not math.isfinite(limit)):
            raise SpecError(f"divergence_loss: got {limit!r}, expected a finite number or none")
        if limit is not None:
            object.__setattr__(self, "divergence_loss", float(limit))

    def arm(self, name: str) -> tuple[str, dict[str, Any]]:
        """The optimizer spec and run-setting overrides of an ``optimizers`` entry.

        >>> spec = StudySpec(optimizers=("adam", "w"),
        ...                  arms={"w": {"optimizer": "adam", "warmup_steps": 5}})
        >>> spec.arm("w"), spec.arm("adam")
        (('adam', {'warmup_steps': 5}), ('adam', {}))
        """
        for arm in self.arms:
            if arm.name == name:
                return arm.optimizer, dict(arm.settings)
        return name, {}

    def canonical(self, name: str) -> str:
        """How ``name`` matches an ``optimizers`` entry (an arm's name, else the parsed spec)."""
        return canonical_name(name, self.arms)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain JSON types (lists for tuples, tables for claims)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["margins"] = dict(self.margins)
        out["claims"] = [
            {k: v for k, v in dataclasses.asdict(c).items() if v is not None} for c in self.claims
        ]
        out["arms"] = {a.name: a.to_dict() for a in self.arms}
        for key in ("metrics", "arms", "divergence_loss"):  # absent when unset: old hashes hold
            if not out[key] and out[key] != 0:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        """Build a spec from :meth:`to_dict` output or a TOML table.

        Raises:
            SpecError: an unknown key (with a suggestion) or a bad value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(key, sorted(known), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise SpecError(
                    f"{key}: unknown study field{extra}; expected one of {sorted(known)}"
                )
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) and k not in ("targets", "claims", "arms") else v
            for k, v in data.items()
        }
        return cls(**kwargs)

    @property
    def spec_hash(self) -> str:
        """First 12 hex digits of the SHA-256 of the canonical JSON of the spec."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_toml(self) -> str:
        """The spec as a TOML ``[study]`` table that :func:`load_study_spec` reads back.

        >>> spec = StudySpec(optimizers=("adam", "lookahead(adam, k=5)"), seeds=2)
        >>> import tomllib; StudySpec.from_dict(tomllib.loads(spec.to_toml())["study"]) == spec
        True
        """
        lines = ["[study]"]
        for key, value in self.to_dict().items():
            if value is None or key in ("targets", "margins", "claims", "arms"):
                continue
            lines.append(f"{key} = {json.dumps(value)}")
        for key, table in (("targets", self.targets), ("margins", self.margins)):
            pairs = ", ".join(f"{json.dumps(t)} = {v!r}" for t, v in table)
            lines.append(f"{key} = {{ {pairs} }}" if pairs else f"{key} = {{}}")
        claims = claims_to_toml(self.claims)
        arms = arms_to_toml(self.arms)
        tail = "".join(f"\n{block}\n" for block in (claims, arms) if block)
        return "\n".join(lines) + "\n" + tail

    def replace(self, **changes: Any) -> StudySpec:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _target_pairs(value: Any) -> tuple[tuple[str, float], ...]:
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = tuple((str(k), float(v)) for k, v in items)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"targets: got {value!r}, expected a table task = value") from exc
    if not all(math.isfinite(v) for _, v in pairs):
        raise SpecError(f"targets: got {value!r}, expected finite values")
    return tuple(sorted(pairs))


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{name}: got {value!r}, expected an integer >= {low}")


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
