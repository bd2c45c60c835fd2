"""The ``steplab`` command line.

The CLI holds no logic: each subcommand module parses its options, calls one
library function and prints. Subcommands live in their own modules and are
imported only when used, so ``steplab --help`` stays fast.

Every module in :data:`COMMANDS` exposes ``add_parser(subparsers)`` that adds
its parser and sets ``func`` (taking the parsed ``argparse.Namespace`` and
returning an exit code).

:func:`main` is the boundary (:mod:`steplab.cli.boundary`): whatever a
command raises ends as exit code 2 and one line ``steplab <cmd>: error: ...``
(Ctrl-C: 130), with the traceback only under ``--debug``; every subcommand,
also one added later, gets ``--debug`` and this guard without doing anything.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from steplab.cli.boundary import Parser, command_name, finish_parsers, run_command

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
    "plot": "plot",
    "landscape": "landscape",
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = Parser(
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
    finish_parsers(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (2 for bad input, 130 for Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from steplab import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    name = command_name(args, f"steplab {args.command}")
    func = getattr(args, "func", None)
    if func is None:  # a command group (e.g. `steplab checkpoint`) without its subcommand
        getattr(args, "_steplab_parser", parser).print_help()
        return 2
    return run_command(func, args, name, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
