"""Benchmark ``steplab tune``: parallel throughput and the cost of pruning.

1. Throughput: trials per minute with 2 worker processes sharing one SQLite
   study against 1 worker (target >= 1.7x). Both settings run the same number of
   trials, each in a fresh ``python`` process (so both pay the same start-up);
   every worker uses ``cpu_count // 2`` torch threads. Interleaved repeats, medians.
2. Pruning: 30 trials without pruning set a reference best value. Studies with
   the median and Hyperband pruners (same sampler seed) then run until they
   reach that value or their trial cap; we report the trials and the training
   steps spent to get there, against the unpruned study's.

Run: ``.venv/bin/python benchmarks/tune.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from steplab.study.tuning import tune

TASK = "mnist1d-logreg"  # pruning study: many cheap trials
#: throughput: trials shaped like the default comparison's runs, so the figure
#: measures training in parallel rather than per-trial bookkeeping
THROUGHPUT_TASK = "mnist1d-cnn"


_RUN = """
import sys, optuna, torch
from steplab.study.tuning import tune
optuna.logging.set_verbosity(optuna.logging.WARNING)
workers, trials, steps, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(max(1, torch.get_num_threads() // 2))  # as each of 2 workers gets
tune(sys.argv[5], "adam", trials, steps=steps, space="lr=log(1e-4, 1e-1)", pruner="none",
     workers=workers, out_dir=out, study_name="bench")
"""


def _throughput(workers: int, trials: int, steps: int) -> tuple[float, float, float]:
    """Trials per minute of one fresh study run by a fresh ``python`` process.

    Both settings pay the same start-up (interpreter, imports) per process.
    "Steady" counts from the first trial's start to the last trial's end
    (Optuna's timestamps), leaving the start-up out. "In flight" is the mean
    number of trials running at once (sum of trial durations / that span): 2.0
    means the workers really overlap and any shortfall is CPU contention.
    """
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        cmd = [
            sys.executable, "-c", _RUN, str(workers), str(trials), str(steps), out, THROUGHPUT_TASK
        ]
        subprocess.run(cmd, check=True)
        total = time.perf_counter() - start
        storage = f"sqlite:///{Path(out).resolve() / 'study.db'}"
        done = optuna.load_study(study_name="bench", storage=storage).trials
        first = min(t.datetime_start for t in done if t.datetime_start)
        last = max(t.datetime_complete for t in done if t.datetime_complete)
        span = (last - first).total_seconds()
        busy = sum(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in done
            if t.datetime_start and t.datetime_complete
        )
        return 60.0 * len(done) / total, 60.0 * len(done) / span, busy / span


def _trial_steps(t: Any, steps: int) -> int:
    if t.state == TrialState.PRUNED and t.intermediate_values:
        return int(max(t.intermediate_values))
    return int(t.user_attrs.get("steps") or steps)


def _reach(study: Any, target: float, steps: int) -> tuple[int | None, int, int]:
    """(trials until the best value reaches ``target``, steps spent until then, steps in all)."""
    spent, reached, reached_steps = 0, None, 0
    for t in study.get_trials(deepcopy=False):
        spent += _trial_steps(t, steps)
        ok = t.state == TrialState.COMPLETE and t.value is not None and t.value >= target - 1e-12
        if ok and reached is None:
            reached, reached_steps = t.number + 1, spent
    return reached, reached_steps, spent


def _pruning(ref: int, cap: int, steps: int, seeds: list[int]) -> tuple[float, list[Any]]:
    """Target = best of ``ref`` unpruned trials (seed 0); then each pruner on other seeds."""
    with tempfile.TemporaryDirectory() as out:
        res = tune(
            TASK,
            "adam",
            ref,
            steps=steps,
            space="lr=log(1e-4, 1e-1)",
            pruner="none",
            out_dir=out,
            seed=0,
        )
        target = float(res.best_value or 0.0)
    rows = []
    for pruner in ("none", "median", "hyperband"):
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as out:
                res = tune(
                    TASK,
                    "adam",
                    cap,
                    steps=steps,
                    space="lr=log(1e-4, 1e-1)",
                    pruner=pruner,
                    out_dir=out,
                    seed=seed,
                )
                study = optuna.load_study(study_name=res.study_name, storage=res.storage)
                runs.append((*_reach(study, target, steps), res.counts["pruned"]))
        rows.append((pruner, runs))
    return target, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer trials and repeats")
    parser.add_argument("--skip-pruning", action="store_true", help="measure throughput only")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, steps, repeats = (8, 300, 2) if args.quick else (12, 600, 3)
    torch.set_num_threads(max(1, (torch.get_num_threads() or 2) // 2))
    rates: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    for _ in range(repeats):  # interleaved
        for workers in (1, 2):
            rates[workers].append(_throughput(workers, trials, steps))
    med = {w: [statistics.median(r[i] for r in rates[w]) for i in (0, 1, 2)] for w in rates}
    table = Table(
        title=f"steplab tune throughput ({THROUGHPUT_TASK}, {trials} trials x {steps} steps)"
    )
    for col in (
        "workers",
        "trials/min end to end",
        "ratio",
        "trials/min steady",
        "ratio",
        "in flight",
        "target",
    ):
        table.add_column(col)
    table.add_row(
        "1", f"{med[1][0]:.1f}", "1.00", f"{med[1][1]:.1f}", "1.00", f"{med[1][2]:.2f}", ""
    )
    table.add_row(
        "2 (processes, shared SQLite)",
        f"{med[2][0]:.1f}",
        f"{med[2][0] / med[1][0]:.2f}",
        f"{med[2][1]:.1f}",
        f"{med[2][1] / med[1][1]:.2f}",
        f"{med[2][2]:.2f}",
        ">= 1.7",
    )
    console = Console()
    console.print(table)

    if args.skip_pruning:
        return
    ref, cap, seeds = (12, 20, [1]) if args.quick else (30, 40, [1, 2])
    target, rows = _pruning(ref, cap, steps, seeds)
    table = Table(
        title=f"cost of pruning: reach val_accuracy {target:.4f} (best of {ref} "
        f"unpruned trials, seed 0); medians over seeds {seeds}, cap {cap} trials"
    )
    for col in (
        "pruner",
        "trials to reach",
        "steps to reach",
        "ratio vs none",
        "pruned",
        "steps in all",
    ):
        table.add_column(col)
    base = None
    for pruner, runs in rows:
        reached = [r for r in runs if r[0] is not None]
        trials_to = statistics.median(r[0] for r in reached) if reached else None
        steps_to = statistics.median(r[1] for r in reached) if reached else None
        base = base if base is not None else steps_to
        ratio = f"{steps_to / base:.2f}" if steps_to and base else "-"
        table.add_row(
            pruner,
            f"{trials_to} ({len(reached)}/{len(runs)} reached)",
            str(steps_to if steps_to is not None else "-"),
            ratio,
            str(statistics.median(r[3] for r in runs)),
            str(statistics.median(r[2] for r in runs)),
        )
    console.print(table)


if __name__ == "__main__":
    main()
