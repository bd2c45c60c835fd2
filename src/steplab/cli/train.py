"""``steplab train``: train one run with the best practices built in (see docs/training.md)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from steplab.errors import SpecError

__all__ = ["add_parser", "run"]


def _batch_size(text: str) -> int | str:
    if text == "full":
        return "full"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer or 'full'") from None


def _keep(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer or 'all'") from None


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (see `steplab tasks`); required")
    p.add_argument("--optimizer", default="adam", help="optimizer spec, e.g. 'lookahead(adamw)'")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of the innermost optimizer; None = the task's")
    p.add_argument("--batch-size", type=_batch_size, default=None,
                   help="examples per step, or 'full' for gradient descent; None = the task's")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help="optimizer steps; None (and no --epochs) = the task's")
    length.add_argument("--epochs", type=float, default=None,
                        help="passes over the training data (exclusive with --steps)")
    p.add_argument("--schedule", default="constant",
                   help="constant|step|linear|cosine|cyclical|one-cycle")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps")
    p.add_argument("--clip-norm", type=float, default=None,
                   help="clip the global gradient norm to this; None = off")
    p.add_argument("--clip-value", type=float, default=None,
                   help="clamp gradient elements to [-v, v]; None = off")
    p.add_argument("--on-nonfinite", default="skip", help="skip|stop on a NaN/Inf loss or grad")
    p.add_argument("--divergence-factor", type=float, default=1e3,
                   help="loss above this times the first loss ends the run as diverged")
    p.add_argument("--early-stop-metric", default=None,
                   help="metric to early-stop on, e.g. val_loss; None = off")
    p.add_argument("--patience", type=int, default=None,
                   help="evaluations without improvement; None = 5")
    p.add_argument("--min-delta", type=float, default=0.0, help="smallest improvement")
    p.add_argument("--precision", default="fp32", help="fp32|bf16|fp16 (fp16 needs CUDA)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every N steps; None = 10 evaluations per run")
    p.add_argument("--log-every", type=int, default=10, help="metrics.jsonl row every N steps")
    p.add_argument("--seed", type=int, default=0, help="the one seed of the run")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="checkpoint every N steps; None = off")
    p.add_argument("--data-dir", default=None,
                   help="directory with data files (mnist, cifar10); None = none needed")
    p.add_argument("--no-monitor", dest="monitor", action="store_false",
                   help="do not log gradient norms and update ratios (monitor is on by default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--state-every", type=int, default=200,
                   help="with the monitor on, log optimizer-state statistics (moments, step "
                   "sizes, update ratios, Lookahead gap) to metrics.jsonl every N steps")
    p.add_argument("--histogram-every", type=int, default=None,
                   help="TensorBoard histograms of the moments every N steps; None = 10x "
                   "--state-every")
    p.add_argument("--keep-checkpoints", type=_keep, default=3,
                   help="checkpoints kept in --out/checkpoints, or 'all' (steplab landscape "
                   "draws the path through every kept one)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard event files into --out (only with --out)")
    p.add_argument("--parallel", default="ddp", choices=("ddp", "zero", "fsdp"),
                   help="with several processes: DistributedDataParallel, ZeRO (sharded "
                   "optimizer state) or FSDP2 (sharded parameters); --batch-size stays global")


def add_parser(subparsers: Any) -> None:
    """Add ``steplab train`` to the CLI."""
    p = subparsers.add_parser(
        "train",
        help="train one run: schedules, clipping, guards, checkpoints, resume",
        description="Train one run; writes config.json, metrics.jsonl, summary.json to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_run_options(p)
    p.add_argument("--out", default=None, help="run directory; None = write no files")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print summary.json to stdout")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes on this machine (torch's launcher, gloo on CPU, nccl on "
                   "CUDA; everything listens on 127.0.0.1 only); only rank 0 writes files "
                   "and prints; default 1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the TrainConfig from ``args``, call :func:`steplab.train.fit`, print the summary."""
    import dataclasses

    from steplab.train import TrainConfig, fit
    from steplab.train.launch import launch, launched

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    fields = {k: v for k, v in vars(args).items() if k in names}
    try:
        config = TrainConfig(**fields)
    except TypeError as exc:  # pragma: no cover - argparse and TrainConfig agree
        raise SpecError(f"train options: {exc}") from None
    if args.nproc > 1 and not launched():
        launch(_worker_args(args), args.nproc)
        return 0
    result = fit(config, args.out, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # rank 0 prints for the run
        return 0
    if args.json:
        print(json.dumps(result.summary, indent=2, sort_keys=True))
    else:
        _print_summary(result.summary)
    return 0


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The ``steplab train`` options each launched process gets: these, minus ``--nproc``."""
    out: list[str] = []
    for key, value in vars(args).items():
        if key == "keep_checkpoints" and value is None:  # None is `--keep-checkpoints all`
            out += ["--keep-checkpoints", "all"]
            continue
        if key in ("command", "func", "version", "nproc") or key.startswith("_") or value is None:
            continue
        if not isinstance(value, (bool, int, float, str)):
            continue  # the CLI's own bookkeeping, not an option
        flag = "--" + key.replace("_", "-")
        if key == "monitor":
            out += [] if value else ["--no-monitor"]
        elif key == "tensorboard":
            out.append(flag if value else "--no-tensorboard")
        elif isinstance(value, bool):
            out += [flag] if value else []
        else:
            out += [flag, str(value)]
    return out


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {summary['run_id']}: {summary['status']}")
    table.add_column("field")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [("steps", summary["steps"])]
    rows += [(k, v) for k, v in summary["metrics"].items()]
    rows += [("target_step", summary["target_step"]), ("wall_time s", summary["wall_time"]),
             ("steps/s", summary["steps_per_s"]), ("nonfinite_skipped",
              summary["nonfinite_skipped"]), ("final_params_sha256",
              summary["final_params_sha256"][:16] + "…")]
    for name, value in rows:
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)
