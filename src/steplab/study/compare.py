"""``run_study``: run a comparison study end to end and write its report.

The study plans its runs (:mod:`steplab.study.protocol`), executes those not
already finished under ``<out>/runs/<run-id>/`` (:mod:`steplab.study.executor`),
then analyses every run (:mod:`steplab.study.report_data`) and writes
``report.html``, ``report.md``, ``results.csv`` and ``results.json``. Runs are
content-addressed by ``TrainConfig.run_id``: an interrupted study resumes where
it stopped, and a finished one re-renders its report without training.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steplab.errors import SpecError
from steplab.study.executor import RunJob, make_executor, run_jobs
from steplab.study.protocol import Group, check_names, search_configs, seed_configs, select_best
from steplab.study.report_data import RunRecord, StudyAnalysis, analyze, read_rows, target_of
from steplab.study.spec import StudySpec

__all__ = ["StudyResult", "run_study"]


@dataclass(frozen=True)
class StudyResult:
    """What a finished study produced.

    Attributes:
        spec: the study spec.
        out: the output directory.
        report_html: path of the self-contained HTML report.
        report_md: path of the Markdown report.
        results_csv: one row per run, every metric.
        results_json: every run, the summary table and the verdicts.
        analysis: the numbers behind the report (table rows, verdicts, warnings).
        n_runs: runs the study consists of.
        n_trained: runs trained by this call (the others were found finished).
        wall_time: seconds this call took.
        cpu_seconds: CPU seconds the runs trained by this call used in their workers.
    """

    spec: StudySpec
    out: Path
    report_html: Path
    report_md: Path
    results_csv: Path
    results_json: Path
    analysis: StudyAnalysis
    n_runs: int
    n_trained: int
    wall_time: float
    cpu_seconds: float


def _claim_out_dir(out: Path, spec: StudySpec, command: str | None) -> None:
    from steplab.train.output import check_out_dir, make_out_dir

    check_out_dir(out)
    marker = out / "study.json"
    if marker.exists():
        try:
            held = json.loads(marker.read_text()).get("spec_hash")
        except (OSError, ValueError, AttributeError) as exc:
            raise SpecError(
                f"out: {str(marker)!r} is unreadable ({exc}); expected a study.json"
            ) from exc
        if held != spec.spec_hash:
            raise SpecError(
                f"out: {str(out)!r} holds another study (spec hash {held}, this one "
                f"{spec.spec_hash}); expected an empty directory or the same study"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise SpecError(
            f"out: {str(out)!r} is not empty and holds no study; expected a new directory"
        )
    make_out_dir(out)
    (out / "study.toml").write_text(spec.to_toml())
    body = {"spec_hash": spec.spec_hash, "spec": spec.to_dict(), "command": command}
    marker.write_text(json.dumps(body, indent=2) + "\n")


@dataclass
class _Plan:
    """Tracks the runs of every group; adds seed runs when a group's search is done."""

    spec: StudySpec
    out: Path
    search: dict[Group, list[dict[str, Any]]]
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: dict[Group, list[dict[str, Any] | None]] = field(default_factory=dict)
    warnings: dict[Group, str] = field(default_factory=dict)
    cached: int = 0
    cpu_seconds: float = 0.0
    tasks: bytes | None = None

    def run_dir(self, config: dict[str, Any]) -> Path:
        from steplab.train import TrainConfig

        return self.out / "runs" / TrainConfig.from_dict(config).run_id

    def jobs_for(self, group: Group, configs: Iterable[dict[str, Any]], role: str) -> list[RunJob]:
        """Jobs for the configs not finished yet; finished ones are recorded."""
        jobs = []
        for config in configs:
            run_dir = self.run_dir(config)
            summary_path = run_dir / "summary.json"
            label = f"{group.task} {group.optimizer} lr={config['lr']:.3g} seed {config['seed']}"
            if summary_path.exists():
                try:
                    self.summaries[run_dir.name] = json.loads(summary_path.read_text())
                    self.cached += 1
                    continue
                except (OSError, ValueError) as exc:  # torn by hand or a full disk: run again
                    warnings.warn(f"{summary_path} is damaged ({exc}); training {label} again",
                                  stacklevel=2)
            jobs.append(RunJob(config, str(run_dir), label, (group.key, role), self.tasks))
        return jobs

    def after_search(self, group: Group) -> list[RunJob]:
        """When every search run of ``group`` is done, choose the best of each repeat.

        Then plan the final seeds (main groups only).
        """
        configs = self.search[group]
        if group in self.best or any(self.run_dir(c).name not in self.summaries for c in configs):
            return []
        repeats = self.spec.tuning_repeats if group.kind == "main" else 1
        size = len(configs) // repeats
        chosen: list[dict[str, Any] | None] = []
        for r in range(repeats):
            part = configs[r * size : (r + 1) * size]
            index, warning = self._select(group, part)
            chosen.append(None if index is None else part[index])
            if warning and group.kind == "main":  # paths are illustrations; edges are noise
                self.warnings.setdefault(group, warning)
        self.best[group] = chosen
        if group.kind != "main":
            return []
        return self.jobs_for(group, self.final_configs(group), "seed")

    def final_configs(self, group: Group) -> list[dict[str, Any]]:
        """The final (seed) runs of ``group``: the target is checked every 1% of the run."""
        from steplab.tasks import get_task

        best = self.best.get(group) or []
        steps = self.spec.steps or get_task(group.task, self.spec.data_dir).default_steps
        override = dict(self.spec.targets).get(group.task)
        check: dict[str, Any] = {"target_every": max(1, steps // 100)}
        if override is not None:
            check["target_value"] = override
        return [{**c, **check} for c in seed_configs(best, self.spec.seeds)]

    def _select(
        self, group: Group, part: list[dict[str, Any]]
    ) -> tuple[int | None, str | None]:
        from steplab.study.protocol import selection_metric
        from steplab.study.spec_claims import resolve_selection

        override = dict(self.spec.targets).get(group.task)
        task_target = target_of(group.task, self.spec.data_dir, override)
        runs = [(c, self.summaries[self.run_dir(c).name]) for c in part]
        if group.kind != "main":
            return select_best(runs, selection_metric(task_target.metric), task_target.mode)
        criterion = resolve_selection(self.spec.selection, self.spec.claims)
        rows = [read_rows(self.run_dir(c) / "metrics.jsonl") for c in part]
        return select_best(
            runs, selection_metric(task_target.metric), task_target.mode,
            criterion=criterion, rows=rows, target=task_target.value,
        )

    def on_done(self, job: RunJob, summary: dict[str, Any]) -> list[RunJob]:
        if summary.get("fatal"):  # every run would fail alike: stop with the one line
            raise SpecError(str(summary.get("error")))
        summary = dict(summary)
        self.cpu_seconds += float(summary.pop("cpu_seconds", 0.0))
        self.summaries[Path(job.run_dir).name] = summary
        group = next(g for g in self.search if g.key == job.tag[0])
        return self.after_search(group) if job.tag[1] == "search" else []


def shipped_tasks(spec: StudySpec) -> bytes | None:
    """The study's tasks that ``register_task`` added in this process, cloudpickled for workers.

    Worker processes (local pool or Ray) start without them; cloudpickle sends a
    task defined in a notebook or a ``python -c`` script by value.

    Raises:
        SpecError: such a task cannot be pickled (one line naming it and how to fix it).
    """
    import cloudpickle

    from steplab.tasks import registered_tasks

    user = registered_tasks()
    mine = [user[name] for name in dict.fromkeys((*spec.tasks, *spec.trajectories)) if name in user]
    if not mine:
        return None
    try:
        return bytes(cloudpickle.dumps(mine))
    except Exception as exc:  # any pickling failure is the user's task: say which
        names = ", ".join(repr(t.name) for t in mine)
        raise SpecError(
            f"tasks: {names} registered with register_task cannot be sent to worker processes "
            f"({type(exc).__name__}: {exc}); expected a picklable task object"
        ) from None


def _groups(spec: StudySpec) -> list[Group]:
    main = [Group(t, o) for t in spec.tasks for o in spec.optimizers]
    paths = [Group(t, o, "trajectory") for t in spec.trajectories for o in spec.optimizers]
    return main + paths


def _execute(
    plan: _Plan, executor: str, workers: int | None, address: str | None, progress: bool
) -> int:
    jobs: list[RunJob] = []
    for group, configs in plan.search.items():
        jobs += plan.jobs_for(group, configs, "search")
    for group in plan.search:
        jobs += plan.after_search(group)
    n_main = sum(1 for g in plan.search if g.kind == "main")
    total = sum(len(c) for c in plan.search.values()) + n_main * plan.spec.seeds
    to_run = max(total - plan.cached, len(jobs))
    if not jobs:
        return 0
    trained = 0

    def on_done(job: RunJob, summary: dict[str, Any]) -> list[RunJob]:
        nonlocal trained
        trained += 1
        return plan.on_done(job, summary)

    run_jobs(make_executor(executor, workers, address), jobs, on_done, to_run, progress)
    return trained


def _records(plan: _Plan) -> list[RunRecord]:
    records = []
    for group, configs in plan.search.items():
        seeds = plan.final_configs(group) if group.kind == "main" else []
        for role, role_configs in (("search", configs), ("seed", seeds)):
            for config in role_configs:
                run_dir = plan.run_dir(config)
                summary = plan.summaries.get(run_dir.name, {"status": "missing"})
                rows = read_rows(run_dir / "metrics.jsonl")
                records.append(RunRecord(group, role, config, summary, rows, run_dir.name))
    return records


def run_study(
    spec: StudySpec,
    out: str | Path = "steplab-out",
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> StudyResult:
    """Run ``spec`` (skipping finished runs) and write its report into ``out``.

    Args:
        spec: the study.
        out: output directory; it must be new, empty, or hold this same study.
        executor: ``"local"`` (process pool) or ``"ray"``.
        workers: parallel runs (None: all cores, or the Ray cluster's CPUs).
        address: Ray cluster address (executor ``"ray"`` only; None starts a local Ray).
        progress: show the progress display.
        command: the command line that reproduces the study, shown in the report
            (None: ``steplab compare <out>/study.toml --out <out>-reproduced``; the
            spec is written there as TOML, and the new directory trains every run
            again).

    Returns:
        A :class:`StudyResult` with the paths of the report files.

    Raises:
        SpecError: an unknown optimizer or task, a bad executor, an ``address``
            without the ray executor, or ``out`` holding another study.
    """
    from steplab.study.report_writers import write_reports

    start = time.perf_counter()
    if address is not None and (executor != "ray" or not address.strip()):
        raise SpecError(f"address: got {address!r} with executor {executor!r}; expected a "
                        "Ray address ('auto', 'host:port', 'ray://host:port') only with "
                        "executor 'ray'")
    check_names(spec)
    tasks = shipped_tasks(spec)  # before the output directory exists: a bad task costs nothing
    out = Path(out)
    _claim_out_dir(out, spec, command)
    # a new --out: running it cannot collide with (or silently reuse) this study's runs
    command = command or f"steplab compare {out / 'study.toml'} --out {out}-reproduced"
    plan = _Plan(spec, out, {g: search_configs(spec, g) for g in _groups(spec)}, tasks=tasks)
    trained = _execute(plan, executor, workers, address, progress)
    records = _records(plan)
    analysis = analyze(spec, records, {g.key: w for g, w in plan.warnings.items()})
    paths = write_reports(out, spec, analysis, command, time.perf_counter() - start)
    return StudyResult(
        spec,
        out,
        paths["html"],
        paths["md"],
        paths["csv"],
        paths["json"],
        analysis,
        len({r.run_id for r in records}),
        trained,
        time.perf_counter() - start,
        plan.cpu_seconds,
    )
