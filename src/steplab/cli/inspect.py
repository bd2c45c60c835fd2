"""``steplab inspect PATH``: what the optimizer state in a checkpoint holds, and how big it is."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from steplab.state import inspect_checkpoint


def add_parser(subparsers: Any) -> None:
    """Register ``steplab inspect``."""
    parser = subparsers.add_parser(
        "inspect",
        help="show the optimizer state inside a checkpoint",
        description="Show per-parameter optimizer buffers, their sizes and statistics "
        "(mean |m|, RMS of v, effective step size) for a checkpoint directory, or for the "
        "latest good checkpoint under a Checkpointer root. The model is not needed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("path", help="checkpoint directory or Checkpointer root (no default)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead of tables (default: tables)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report for ``args.path``; exit code 0."""
    report = inspect_checkpoint(args.path)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        Console().print(report)
    return 0
