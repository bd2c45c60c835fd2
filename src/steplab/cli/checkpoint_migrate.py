"""``steplab checkpoint migrate PATH``: upgrade a checkpoint to the current format."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``steplab checkpoint migrate``."""
    p = subparsers.add_parser(
        "migrate",
        help="upgrade a checkpoint to the current format",
        description="Upgrade a checkpoint directory along the registered migration chain "
        "(e.g. steplab.checkpoint/1 -> /2). Every tensor is verified first; the checkpoint "
        "is replaced atomically (or written to --out).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", help="checkpoint directory (no default)")
    p.add_argument("--out", default=None,
                   help="write the upgraded checkpoint here; None = replace PATH in place")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Migrate ``args.path``; print what was done; exit code 0."""
    from steplab.checkpoint import migrate

    report = migrate(args.path, args.out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    elif not report.steps:
        print(f"{report.source}: already {report.to_format}"
              + (f"; copied to {report.target}" if report.target != report.source else ""))
    else:
        print(f"{report.source}: {' then '.join(report.steps)}; written to {report.target}")
    return 0
