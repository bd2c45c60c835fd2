"""Regenerate every number docs/compare.md and docs/benchmarks.md quote about ``steplab compare``.

Three blocks, each between ``<!-- BEGIN generated:NAME -->`` and
``<!-- END generated:NAME -->`` markers, are rewritten with the command and
the date beside them (nothing in them is typed by hand):

* ``default-study`` (docs/compare.md): the default study's table, claims and
  verdicts, from a finished study directory (``--study``; a missing or partial
  one is trained first, finished runs are reused);
* ``calibration`` (docs/compare.md): the calibration simulation of the
  verdicts (:mod:`steplab.study.verdicts.calibration`, the same one the tests
  assert);
* ``compare-wall-time`` (docs/benchmarks.md): the JSON that
  ``benchmarks/compare_wall_time.py --json`` wrote (``--bench``), when given.

Run: ``.venv/bin/python scripts/update_compare_docs.py --study steplab-out
[--bench bench.json]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from docblock import replace_block  # noqa: E402  (the one docs-block writer)


def _replace(path: Path, name: str, body: str) -> None:
    replace_block(path, f"<!-- BEGIN generated:{name} -->", f"<!-- END generated:{name} -->",
                  body, append=False)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def default_study_block(study_dir: Path, workers: int) -> str:
    """The default study's table, claims and verdicts as Markdown."""
    from steplab.study.compare import run_study
    from steplab.study.report_data import TABLE_COLUMNS, table_cells
    from steplab.study.report_protocol import resolution_text
    from steplab.study.report_verdicts import claim_sentence
    from steplab.study.report_writers import environment
    from steplab.study.spec_load import default_study_spec

    result = run_study(default_study_spec(), study_dir, workers=workers, progress=False,
                       command="steplab compare")
    analysis, env = result.analysis, environment()
    columns = [c for c in TABLE_COLUMNS if c not in ("state B/param", "time to target")]
    lines = [
        f"Generated {_now()} by `python scripts/update_compare_docs.py --study {study_dir.name}` "
        f"from `steplab compare` (torch {env['torch']}, {env['cpu_model']}, commit "
        f"{str(env['git_commit'])[:12]}). The runs are seeded: the same machine and torch "
        "build give the same numbers.",
        "",
        f"Target: test accuracy >= 0.80; {resolution_text(analysis, 'mnist1d-cnn')}.",
        "",
        "Claims:",
        "",
        *[f"- {claim_sentence(c)}" for c in analysis.claims],
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in analysis.rows:
        cells = table_cells(row)
        lines.append("| " + " | ".join(cells[c] for c in columns) + " |")
    lines += ["", "Verdicts (Holm across all of them):", ""]
    lines += [f"- **{r.optimizer}** {v}" for r in analysis.rows for v in r.verdicts]
    if analysis.warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in analysis.warnings]
    return "\n".join(lines)


def calibration_block(reps: int) -> str:
    """The calibration simulation as a Markdown table."""
    from steplab.study.verdicts.calibration import calibration_table

    rows = calibration_table(reps=reps)
    lines = [
        f"Generated {_now()} by `python scripts/update_compare_docs.py` "
        f"(`calibration_table(reps={reps})`, alpha = 0.05; the test suite asserts the bounds).",
        "",
        "| quantity | n | noise | true effect | false positives | coverage | power |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fpr = r.get("false_positive_rate")
        power = r.get("power")
        lines.append(
            f"| {r['quantity']} | {r['n']} | {r['noise']} | {r['effect']:g} | "
            f"{'-' if fpr is None else f'{fpr:.3f}'} | {r['coverage']:.3f} | "
            f"{'-' if power is None else f'{power:.3f}'} |"
        )
    return "\n".join(lines)


def wall_time_block(bench: dict[str, Any]) -> str:
    """The benchmark JSON as a Markdown table."""
    lines = [
        f"Measured {bench['date']} by `{bench['command']}` ({bench['workers']} workers, "
        f"median of {bench['repeats']}; {bench['cpu_count']} CPUs, 1-minute load average "
        f"{bench['load_average_1min']:.1f} at the end: a shared machine, so read the ratios).",
        "",
        "| study | wall time (s) | vs previous default study |",
        "|---|---|---|",
    ]
    for row in bench["rows"]:
        lines.append(f"| {row['study']} | {row['seconds']:.0f} | {row['ratio']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    """Parse the flags and rewrite the blocks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="steplab-out", help="default study directory")
    parser.add_argument("--bench", default=None, help="compare_wall_time.py --json output")
    parser.add_argument("--reps", type=int, default=4000, help="calibration repetitions")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs when training")
    args = parser.parse_args()
    compare_md = ROOT / "docs" / "compare.md"
    _replace(compare_md, "default-study", default_study_block(Path(args.study), args.workers))
    _replace(compare_md, "calibration", calibration_block(args.reps))
    if args.bench:
        bench = json.loads(Path(args.bench).read_text())
        _replace(ROOT / "docs" / "benchmarks.md", "compare-wall-time", wall_time_block(bench))


if __name__ == "__main__":
    main()
