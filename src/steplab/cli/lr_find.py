"""``steplab lr-find``: the LR range test on a built-in task (Smith 2015/2017)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add the ``lr-find`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "lr-find",
        help="suggest a learning rate with the LR range test",
        description=(
            "Train briefly while raising the learning rate exponentially from --min-lr to "
            "--max-lr; stop when the smoothed loss exceeds --stop-factor times its best. "
            "Prints the suggestion (the middle of the valley floor, with the steepest-descent "
            "rule beside it) and writes lr_find.json and lr_find.png to --out. See docs/tuning.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", required=True, help="task name (see `steplab tasks`)")
    parser.add_argument("--optimizer", default="adam", help="optimizer spec; its lr is swept")
    parser.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate")
    parser.add_argument("--max-lr", type=float, default=10.0, help="last learning rate")
    parser.add_argument("--steps", dest="num_steps", type=int, default=100,
                        help="steps of the full sweep")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="examples per step (default %(default)s: the task's)",
    )
    parser.add_argument("--beta", type=float, default=0.95, help="EMA coefficient of the loss")
    parser.add_argument(
        "--stop-factor", type=float, default=4.0, help="stop once loss > this x its best"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and batch order")
    parser.add_argument("--data-dir", default=None, help="where file-based tasks find data")
    parser.add_argument("--out", default="lr_find", help="directory for lr_find.json/.png")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the range test; print one line (or JSON). Returns 0, or 1 with no clear answer."""
    from steplab.study.lr_find import lr_range_test_task

    result = lr_range_test_task(
        args.task,
        args.optimizer,
        batch_size=args.batch_size,
        seed=args.seed,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        num_steps=args.num_steps,
        beta=args.beta,
        stop_factor=args.stop_factor,
        data_dir=args.data_dir,
        out_dir=args.out,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{args.task}, {args.optimizer}: {result.summary_line()} -> {args.out}/lr_find.png")
    return 0 if result.suggested_lr is not None else 1
