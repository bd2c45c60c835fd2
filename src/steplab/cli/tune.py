"""``steplab tune``: hyperparameter search with Optuna (one machine) or Ray Tune (a cluster)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add the ``tune`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "tune",
        help="tune an optimizer's hyperparameters on a task (Optuna or Ray Tune)",
        description=(
            "Search the optimizer's hyperparameters with Optuna's TPE sampler, pruning on the "
            "validation metric; the study lives in --storage, so running the same command "
            "again continues it until it holds --trials trials with a result. Prints the best "
            "configuration as an optimizer spec that `steplab train`/`compare` accept and "
            "writes best.json, history.png and importance.png to --out. See docs/tuning.md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--task", required=True, help="task name (see `steplab tasks`)")
    add("--optimizer", default="adam", help="base optimizer spec; the space overrides it")
    add("--trials", type=int, default=20, help="size of the study (completed+pruned+diverged)")
    add(
        "--space",
        default=None,
        help='search space, e.g. "lr=log(1e-5,1), betas.0=(0.8,0.99)" '
        "(default %(default)s: the optimizer's registry space for this many trials)",
    )
    add(
        "--pruner",
        default="median",
        choices=["median", "hyperband", "none"],
        help="Optuna pruner on the intermediate validation metric",
    )
    add(
        "--storage",
        default=None,
        help="Optuna storage URL (default %(default)s: sqlite:///OUT/study.db)",
    )
    add(
        "--study-name", default=None, help="study name (default %(default)s: task-optimizer-<hash>)"
    )
    add(
        "--backend",
        default="optuna",
        choices=["optuna", "ray"],
        help="optuna (processes sharing the storage) or ray (OptunaSearch + ASHA)",
    )
    add(
        "--address",
        default=None,
        help="Ray cluster address (default %(default)s: start a local Ray)",
    )
    add("--workers", type=int, default=1, help="parallel worker processes / concurrent trials")
    add("--steps", type=int, default=None, help="steps per trial (default %(default)s: the task's)")
    add("--batch-size", type=int, default=None, help="batch size (default %(default)s: the task's)")
    add(
        "--eval-every",
        type=int,
        default=None,
        help="steps between evaluations (default %(default)s: 1/10)",
    )
    add("--schedule", default="constant", help="learning-rate schedule of every trial")
    add(
        "--metric",
        default=None,
        help="validation metric (default %(default)s: the task target's val_ twin)",
    )
    add("--seed", type=int, default=0, help="training seed of every trial and sampler seed")
    add("--data-dir", default=None, help="where file-based tasks find data")
    add("--out", default="tune", help="output directory")
    add("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the study; print the best spec (or JSON). Returns 0, or 1 if no trial completed."""
    from steplab.extras import require
    from steplab.study.tuning import tune

    optuna = require("optuna", "steplab tune")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = tune(
        args.task,
        args.optimizer,
        args.trials,
        space=args.space,
        pruner=args.pruner,
        storage=args.storage,
        study_name=args.study_name,
        backend=args.backend,
        address=args.address,
        workers=args.workers,
        steps=args.steps,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        schedule=args.schedule,
        metric=args.metric,
        seed=args.seed,
        out_dir=args.out,
        data_dir=args.data_dir,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0 if result.best_spec is not None else 1
    _print_table(result.to_dict())
    return 0 if result.best_spec is not None else 1


def _print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"steplab tune: {res['study_name']} ({res['backend']})")
    table.add_column("field")
    table.add_column("value")
    counts = ", ".join(f"{v} {k}" for k, v in res["counts"].items() if v)
    rows = [
        ("trials", counts),
        ("space", res["space"]),
        ("metric", res["metric"]),
        ("best value", "-" if res["best_value"] is None else f"{res['best_value']:.6g}"),
        ("best trial", str(res["best_trial"])),
        ("storage", res["storage"]),
    ]
    if res["importance"]:
        rows.append(("importance", ", ".join(f"{k} {v:.2f}" for k, v in res["importance"].items())))
    if res["at_boundary"]:
        rows.append(("warning", f"best {', '.join(res['at_boundary'])} at the edge of the space"))
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    print(f"best: {res['best_spec'] or 'no trial completed'}  ({res['out_dir']}/best.json)")
