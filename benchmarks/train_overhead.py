"""Overhead of ``steplab.train.fit`` against a minimal hand-written PyTorch loop.

Both train ``mnist1d-cnn`` with Adam (fused, lr 1e-3, batch 100) for the same
number of steps, shuffle with a seeded ``torch.Generator`` each epoch, log the
loss every 100 steps to a JSON-lines file, checkpoint every 500 steps and
evaluate once at the end. ``fit`` additionally checks every step for
non-finite loss and gradients, steps an LR scheduler, records gradient norms
and update ratios at log steps, and writes steplab's checkpoint format
(safetensors + manifest, fsynced). Runs are interleaved (hand, fit, hand,
fit, ...) and each side's median wall time is reported; target: fit <= 1.05x.

Then prints steps/s of ``fit`` on every built-in task (``mnist``/``cifar10``
only when their files are under ``--data-dir``).

``--task byte-lm`` measures the same on the byte-level transformer LM (Adam
lr 3e-3, batch 32 windows of 64 bytes) and skips the per-task table.

Usage: ``python benchmarks/train_overhead.py [--quick] [--threads N] [--data-dir DIR]
[--task NAME] [--steps N] [--repeats N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from steplab.errors import SpecError
from steplab.tasks import get_task, list_tasks
from steplab.train import TrainConfig, fit

TASK, LR, BATCH, LOG_EVERY, CKPT_EVERY = "mnist1d-cnn", 1e-3, 100, 100, 500
#: task -> (Adam lr, batch) of the overhead measurement
SETTINGS = {"mnist1d-cnn": (1e-3, 100), "byte-lm": (3e-3, 32)}


def hand_loop(steps: int, out: Path, seed: int = 0) -> None:
    """A minimal PyTorch loop doing the same work as fit's essentials."""
    task = get_task(TASK)
    data = task.load_data()
    model = task.build_model(torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    per_epoch = n // BATCH
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "metrics.jsonl", "a")  # noqa: SIM115
    perm = torch.randperm(n, generator=gen)
    for step in range(1, steps + 1):
        pos = (step - 1) % per_epoch
        if pos == 0 and step > 1:
            perm = torch.randperm(n, generator=gen)
        idx = perm[pos * BATCH : (pos + 1) * BATCH]
        loss = task.loss(model(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0:
            log.write(json.dumps({"step": step, "train_loss": loss.item()}) + "\n")
            log.flush()
        if step % CKPT_EVERY == 0:
            tmp = out / "ckpt.pt.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
            os.replace(tmp, out / "ckpt.pt")
    task.metrics(model, data.x_test, data.y_test)
    log.close()


def fit_run(steps: int, out: Path, seed: int = 0) -> None:
    """``fit`` on the same work."""
    cfg = TrainConfig(task=TASK, optimizer="adam", lr=LR, batch_size=BATCH, steps=steps,
                      log_every=LOG_EVERY, checkpoint_every=CKPT_EVERY, eval_every=steps,
                      eval_splits=("test",), seed=seed)
    fit(cfg, out, progress=False)


def timed(fn: Callable[[int, Path], None], steps: int, out: Path) -> tuple[float, float]:
    """Run ``fn(steps, out)``; return (wall seconds, CPU seconds of this process)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn(steps, out)
    return time.perf_counter() - w0, time.process_time() - c0


def overhead(steps: int, repeats: int, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hand_loop(50, Path(tmp) / "warm-h")  # warm caches, imports, kernels
        fit_run(50, Path(tmp) / "warm-f")
        hand, ours = [], []
        for i in range(repeats):  # interleaved: hand, fit, hand, fit, ...
            hand.append(timed(hand_loop, steps, Path(tmp) / f"h{i}"))
            ours.append(timed(fit_run, steps, Path(tmp) / f"f{i}"))
    table = Table(title=f"fit() vs hand-written loop: {TASK}, {steps} steps, median of {repeats}")
    for col in ("clock", "statistic", "hand s", "fit s", "fit / hand"):
        table.add_column(col, justify="right" if col != "clock" else "left")
    for k, clock in enumerate(("wall", "CPU")):
        for stat, fn in (("median", statistics.median), ("min", min)):
            h, f = fn(r[k] for r in hand), fn(r[k] for r in ours)
            table.add_row(clock, stat, f"{h:.3f}", f"{f:.3f}", f"{f / h:.3f}x")
        pairs = [o[k] / m[k] for m, o in zip(hand, ours, strict=True)]
        table.add_row(clock, "pair ratios", "", "", " ".join(f"{p:.2f}" for p in pairs))
    console.print(table)
    console.print("target: fit <= 1.05x the hand-written loop, wall time, median. On a shared "
                  "machine wall (and even CPU) times move with other processes' load; the "
                  "minimum CPU time is the least disturbed estimate of each loop's own cost.")


def per_task(steps: int, data_dir: str | None, console: Console) -> None:
    table = Table(title=f"fit() steps/s per built-in task ({steps} steps, default batch)")
    for col in ("task", "batch", "steps/s", "step ms (median)"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for name in list_tasks():
        try:
            task = get_task(name, data_dir)
            task.load_data(data_dir)
        except SpecError:
            table.add_row(name, "-", "skipped (no data files)", "-")
            continue
        cfg = TrainConfig(task=name, steps=steps, data_dir=data_dir, eval_every=steps,
                          eval_splits=("test",))
        s = fit(cfg, progress=False).summary
        table.add_row(name, str(task.default_batch_size), f"{s['steps_per_s']:.0f}",
                      f"{s['step_time_ms']:.2f}")
    console.print(table)


def main() -> None:
    global TASK, LR, BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps, 3 repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--data-dir", default=None, help="where mnist/cifar10 files are")
    parser.add_argument("--task", default=TASK, choices=sorted(SETTINGS),
                        help=f"task of the overhead measurement (default {TASK})")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 1000)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per side (default 7)")
    parser.add_argument("--write-docs", action="store_true",
                        help="write the tables into docs/benchmarks.md (block train-overhead-TASK)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(record=True, width=100)
    console.print(f"torch {torch.__version__}, {args.threads} thread(s)")
    steps, repeats = (300, 3) if args.quick else (1000, 7)
    steps, repeats = args.steps or steps, args.repeats or repeats
    TASK, (LR, BATCH) = args.task, SETTINGS[args.task]
    overhead(steps, repeats, console)
    if args.task == "mnist1d-cnn":
        per_task(50 if args.quick else 200, args.data_dir, console)
    if args.write_docs:
        import datetime
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from docblock import write_block

        command = "python benchmarks/train_overhead.py " + " ".join(sys.argv[1:])
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
        body = f"Measured {when} UTC with `{command}`:\n\n```\n{console.export_text()}```"
        write_block("benchmarks.md", f"train-overhead-{args.task}",
                    "benchmarks/train_overhead.py", body)


if __name__ == "__main__":
    main()
