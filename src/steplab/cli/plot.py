"""``steplab plot RUN [RUN...] --out FILE``: curves of one or more runs, overlaid."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``steplab plot``."""
    p = subparsers.add_parser(
        "plot",
        help="plot runs: loss, metrics, LR and the optimizer-state monitor vs steps and time",
        description="Plot loss, evaluated metrics, learning rate, gradient norm, update ratio "
        "and the optimizer-state monitor's series of one or more run directories against "
        "steps and training wall time, runs overlaid with a legend. Works on a run that is "
        "still training (it plots as far as it got).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (--out of train)")
    p.add_argument("--out", required=True,
                   help="file to write; .png, .svg, .pdf, or .html (self-contained page)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the plot; print its path; exit code 0."""
    from steplab.observe.plot import plot_runs

    print(plot_runs(args.runs, args.out))
    return 0
