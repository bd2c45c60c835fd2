"""``steplab checkpoint export PATH --to torch|safetensors --out DIR``: files for deployment."""

from __future__ import annotations

import argparse
import json
from typing import Any

from steplab.state.export import EXPORT_FORMATS

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``steplab checkpoint export``."""
    p = subparsers.add_parser(
        "export",
        help="write model weights and optimizer state as plain torch/safetensors files",
        description="Export a checkpoint for deployment: model weights as model.safetensors "
        "(--to safetensors) or model.pt (--to torch), and the optimizer state as optimizer.pt, "
        "a torch state_dict that torch.load(weights_only=True) reads. No steplab is needed "
        "to load them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("path", help="checkpoint directory or Checkpointer root (no default)")
    p.add_argument("--to", default="safetensors", choices=EXPORT_FORMATS,
                   help="format of the model weights")
    p.add_argument("--out", required=True, help="directory to write into (required)")
    p.add_argument("--json", action="store_true", help="print the written files as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export ``args.path``; print the files written; exit code 0."""
    from steplab.checkpoint import export

    files = export(args.path, args.out, to=args.to)
    if args.json:
        print(json.dumps([str(f) for f in files]))
    else:
        for f in files:
            print(f)
    return 0
