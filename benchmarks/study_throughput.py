"""Study throughput: runs per minute with 2 workers against 1, and whether vmap batching pays.

1. A small study's runs (the default study's run shape: MNIST-1D CNN, 600
   steps, batch 64, evaluation every 50 steps; distinct learning rates) go
   through :func:`steplab.study.executor.run_jobs` with a local pool of 1 and
   of 2 workers, interleaved, after one warm-up pool (the fork server's
   imports are paid once per process). Target: 2 workers >= 1.7x the runs per
   minute of 1.
2. ``K`` seeds of one small model trained together with ``torch.func.vmap``
   over stacked parameters (one SGD step = one batched forward/backward)
   against the same ``K`` models stepped one after another, one thread each.

Run: ``.venv/bin/python benchmarks/study_throughput.py [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from steplab.study.executor import LocalExecutor, RunJob, run_jobs


def _jobs(root: Path, n: int, steps: int) -> list[RunJob]:
    jobs = []
    for i in range(n):
        config = {
            "task": "mnist1d-cnn",
            "optimizer": "adam",
            "lr": 1e-3 * (1 + i),
            "steps": steps,
            "batch_size": 64,
            "eval_every": 50,
        }
        jobs.append(RunJob(config, str(root / f"run{i}"), f"run {i}"))
    return jobs


def runs_per_minute(workers: int, n: int, steps: int) -> float:
    """Runs per minute of ``n`` fresh runs on a pool of ``workers`` (pool start included)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_jobs(LocalExecutor(workers), _jobs(Path(tmp), n, steps), lambda j, s: [], n, False)
        return n / (time.perf_counter() - start) * 60.0


def _batch(k: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 40, generator=g), torch.randint(0, 10, (batch,), generator=g)


def sequential_steps_per_s(task: Any, k: int, steps: int, batch: int) -> float:
    """Model-steps per second of ``k`` models stepped one after another (plain SGD)."""
    models = [task.build_model(torch.Generator().manual_seed(s)) for s in range(k)]
    x, y = _batch(k, batch)
    start = time.perf_counter()
    for _ in range(steps):
        for model in models:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(model.parameters()))
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads, strict=True):
                    p.sub_(0.01 * g)
    return k * steps / (time.perf_counter() - start)


def vmap_steps_per_s(task: Any, k: int, steps: int, batch: int) -> float:
    """Model-steps per second of ``k`` models as one ``vmap``-ed functional SGD step."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    models = [task.build_model(torch.Generator().manual_seed(s)) for s in range(k)]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    base = copy.deepcopy(models[0]).to("meta")
    x, y = _batch(k, batch)

    def loss_fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        out = functional_call(base, (p, b), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    step = vmap(grad(loss_fn), in_dims=(0, 0))
    step(params, buffers)  # warm-up: the first call traces the batching rules
    start = time.perf_counter()
    for _ in range(steps):
        grads = step(params, buffers)
        params = {name: p - 0.01 * grads[name] for name, p in params.items()}
    return k * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (default: off)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, steps, repeats = (6, 200, 1) if args.quick else (12, 600, 3)
    runs_per_minute(2, 2, 20)  # warm-up: starts the fork server once
    pools: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for workers in (1, 2):
            pools[workers].append(runs_per_minute(workers, n, steps))
    from steplab.tasks import get_task

    k, vsteps = (8, 30) if args.quick else (8, 100)
    vm: dict[str, dict[str, list[float]]] = {}
    for name in ("mnist1d-mlp", "mnist1d-cnn"):
        task = get_task(name)
        vm[name] = {"loop": [], "vmap": []}
        for _ in range(repeats):
            vm[name]["loop"].append(sequential_steps_per_s(task, k, vsteps, 64))
            vm[name]["vmap"].append(vmap_steps_per_s(task, k, vsteps, 64))
    _print(pools, vm, n, steps, k)


def _print(
    pools: dict[int, list[float]], vm: dict[str, dict[str, list[float]]], n: int, steps: int, k: int
) -> None:
    import os

    console = Console()
    console.print(
        f"load average before the tables: {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (other processes take cores from the pool)"
    )
    one = statistics.median(pools[1])
    table = Table(
        title=f"study throughput: {n} MNIST-1D CNN runs of {steps} steps "
        f"(medians of {len(pools[1])} interleaved repeats)"
    )
    for col in ("executor", "runs/min", "vs 1 worker", "target"):
        table.add_column(col, justify="right")
    for workers, values in pools.items():
        med = statistics.median(values)
        table.add_row(
            f"local, {workers} worker(s)",
            f"{med:.1f}",
            f"{med / one:.2f}x",
            ">= 1.70x" if workers == 2 else "baseline",
        )
    console.print(table)
    vtable = Table(title=f"{k} seeds at once: torch.func.vmap vs a loop (1 thread, batch 64)")
    for col in ("model", "loop model-steps/s", "vmap model-steps/s", "vmap vs loop"):
        vtable.add_column(col, justify="right")
    for name, res in vm.items():
        loop, vmap_ = statistics.median(res["loop"]), statistics.median(res["vmap"])
        vtable.add_row(name, f"{loop:.0f}", f"{vmap_:.0f}", f"{vmap_ / loop:.2f}x")
    console.print(vtable)


if __name__ == "__main__":
    main()
