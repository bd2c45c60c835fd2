"""Write a study's report files: ``report.html``, ``report.md``, ``results.csv``, ``results.json``.

``results.csv`` has one row per run with every config field and every summary
metric; ``results.json`` holds the same runs plus the summary table, the
verdicts, the warnings, the environment and the spec. Non-finite numbers are
written as ``null`` (JSON) or empty cells (CSV).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from steplab.study.report_data import StudyAnalysis, table_cells
from steplab.study.report_protocol import protocol_items, resolution_text
from steplab.study.report_verdicts import claim_sentence
from steplab.study.spec import StudySpec

__all__ = ["cpu_model", "environment", "git_commit", "jsonable", "write_reports"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(where: Path | None = None) -> str | None:
    """The commit checked out where steplab's source lives (None outside a git checkout)."""
    import steplab

    folder = where or Path(steplab.__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
            timeout=5, check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Machine, CPU model, git commit and library versions, for the reproducibility section."""
    import numpy
    import scipy
    import torch

    from steplab import __version__

    return {
        "git_commit": git_commit(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "steplab": __version__,
    }


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and non-finite floats as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif not isinstance(value, list):
        out[prefix] = "" if isinstance(value, float) and not math.isfinite(value) else value


def _run_rows(analysis: StudyAnalysis) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for rec in analysis.records:
        if (rec.run_id, rec.role) in seen:
            continue
        seen.add((rec.run_id, rec.role))
        row: dict[str, Any] = {
            "run_id": rec.run_id,
            "kind": rec.group.kind,
            "role": rec.role,
            "study_optimizer": rec.group.optimizer,
        }
        _flat("config", {k: v for k, v in rec.config.items() if k != "eval_splits"}, row)
        _flat("", {k: v for k, v in rec.summary.items() if k != "layer_grad_norms"}, row)
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _markdown(spec: StudySpec, analysis: StudyAnalysis, command: str | None) -> str:
    lines = ["# steplab comparison", ""]
    if analysis.claims:
        lines += ["## Claims", ""] + [f"- {claim_sentence(c)}" for c in analysis.claims] + [""]
    for task, target in analysis.targets.items():
        lines += [
            f"## {task}",
            "",
            f"Target: {target.metric} {'>=' if target.mode == 'max' else '<='} "
            f"{target.value:g}; {resolution_text(analysis, task)}. `final` is {target.metric} "
            f"at the last step, `best` at the evaluation with the best validation value; "
            f"mean ± {spec.level:.0%} CI half-width over {spec.seeds} fresh seeds. Steps/time "
            "to target: Kaplan-Meier median (`>= N`: fewer than half reached it) and seeds "
            "that reached it.",
            "",
        ]
        columns = analysis.columns
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        rows = [r for r in analysis.rows if r.task == task]
        for row in rows:
            cells = table_cells(row)
            lines.append("| " + " | ".join(cells[c] for c in columns) + " |")
        lines += ["", "### Verdicts", ""]
        lines += [f"- **{r.optimizer}** {v}" for r in rows for v in r.verdicts] or [
            "- (no baseline)"
        ]
        lines.append("")
    if analysis.profiles is not None:
        lines += ["## Performance profiles (steps to target)", ""]
        lines += [f"- {o}: score {s:.3f}" for o, s in analysis.profiles.scores.items()] + [""]
    if analysis.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in analysis.warnings] + [""]
    lines += ["## Protocol", ""]
    lines += [f"{i}. {item}" for i, item in enumerate(protocol_items(spec, analysis), 1)]
    lines += ["", "## Reproduce", "", "```", command or "steplab compare", "```", ""]
    return "\n".join(lines)


def _results_json(
    spec: StudySpec,
    analysis: StudyAnalysis,
    command: str | None,
    env: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    profiles = analysis.profiles
    body: dict[str, Any] = jsonable(
        {
            "spec": spec.to_dict(),
            "spec_hash": spec.spec_hash,
            "command": command,
            "environment": env,
            "report_seconds": elapsed,
            "targets": {t: v.__dict__ for t, v in analysis.targets.items()},
            "baselines": analysis.baselines,
            "table": [r.to_dict() for r in analysis.rows],
            "verdicts": [v.to_dict() for v in analysis.verdicts],
            "claims": [c.to_dict() for c in analysis.claims],
            "warnings": analysis.warnings,
            "profiles": None
            if profiles is None
            else {"scores": profiles.scores, "ratios": profiles.ratios},
            "runs": [
                {
                    "run_id": r.run_id,
                    "kind": r.group.kind,
                    "task": r.group.task,
                    "optimizer": r.group.optimizer,
                    "role": r.role,
                    "config": r.config,
                    "summary": r.summary,
                }
                for r in analysis.records
            ],
        }
    )
    return body


def write_reports(
    out: Path, spec: StudySpec, analysis: StudyAnalysis, command: str | None, elapsed: float
) -> dict[str, Path]:
    """Write the four report files into ``out``; returns their paths by kind."""
    from steplab.study.report_html import render_html

    env = environment()
    paths = {
        "html": out / "report.html",
        "md": out / "report.md",
        "csv": out / "results.csv",
        "json": out / "results.json",
    }
    paths["md"].write_text(_markdown(spec, analysis, command))
    _write_csv(paths["csv"], _run_rows(analysis))
    body = _results_json(spec, analysis, command, env, elapsed)
    paths["json"].write_text(json.dumps(body, indent=1, allow_nan=False) + "\n")
    paths["html"].write_text(render_html(spec, analysis, command, env, elapsed))
    return paths
