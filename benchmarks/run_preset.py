"""Run a ``steplab compare`` preset for real and put its result in ``docs/presets.md``.

Runs the preset (optionally shrunk with ``--tasks``, ``--steps``, ``--seeds``,
``--budget``, ``--tuning-repeats`` to fit the machine; the block says which) through
:func:`steplab.study.compare.run_study` and writes the study's Markdown report
(claims, tables, verdicts) into ``docs/presets.md`` as block ``preset-NAME``,
with the command, the date and the size it ran at.

Usage: ``python benchmarks/run_preset.py NAME [--tasks a,b] [--steps N] [--seeds N]
[--budget N] [--tuning-repeats N] [--workers N] [--out DIR]``
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

import torch

from steplab.study.compare import run_study
from steplab.study.presets import PRESETS, load_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docblock import write_block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(PRESETS))
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: preset's)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: preset's)")
    parser.add_argument("--seeds", type=int, default=None, help="final seeds (default: preset's)")
    parser.add_argument("--budget", type=int, default=None,
                        help="search trials (default: preset's)")
    parser.add_argument("--tuning-repeats", type=int, default=None,
                        help="independent searches per optimizer (default: preset's)")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs (default 1)")
    parser.add_argument("--out", default=None, help="study directory (default: a temporary one)")
    parser.add_argument("--block", default=None,
                        help="suffix of the docs block name, for several runs of one preset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = tuple(args.tasks.split(",")) if args.tasks else None
    spec = load_preset(args.name, tasks=tasks, steps=args.steps, seeds=args.seeds,
                       budget=args.budget, tuning_repeats=args.tuning_repeats)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "study"
        result = run_study(spec, out, workers=args.workers, progress=False)
        report = result.report_md.read_text()
    body = report.split("\n", 1)[1] if report.startswith("#") else report
    body = body.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
    command = "python benchmarks/run_preset.py " + " ".join(sys.argv[1:])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    header = (
        f"Ran {when} UTC with `{command}` ({result.n_runs} runs, {result.wall_time:.0f} s on "
        f"this shared 2-core machine; tasks {', '.join(spec.tasks)}; "
        f"{spec.steps or 'each task default'} steps; {spec.seeds} seeds; budget {spec.budget}; "
        f"{spec.tuning_repeats} tuning seeds)."
    )
    print(header)
    print(body)
    block = f"preset-{args.name}" + (f"-{args.block}" if args.block else "")
    write_block("presets.md", block, "benchmarks/run_preset.py", header + "\n\n" + body)


if __name__ == "__main__":
    main()
