"""Cost of seeing inside a run: the state monitor + TensorBoard in fit, and steplab landscape.

1. ``fit`` on ``mnist1d-mlp`` (task defaults: Adam lr 0.005, batch 100), three
   settings interleaved in one run, each timed over the whole ``fit`` call
   (wall and process CPU time, TensorBoard's writer thread included):

   - ``--no-monitor --no-tensorboard``: the baseline;
   - defaults: monitor on, ``state_every=200``, histograms every 2000 steps,
     TensorBoard files (target: <= 1.05x the baseline);
   - ``state_every=1``: the state monitor at every step (histograms every 10).

2. ``steplab landscape`` on an ``mnist1d-cnn`` run (trained here for
   ``--cnn-steps`` steps with a checkpoint every ``--cnn-steps // 4``): a
   41 x 41 grid (``--resolution``), the loss over 4 batches of 200, with
   ``torch.func`` + ``vmap`` over chunks of 64 points, against the baseline
   of one model per point (``load_state_dict`` + forward), timed on the first
   ``--loop-points`` points and scaled per point.

Medians of interleaved repeats; one torch intra-op thread for fit (as the
study executor runs), ``--landscape-threads`` (default 2) for the landscape.

Usage: ``python benchmarks/observe.py [--quick] [--repeats N] [--steps N]``
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from steplab.observe.landscape import evaluate_points, filter_normalized_direction
from steplab.observe.landscape_run import _batches, landscape
from steplab.tasks import get_task
from steplab.train import TrainConfig, fit

SETTINGS: dict[str, dict[str, Any]] = {
    "--no-monitor (baseline)": {"monitor": False, "tensorboard": False},
    "defaults (monitor + TensorBoard)": {},
    "state monitor every step": {"state_every": 1},
}


def time_fit(steps: int, repeats: int, root: Path) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each setting's fit, interleaved ``repeats`` times."""
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in SETTINGS}
    for r in range(repeats):
        order = list(SETTINGS)
        order = order[r % len(order):] + order[:r % len(order)]  # rotate the order each repeat
        for name in order:
            cfg = TrainConfig(task="mnist1d-mlp", steps=steps, seed=r, **SETTINGS[name])
            out = root / f"{r}-{abs(hash(name))}"
            w0, c0 = time.perf_counter(), time.process_time()
            fit(cfg, out, progress=False)
            times[name]["wall"].append(time.perf_counter() - w0)
            times[name]["cpu"].append(time.process_time() - c0)
    return times


def fit_table(times: dict[str, dict[str, list[float]]]) -> Table:
    base = {c: statistics.median(times["--no-monitor (baseline)"][c]) for c in ("wall", "cpu")}
    table = Table(title="fit on mnist1d-mlp: monitor + TensorBoard overhead")
    for col in ("setting", "wall median s", "wall x", "CPU median s", "CPU x", "target"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name, t in times.items():
        wall, cpu = statistics.median(t["wall"]), statistics.median(t["cpu"])
        target = "<= 1.05x" if name.startswith("defaults") else ""
        table.add_row(name, f"{wall:.2f}", f"{wall / base['wall']:.3f}x", f"{cpu:.2f}",
                      f"{cpu / base['cpu']:.3f}x", target)
    return table


def cnn_run(root: Path, steps: int) -> Path:
    """A short mnist1d-cnn run with a few checkpoints (the landscape's input)."""
    run = root / "cnn"
    cfg = TrainConfig(task="mnist1d-cnn", steps=steps, checkpoint_every=max(1, steps // 4),
                      keep_checkpoints=None, tensorboard=False)
    fit(cfg, run, progress=False)
    return run


def loop_per_point(run: Path, points: int) -> float:
    """Seconds per grid point with one model per point (load_state_dict + forward)."""
    task = get_task("mnist1d-cnn")
    model = task.build_model(torch.Generator().manual_seed(0)).eval()
    center = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized_direction(center, gen), filter_normalized_direction(center, gen)
    data = _batches(task, {}, 4, 0)
    grid = torch.linspace(-1, 1, points)
    t0 = time.perf_counter()
    with torch.no_grad():
        for a in grid:
            copy = task.build_model(torch.Generator().manual_seed(0)).eval()
            copy.load_state_dict({n: center[n] + a * d1[n] + a * d2[n] for n in center})
            total = sum(float(task.loss(copy(x), y)) * len(y) for x, y in data)
            del total
    return (time.perf_counter() - t0) / points


def vmap_per_point(run: Path, points: int) -> float:
    """Seconds per grid point with evaluate_points (the same points as the loop)."""
    task = get_task("mnist1d-cnn")
    model = task.build_model(torch.Generator().manual_seed(0))
    center = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized_direction(center, gen), filter_normalized_direction(center, gen)
    data = _batches(task, {}, 4, 0)
    grid = torch.linspace(-1, 1, points, dtype=torch.float64)
    t0 = time.perf_counter()
    evaluate_points(model, task.loss, data, center, [d1, d2], torch.stack([grid, grid], 1))
    return (time.perf_counter() - t0) / points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats and points")
    parser.add_argument("--repeats", type=int, default=None, help="fit repeats (default 7)")
    parser.add_argument("--steps", type=int, default=None, help="fit steps (default 600)")
    parser.add_argument("--resolution", type=int, default=41, help="landscape grid per axis")
    parser.add_argument("--cnn-steps", type=int, default=200, help="steps of the cnn run")
    parser.add_argument("--loop-points", type=int, default=64, help="points for the loop baseline")
    parser.add_argument("--landscape-threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    steps = args.steps or (200 if args.quick else 600)
    console = Console()
    console.print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, torch "
                  f"{torch.__version__}, fit: {steps} steps x {repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.set_num_threads(1)
        console.print(fit_table(time_fit(steps, repeats, root)))
        run = cnn_run(root, 40 if args.quick else args.cnn_steps)
        torch.set_num_threads(args.landscape_threads)
        points = 16 if args.quick else args.loop_points
        loop, vmap = loop_per_point(run, points), vmap_per_point(run, points)
        t0 = time.perf_counter()
        result = landscape(run, root / "ls", resolution=args.resolution, batches=4)
        total = time.perf_counter() - t0
    n_grid = args.resolution**2
    n_all = args.resolution + n_grid * (2 if "pca_plane" in result.data else 1)
    table = Table(title=f"steplab landscape on mnist1d-cnn ({args.landscape_threads} threads, "
                        f"{result.data['examples']} examples per point)")
    for col in ("measure", "value", "note"):
        table.add_column(col, justify="left" if col != "value" else "right")
    table.add_row("vmap per point", f"{vmap * 1e3:.2f} ms", "evaluate_points, chunks of 64")
    table.add_row("model copy per point", f"{loop * 1e3:.2f} ms", "baseline, same points")
    table.add_row("vmap / copy", f"{vmap / loop:.2f}x", "lower is better")
    table.add_row(f"{args.resolution}x{args.resolution} grid (one plane)",
                  f"{total * n_grid / n_all:.1f} s", "share of the full command")
    table.add_row(f"whole command ({n_all} points)", f"{total:.1f} s",
                  "line + random plane + PCA plane + PNG")
    console.print(table)


if __name__ == "__main__":
    main()
