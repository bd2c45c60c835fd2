"""``steplab checkpoint convert SRC DST``: distributed (sharded) checkpoint <-> single-process."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``steplab checkpoint convert``."""
    p = subparsers.add_parser(
        "convert",
        help="turn a distributed checkpoint into the single-process format, or back",
        description="Convert a sharded checkpoint (rank-*.safetensors + metadata.json + "
        "COMMITTED, written by several processes) into a single-process checkpoint "
        "(manifest.json + tensors.safetensors), or a single-process one into a sharded one "
        "that any number of processes loads. The direction follows from SRC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("src", help="checkpoint directory to convert (no default)")
    p.add_argument("dst", help="directory to create; must not exist (no default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert ``args.src`` into ``args.dst``; print the new path; exit code 0."""
    from steplab.state.sharded_convert import convert

    print(convert(args.src, args.dst))
    return 0
