"""``steplab landscape RUN``: the loss landscape around a run's final weights."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``steplab landscape``."""
    p = subparsers.add_parser(
        "landscape",
        help="loss landscape of a run: init->final line, random and PCA planes, the path",
        description="Evaluate the training loss on the line from the initial to the final "
        "weights (Goodfellow et al. 2015), on a grid along two filter-normalised random "
        "directions around the final weights (Li et al. 2018), and on the PCA plane of the "
        "run's checkpoints with the optimizer's path drawn on it. Needs a run trained with "
        "--checkpoint-every (and --keep-checkpoints all for the whole path). Writes "
        "landscape.json and landscape.png. Cost: (resolution + 2 * resolution^2) points, "
        "each averaged over --batches training batches.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", help="run directory (--out of steplab train)")
    p.add_argument("--out", default=None, help="output directory; None = RUN/landscape")
    p.add_argument("--resolution", type=int, default=21, help="grid points per axis")
    p.add_argument("--batches", type=int, default=4,
                   help="training batches (of the run's batch size) the loss averages over")
    p.add_argument("--span", type=float, default=1.0,
                   help="the random-plane grid covers [-span, span] along each direction")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions and batches")
    p.add_argument("--chunk", type=int, default=64, help="grid points per batched forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the output paths as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute the landscape with a progress bar; print where it was written."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from steplab.observe.landscape_run import landscape

    with Progress("landscape", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=args.quiet, transient=True) as bar:
        task = bar.add_task("points", total=None)
        result = landscape(args.run, args.out, resolution=args.resolution, batches=args.batches,
                           span=args.span, seed=args.seed, chunk=args.chunk,
                           on_progress=lambda done, total: bar.update(task, completed=done,
                                                                       total=total))
    if args.json:
        print(json.dumps({"json": str(result.json_path), "png": str(result.png_path)}))
    else:
        print(result.png_path)
        print(result.json_path)
    return 0
