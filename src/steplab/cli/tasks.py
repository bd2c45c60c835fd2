"""``steplab tasks``: list the tasks with their sizes, targets and defaults."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Add the ``tasks`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "tasks",
        help="list the built-in and registered tasks",
        description=(
            "List tasks: name, description, train/val/test sizes, number of parameters, "
            "target and default batch size, steps and Adam learning rate."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="tasks to show (a name or 'package.module:attribute'); default: all",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON for scripts instead of a table"
    )
    parser.set_defaults(func=run)


def _target(info: dict[str, Any]) -> str:
    t = info["target"]
    return f"{t['metric']} {'>=' if t['mode'] == 'max' else '<='} {t['value']:g}"


def _defaults(info: dict[str, Any]) -> str:
    d = info["defaults"]
    lr = "-" if d["lr"] is None else f"{d['lr']:g}"
    return f"batch {d['batch_size']}, {d['steps']} steps, lr {lr}"


def run(args: argparse.Namespace) -> int:
    """Print the tasks as a rich table, or JSON with ``--json``."""
    from steplab.tasks import describe_tasks

    infos = describe_tasks(args.names or None)
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    from rich.console import Console

    from steplab.cli.layout import print_listing

    columns = ("name", "description", "train/val/test", "params", "target", "defaults (adam)")
    rows = []
    for info in infos:
        sizes = info["sizes"]
        split = "-" if sizes is None else f"{sizes['train']}/{sizes['val']}/{sizes['test']}"
        rows.append((info["name"], info["description"], split, f"{info['n_params']:,}",
                     _target(info), _defaults(info)))
    print_listing(Console(), "steplab tasks", columns, rows, wide=140)
    return 0
