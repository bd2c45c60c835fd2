"""Baseline of the ``byte-lm`` task: what ``fit`` at its defaults reaches, measured.

For each seed, trains ``byte-lm`` through :func:`steplab.train.fit` at the
task's defaults (Adam, its lr, batch, steps; the stdlib corpus) and reports
the loss at initialisation (nats, against ln 256), the final test and
validation bits per byte, the step at which ``test_bpb`` first met the target,
training wall and CPU seconds, and the corpus hash. Writes the table into
``docs/tasks.md`` (block ``lm-baseline``) with the command and date.

Usage: ``python benchmarks/lm_baseline.py [--seeds 0 1 2] [--threads 1] [--no-docs]``
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from steplab.tasks import get_task
from steplab.train import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docblock import write_block

TASK = "byte-lm"


def init_loss(seed: int) -> float:
    """Validation loss (nats) of the freshly built model of ``seed``."""
    task = get_task(TASK)
    data = task.load_data()
    model = task.build_model(torch.Generator().manual_seed(seed))
    return task.metrics(model, data.x_val, data.y_val)["loss"]


def one_run(seed: int, out: Path) -> dict[str, float | str | None]:
    c0 = time.process_time()
    summary = fit(TrainConfig(task=TASK, seed=seed), out, progress=False).summary
    return {
        "seed": seed,
        "init_nats": init_loss(seed),
        "test_bpb": summary["metrics"]["test_bpb"],
        "val_bpb": summary["metrics"]["val_bpb"],
        "target_step": summary["target_step"],
        "target_time": summary["target_time"],
        "wall": summary["wall_time"],
        "cpu": time.process_time() - c0,
        "steps": summary["steps"],
        "sha": summary["data"]["corpus_sha256"],
        "python": summary["data"]["python"],
    }


def render(runs: list[dict[str, float | str | None]], command: str, threads: int) -> str:
    task = get_task(TASK)
    info = task.info()
    lines = [
        f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC with `{command}` "
        f"(torch {torch.__version__}, {threads} thread(s), Python {runs[0]['python']}; "
        f"corpus SHA-256 `{runs[0]['sha']}`). Defaults: Adam lr {task.default_lr}, batch "
        f"{task.default_batch_size} x {info['context']} bytes, {task.default_steps} steps, "
        f"{info['n_params']:,} parameters; target `test_bpb <= {task.target.value}`. "
        "Wall times are of a shared 2-core machine under load from other processes; CPU "
        "seconds (training and evaluation of this process) are the steadier figure.",
        "",
        "| seed | loss at init (nats; ln 256 = 5.545) | test bpb | val bpb | target met at step "
        "| train wall s | CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {float(r['init_nats']):.3f} | {float(r['test_bpb']):.3f} | "
            f"{float(r['val_bpb']):.3f} | {r['target_step']} | {float(r['wall']):.0f} | "
            f"{float(r['cpu']):.0f} |"
        )
    bpb = [float(r["test_bpb"]) for r in runs]
    spread = f" (min {min(bpb):.3f}, max {max(bpb):.3f})" if len(bpb) > 1 else ""
    lines += ["", f"Mean test bits per byte {statistics.mean(bpb):.3f}{spread} over "
              f"{len(bpb)} seed(s); {sum(r['target_step'] is not None for r in runs)}/"
              f"{len(runs)} met the target."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default 0 1 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs/ alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(seed, Path(tmp) / str(seed)) for seed in args.seeds]
    assert all(math.isfinite(float(r["test_bpb"])) for r in runs)
    command = "python benchmarks/lm_baseline.py " + " ".join(sys.argv[1:])
    text = render(runs, command.strip(), args.threads)
    print(text)
    if not args.no_docs:
        print("wrote", write_block("tasks.md", "lm-baseline", "benchmarks/lm_baseline.py", text))


if __name__ == "__main__":
    main()
