"""``steplab checkpoint ...``: work on checkpoint files (migrate, export, convert).

The group holds no logic: each action is a module under ``steplab.cli`` with
``add_parser(subparsers)``, listed in :data:`ACTIONS`. To add one, write the
module and add a line to :data:`ACTIONS`.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["ACTIONS", "add_parser"]

#: ``steplab checkpoint <action>`` -> module under steplab.cli that implements it
ACTIONS: dict[str, str] = {
    "migrate": "checkpoint_migrate",
    "export": "checkpoint_export",
    "convert": "checkpoint_convert",
}


def add_parser(subparsers: Any) -> None:
    """Register ``steplab checkpoint`` and its actions."""
    parser = subparsers.add_parser(
        "checkpoint",
        help="work on checkpoint files: migrate, export for deployment, convert sharded",
        description="Work on steplab checkpoint directories.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for module_name in ACTIONS.values():
        importlib.import_module(f"steplab.cli.{module_name}").add_parser(actions)
