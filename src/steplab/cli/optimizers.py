"""``steplab optimizers``: every optimizer steplab builds by name, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from steplab.cli.layout import print_listing
from steplab.errors import SpecError
from steplab.optim import OPTIMIZERS
from steplab.optim.paths import implementation_paths


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_format(v) for v in value) + ")"
    return (
        repr(value)
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def _space(space: dict[str, Any]) -> str:
    return "; ".join(
        f"{k} {lo:g}..{hi:g} {scale} (>= {n} trials)" for k, (lo, hi, scale, n) in space.items()
    )


def _bytes(info: dict[str, Any]) -> str:
    """fp32 bytes per parameter, then each lean ``state=`` form's (large tensors)."""
    lean = info.get("state_bytes") or {}
    forms = ", ".join(f"{k} {v:.3g}" for k, v in lean.items() if k != "fp32")
    return f"{info['bytes_per_param']}" + (f" ({forms})" if forms else "")


def _lean_paths(name: str, paths: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per ``state=`` form of ``name``, its path (only the Adam family compiles bf16)."""
    chunked = {"small": "chunked", "large": "chunked", "why": "torch ops over cache-sized chunks"}
    bf16 = paths["state=bf16"] if name in ("adam", "adamw", "amsgrad") else chunked
    return {"bf16": bf16, "int8": paths["state=int8/int4"], "int4": paths["state=int8/int4"]}


def run(args: argparse.Namespace) -> int:
    """Print the registry: a rich table for people, ``--json`` for scripts."""
    infos = [info.to_dict() for info in OPTIMIZERS.values()]
    paths = implementation_paths()
    for info in infos:
        info["cpu_path"] = paths.get(info["name"])
        if "state" in info["defaults"]:  # the lean state= forms take their own paths
            info["cpu_path_by_state"] = _lean_paths(info["name"], paths)
    if args.json:
        print(json.dumps(infos, indent=2, ensure_ascii=False))
        return 0
    if args.width is not None and not 40 <= args.width <= 10_000:
        raise SpecError(f"width: got {args.width}, expected 40 to 10000 characters")
    columns = ("name", "update rule", "hyperparameters (defaults)", "state per parameter",
               "bytes", "default search space")
    rows = [
        (info["name"], info["rule"],
         ", ".join(f"{k}={_format(v)}" for k, v in info["defaults"].items()),
         ", ".join(info["buffers"]) or "-", _bytes(info),
         _space(info["search_space"]))
        for info in infos
    ]
    console = Console(width=args.width)
    print_listing(console, "steplab optimizers (bytes per parameter: float32 state)",
                  columns, rows, wide=150)
    console.print(
        "Every name also takes fused=/foreach=/maximize= (except lookahead). "
        "bytes: float32 state per parameter; in brackets with state=bf16/int8/int4 "
        "(tensors of 4,096 elements and more; smaller ones keep float32). "
        "Search ranges: tune lr always, then the others once a study has that many "
        "trials (Deep Learning Tuning Playbook)."
    )
    console.print(_path_table(paths))
    return 0


def _path_table(paths: dict[str, dict[str, str]]) -> Table:
    """Which implementation each rule takes on this machine's CPU, and why."""
    table = Table(title="implementation on this machine (CPU, float32)")
    for column in ("name", "100k params", "10M params", "why"):
        table.add_column(column, overflow="fold")
    for name, row in paths.items():
        table.add_row(name, row["small"], row["large"], row["why"])
    return table


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``steplab optimizers`` to the CLI."""
    parser = subparsers.add_parser(
        "optimizers",
        help="list every optimizer: update rule, defaults, state and its size",
        description="List every optimizer steplab builds by name: its update rule, "
        "hyperparameters with defaults, per-parameter state buffers, bytes of state "
        "per parameter (float32, and with state=bf16/int8/int4 where a name takes it) and "
        "the default search space.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table (default: table)"
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="width in characters; below 150 each optimizer is a block instead of a table "
        "row (default: the terminal's, 80 when piped)",
    )
    parser.set_defaults(func=run)
