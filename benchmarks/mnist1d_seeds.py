"""Test accuracy of the MNIST-1D tasks at their defaults on 10 seeds, through ``fit``.

For ``mnist1d-cnn``, ``mnist1d-mlp`` and ``mnist1d-logreg`` (one torch thread),
trains seeds 0-9 at the task's defaults and reports each seed's final test
accuracy, the mean and the minimum, against the MNIST-1D paper (94 / 68 / 32%)
and the goals: CNN mean >= 93.5% and min >= 92%; MLP and logistic regression
within 2 points of the paper on every seed; and the median CPU seconds per
run (one thread, evaluation included). Writes the table into
``docs/tasks.md`` (block ``mnist1d-seeds``).

Usage: ``python benchmarks/mnist1d_seeds.py [--tasks mnist1d-cnn,...] [--no-docs]``
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

from steplab.tasks import get_task
from steplab.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docblock import write_block

PAPER = {"mnist1d-cnn": 0.94, "mnist1d-mlp": 0.68, "mnist1d-logreg": 0.32}


def goal(task: str, accs: list[float]) -> str:
    if task == "mnist1d-cnn":
        ok = statistics.mean(accs) >= 0.935 and min(accs) >= 0.92
        return f"mean >= 93.5% and min >= 92%: {'met' if ok else 'NOT met'}"
    ok = all(abs(a - PAPER[task]) <= 0.02 for a in accs)
    return f"every seed within 2 points of {PAPER[task]:.0%}: {'met' if ok else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(PAPER), help="comma-separated MNIST-1D tasks")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["| task | defaults (Adam) | seeds 0-9 test accuracy (%) | mean | min | goal "
             "| CPU s/run |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.tasks.split(","):
        task = get_task(name)
        accs, cpu = [], []
        for seed in range(10):
            start = time.process_time()
            result = fit(TrainConfig(task=name, seed=seed, eval_splits=("test",)), progress=False)
            cpu.append(time.process_time() - start)
            accs.append(result.summary["metrics"]["test_accuracy"])
        lines.append(
            f"| `{name}` | batch {task.default_batch_size}, {task.default_steps} steps, lr "
            f"{task.default_lr} | {' '.join(f'{a * 100:.1f}' for a in accs)} | "
            f"{statistics.mean(accs) * 100:.2f} | {min(accs) * 100:.1f} | {goal(name, accs)} "
            f"| {statistics.median(cpu):.1f} |")
        print(lines[-1], flush=True)
    command = "python benchmarks/mnist1d_seeds.py " + " ".join(sys.argv[1:])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    body = f"Measured {when} UTC with `{command.strip()}` (torch {torch.__version__}, 1 thread, " \
           "through `fit`):\n\n" + "\n".join(lines)
    if not args.no_docs:
        write_block("tasks.md", "mnist1d-seeds", "benchmarks/mnist1d_seeds.py", body)


if __name__ == "__main__":
    main()
