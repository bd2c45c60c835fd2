"""Parity of memory-lean optimizer state: run ``steplab compare --preset memory`` and tabulate it.

Runs the ``memory`` preset (:mod:`steplab.study.presets`; finished runs in
``--out`` are found and not run again), then prints, and with
``--write-docs`` writes into docs/benchmarks.md, one table per task: final
test accuracy (mean and confidence interval over the paired seeds), the
verdict against float32 AdamW (equivalence margin 1 accuracy point), and each
lean format's claim "equivalent to its float32 original within 1 point".

Run::

    nice -n 5 .venv/bin/python benchmarks/memory_parity.py --out memory-study --workers 2
    .venv/bin/python benchmarks/memory_parity.py --out memory-study --write-docs
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from steplab.study.compare import run_study
from steplab.study.presets import MEMORY_LR, load_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docblock import write_block


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def tables(result: Any) -> str:
    """Markdown tables of the study's rows, verdicts and claims, one per task."""
    analysis = result.analysis
    verdicts = {(v.task, v.optimizer): v for v in analysis.verdicts if v.quantity == "final"}
    claims = {(c.task, c.optimizer): c for c in analysis.claims}
    out = []
    for task in analysis.targets:
        out += [f"**{task}** (final test accuracy, %; intervals at the study's level)", "",
                "| optimizer | accuracy (CI) | vs the fp32 baseline: difference, verdict "
                "| claim: within 1 point of its fp32 original |",
                "| --- | ---: | --- | --- |"]
        for row in (r for r in analysis.rows if r.task == task):
            acc = f"{_pct(row.final.mean)} ({_pct(row.final.low)}..{_pct(row.final.high)})"
            v = verdicts.get((task, row.optimizer))
            verdict = "baseline" if v is None else (
                f"{100 * v.estimate:+.1f} ({100 * v.ci_low:+.1f}..{100 * v.ci_high:+.1f}), "
                f"{v.outcome}")
            c = claims.get((task, row.optimizer))
            claim = "-" if c is None else (
                f"vs {c.baseline}: {100 * c.estimate:+.1f} "
                f"({100 * c.ci_low:+.1f}..{100 * c.ci_high:+.1f}), **{c.outcome}**")
            out.append(f"| {row.optimizer} | {acc} | {verdict} | {claim} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    """Run (or resume) the memory preset and print / write its tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="memory-study",
                        help="study directory (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel runs (default: all cores)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="paired seeds (default: the preset's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run (default: the preset's)")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the parity section of docs/benchmarks.md")
    args = parser.parse_args()
    spec = load_preset("memory", seeds=args.seeds, steps=args.steps)
    result = run_study(spec, args.out, workers=args.workers, progress=False)
    text = tables(result)
    print(text)
    if args.write_docs:
        flags = "".join(f" --{k} {v}" for k, v in (("seeds", args.seeds), ("steps", args.steps))
                        if v is not None)
        header = (f"Generated {datetime.date.today().isoformat()} by "
                  f"`benchmarks/memory_parity.py{flags}` (the `steplab compare --preset memory` "
                  f"study: {spec.seeds} paired seeds, {spec.steps} steps, every format at "
                  f"lr {MEMORY_LR:g}; {result.n_runs} runs).\n\n")
        write_block("benchmarks.md", "memory_parity", "benchmarks/memory_parity.py",
                    header + text, heading="### Parity (`benchmarks/memory_parity.py`)")


if __name__ == "__main__":
    main()
