"""``steplab compare``: compare optimizers fairly and write a report.

With no arguments it runs the default study (MNIST-1D CNN, six optimizers, 10
fresh paired seeds, the Lookahead claim judged; a few minutes on 2 cores);
``--quick`` runs a smoke-test preset; a TOML file or flags define any other
study (see ``docs/compare.md``). It prints the claims, the table and the
verdicts.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``steplab compare``."""
    p = subparsers.add_parser(
        "compare",
        help="compare optimizers: tuned lr, several seeds, CIs, an HTML report",
        description="Compare optimizers with the same tuning budget each, several seeds, "
        "confidence intervals and time-to-target; writes report.html, report.md, "
        "results.csv and results.json into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "spec",
        nargs="?",
        default=None,
        help="study TOML file (if unset: none, the built-in default study)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the smoke-test preset (3 optimizers, 5 seeds, 300 steps) instead of the default",
    )
    p.add_argument(
        "--preset",
        choices=("memory", "lookahead-paper", "warmup-transformer"),
        default=None,
        help="a named study instead of the default one: 'memory' compares AdamW with "
        "fp32/bf16/int8/int4 state and Lookahead with a bf16 slow copy for parity "
        "(examples/memory.toml); 'lookahead-paper' judges the claim that Lookahead is "
        "30-50%% faster than its inner optimizer on every built-in task without a download, "
        "the byte-level LM included (examples/lookahead-paper.toml); 'warmup-transformer' "
        "judges whether linear warmup makes Adam diverge less often and end lower on the "
        "byte-level LM across lrs 1e-3..0.9 (examples/warmup-transformer.toml) (if unset: none)",
    )
    p.add_argument(
        "--tasks", default=None, help="comma-separated task names (if unset: the spec's)"
    )
    p.add_argument(
        "--optimizers",
        default=None,
        help="comma-separated optimizer specs, e.g. 'adam,lookahead(adam)' (if unset: the spec's)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="fresh paired seeds of each best setting (if unset: the spec's; the default "
        "study runs 10)",
    )
    p.add_argument(
        "--tuning-repeats",
        type=int,
        default=None,
        help="independent searches per optimizer (if unset: the spec's, 1)",
    )
    p.add_argument(
        "--selection",
        choices=("auto", "final", "steps_to_target", "auc"),
        default=None,
        help="what picks the best search trial on validation (if unset: the spec's, 'auto' = "
        "what the claims are about, else final)",
    )
    p.add_argument(
        "--level",
        type=float,
        default=None,
        help="confidence level of intervals and verdicts (if unset: the spec's, 0.95)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="lr search trials per optimizer and task (if unset: the spec's)",
    )
    p.add_argument("--steps", type=int, default=None, help="steps per run (if unset: the spec's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (if unset: the spec's)")
    p.add_argument(
        "--lr-span",
        type=float,
        default=None,
        help="search lr in [c/span, c*span] around each default c (if unset: the spec's)",
    )
    p.add_argument(
        "--search",
        choices=("auto", "grid", "halton"),
        default=None,
        help="search kind (if unset: the spec's, 'auto' = log grid)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="optimizer to compare every other with (if unset: a Lookahead's inner, else adam)",
    )
    p.add_argument(
        "--trajectories",
        default=None,
        help="2-D functions to draw paths on, comma-separated, 'none' for no paths "
        "(if unset: rosenbrock,rastrigin,beale)",
    )
    p.add_argument("--out", default="steplab-out", help="output directory")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where runs execute",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel runs (if unset: all cores)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address for --executor ray (if unset: start a local Ray)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from steplab.study.spec_load import split_names

    over: dict[str, Any] = {
        "seeds": args.seeds,
        "budget": args.budget,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr_span": args.lr_span,
        "search": args.search,
        "baseline": args.baseline,
        "tuning_repeats": args.tuning_repeats,
        "selection": args.selection,
        "level": args.level,
    }
    for name in ("tasks", "optimizers"):
        value = getattr(args, name)
        over[name] = None if value is None else split_names(value, f"--{name}")
    if args.trajectories is not None:
        over["trajectories"] = (
            () if args.trajectories == "none" else split_names(args.trajectories, "--trajectories")
        )
    return over


def run(args: argparse.Namespace) -> int:
    """Load the spec, run the study, print the table and where the report is."""
    from steplab.study.compare import run_study
    from steplab.study.spec_load import load_study_spec

    if args.preset is not None:
        from steplab.errors import SpecError
        from steplab.study.presets import load_preset

        if args.spec is not None or args.quick:
            raise SpecError("--preset: give a preset, a spec file or --quick, not several")
        spec = load_preset(args.preset, **_overrides(args))
    else:
        spec = load_study_spec(args.spec, quick=args.quick, **_overrides(args))
    result = run_study(
        spec,
        args.out,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        progress=not (args.quiet or args.json),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "report_html": str(result.report_html),
                    "report_md": str(result.report_md),
                    "results_csv": str(result.results_csv),
                    "results_json": str(result.results_json),
                    "n_runs": result.n_runs,
                    "n_trained": result.n_trained,
                    "wall_time": result.wall_time,
                    "cpu_seconds": result.cpu_seconds,
                    "verdicts": [v.to_dict() for v in result.analysis.verdicts],
                    "claims": [c.to_dict() for c in result.analysis.claims],
                    "warnings": result.analysis.warnings,
                },
                indent=2,
            )
        )
        return 0
    _print_table(result)
    return 0


def _print_table(result: Any) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from steplab.study.report_data import table_cells
    from steplab.study.report_protocol import resolution_text
    from steplab.study.report_verdicts import claim_sentence

    # what fits 80 columns; report.md/html add "best", time to target, loss AUC, step ms
    columns = ("optimizer", "lr", "status", "final", "steps to target", *result.analysis.metrics)
    console = Console()
    for claim in result.analysis.claims:
        console.print(f"[bold]claim[/bold] {claim_sentence(claim)}", highlight=False)
    for task, target in result.analysis.targets.items():
        op = ">=" if target.mode == "max" else "<="
        table = Table(
            title=f"{task} (target {target.metric} {op} {target.value:g}; "
            f"{resolution_text(result.analysis, task)})",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for col in columns:
            left = col == "optimizer"
            table.add_column(col, justify="left" if left else "right", no_wrap=left)
        for row in (r for r in result.analysis.rows if r.task == task):
            cells = table_cells(row)
            table.add_row(*(cells[c] for c in columns))
        console.print(table)
        for row in (r for r in result.analysis.rows if r.task == task):
            for verdict in row.verdicts:
                console.print(f"  [bold]{row.optimizer}[/bold] {verdict}", highlight=False)
    for warning in result.analysis.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    console.print(
        f"{result.n_runs} runs ({result.n_trained} trained now) in "
        f"{result.wall_time:.0f} s. Report: [bold]{result.report_html}[/bold]"
    )
