"""The ``steplab`` command line.

The CLI holds no logic: each subcommand module parses its options, calls one
library function and prints. Subcommands live in their own modules and are
imported only when used, so ``steplab --help`` stays fast.

Every module in :data:`COMMANDS` exposes ``add_parser(subparsers)`` that adds
its parser and sets ``func`` (taking the parsed ``argparse.Namespace`` and
returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from steplab.errors import SteplabError

#: subcommand name -> module under steplab.cli that implements it
COMMANDS: dict[str, str] = {
    "train": "train",
    "compare": "compare",
    "tune": "tune",
    "lr-find": "lr_find",
    "inspect": "inspect",
    "tasks": "tasks",
    "optimizers": "optimizers",
    "checkpoint": "checkpoint",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="steplab",
        description="Optimizers you can trust, state you can move, comparisons you can believe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"steplab.cli.{module_name}")
        except ModuleNotFoundError as exc:  # a layer not built yet must not break the others
            if exc.name != f"steplab.cli.{module_name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from steplab import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        code: int = args.func(args)
    except SteplabError as exc:
        print(f"steplab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steplab {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
