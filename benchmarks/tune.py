"""Benchmark ``steplab tune``: parallel throughput and the cost of pruning.

1. Throughput: trials per minute with 2 worker processes sharing one SQLite
   study against 1 worker (target >= 1.7x). Both settings run the same number of
   trials; each worker uses ``cpu_count // workers`` torch threads (the single
   worker runs in this process with the same thread count as one of the two).
   Interleaved repeats, medians.
2. Pruning: 30 trials without pruning set a reference best value. Studies with
   the median and Hyperband pruners (same sampler seed) then run until they
   reach that value or their trial cap; we report the trials and the training
   steps spent to get there, against the unpruned study's.

Run: ``.venv/bin/python benchmarks/tune.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from steplab.study.tune import tune

TASK = "mnist1d-logreg"


def _throughput(workers: int, trials: int, steps: int) -> float:
    """Trials per minute of one fresh study."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        tune(
            TASK,
            "adam",
            trials,
            steps=steps,
            space="lr=log(1e-4, 1e-1)",
            pruner="none",
            workers=workers,
            out_dir=out,
        )
        return 60.0 * trials / (time.perf_counter() - start)


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


def _pruning(trials: int, cap: int, steps: int) -> list[tuple[str, int | None, int, int, int]]:
    rows = []
    target = None
    for pruner, n in (("none", trials), ("median", cap), ("hyperband", cap)):
        with tempfile.TemporaryDirectory() as out:
            res = tune(
                TASK,
                "adam",
                n,
                steps=steps,
                space="lr=log(1e-4, 1e-1)",
                pruner=pruner,
                out_dir=out,
                seed=1,
            )
            study = optuna.load_study(study_name=res.study_name, storage=res.storage)
            if target is None:
                target = float(res.best_value or 0.0)
            reached, at_steps, total = _reach(study, target, steps)
            rows.append((pruner, reached, at_steps, total, res.counts["pruned"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer trials and repeats")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, steps, repeats = (6, 150, 2) if args.quick else (12, 300, 3)
    torch.set_num_threads(max(1, (torch.get_num_threads() or 2) // 2))
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):  # interleaved
        for workers in (1, 2):
            rates[workers].append(_throughput(workers, trials, steps))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    table = Table(title=f"steplab tune throughput ({TASK}, {trials} trials x {steps} steps)")
    for col in ("workers", "trials/min (median)", "ratio vs 1 worker", "target"):
        table.add_column(col)
    table.add_row("1", f"{one:.1f}", "1.00", "")
    table.add_row("2 (processes, shared SQLite)", f"{two:.1f}", f"{two / one:.2f}", ">= 1.7")
    console = Console()
    console.print(table)

    ref, cap = (12, 24) if args.quick else (30, 60)
    rows = _pruning(ref, cap, steps)
    base_steps = rows[0][2]
    table = Table(title=f"cost of pruning: reach the best val_accuracy of {ref} unpruned trials")
    for col in (
        "pruner",
        "trials to reach",
        "steps to reach",
        "ratio vs none",
        "pruned",
        "steps in all",
    ):
        table.add_column(col)
    for pruner, reached, at_steps, total, pruned in rows:
        ratio = f"{at_steps / base_steps:.2f}" if reached else "not reached"
        table.add_row(
            pruner,
            str(reached or f"> {cap}"),
            str(at_steps if reached else "-"),
            ratio,
            str(pruned),
            str(total),
        )
    console.print(table)


if __name__ == "__main__":
    main()
