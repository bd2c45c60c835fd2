"""Render a study as one self-contained HTML page (inline CSS, figures as data URIs).

The page holds: the claims' verdicts, then per task the summary table, the
paired verdicts, the curves with seed bands and the target line, the
Kaplan-Meier time-to-target curves and the lr-sensitivity plot; performance
profiles when there are several tasks; the optimizer paths on the 2-D test
functions; the warnings; the protocol; the machine, versions and the command
that reproduces the study. Nothing is fetched from the network.
"""

from __future__ import annotations

import datetime
import html
from typing import Any

from steplab.study.plots import (
    curves_figure,
    lr_sensitivity_figure,
    profiles_figure,
    steps_to_target_figure,
)
from steplab.study.plots_trajectory import best_trajectory_runs, trajectory_figure
from steplab.study.protocol import TRAJECTORY_LR_RANGE, Group, selection_metric
from steplab.study.report_data import StudyAnalysis, table_cells
from steplab.study.report_protocol import protocol_items, resolution_text
from steplab.study.report_verdicts import claim_sentence
from steplab.study.spec import StudySpec

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;
  background:#f6f7f9;color:#1d232b}
main{max-width:1120px;margin:0 auto;padding:24px 28px;background:#fff;box-sizing:border-box}
h1{margin:0 0 4px 0;font-size:26px}
h2{margin-top:34px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
h3{margin-top:22px}
.sub{color:#5b6673;margin:0 0 16px 0}
table{border-collapse:collapse;width:100%;font-size:13px;margin:10px 0;table-layout:auto}
th,td{border-bottom:1px solid #e3e6ea;padding:5px 6px;text-align:right;vertical-align:top;
  overflow-wrap:anywhere}
th{background:#f0f2f5;font-weight:600}
td:first-child,th:first-child{text-align:left}
.wrap{max-width:100%;overflow-x:auto}
figure{margin:14px 0;text-align:center}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:13px;color:#5b6673;margin-top:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(460px,100%),1fr));gap:12px}
.verdicts li{margin:3px 0}
.claims{background:#eef4ff;border-left:4px solid #3a6fd8;padding:8px 12px}
.supported{color:#126b2f;font-weight:600}.refuted{color:#a8201a;font-weight:600}
.inconclusive{color:#6b5a12;font-weight:600}
.warn{background:#fff6e0;border-left:4px solid #f0a500;padding:8px 12px}
code,pre{background:#f0f2f5;border-radius:4px;font-size:13px}
pre{padding:10px;white-space:pre-wrap;overflow-wrap:anywhere}
.small{font-size:13px;color:#5b6673}
"""


def _esc(text: object) -> str:
    return html.escape(str(text))


def _figure(uri: str, caption: str) -> str:
    label = _esc(caption)
    return f'<figure><img src="{uri}" alt="{label}"><figcaption>{label}</figcaption></figure>'


def _table(analysis: StudyAnalysis, task: str) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in analysis.columns)
    body = []
    for row in (r for r in analysis.rows if r.task == task):
        cells = table_cells(row)
        body.append(
            "<tr>" + "".join(f"<td>{_esc(cells[c])}</td>" for c in analysis.columns) + "</tr>"
        )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="wrap">{table}</div>'


def _task_section(spec: StudySpec, analysis: StudyAnalysis, task: str) -> str:
    target = analysis.targets[task]
    rows = [r for r in analysis.rows if r.task == task]
    def runs(role: str) -> dict[str, list[Any]]:
        return {
            o: [
                r
                for r in analysis.records
                if r.group == Group(task, o) and r.role == role  # kind "main" by default
            ]
            for o in spec.optimizers
        }

    seeds, search = runs("seed"), runs("search")
    verdicts = "".join(
        f"<li><b>{_esc(r.optimizer)}</b> {_esc(v)}</li>" for r in rows for v in r.verdicts
    )
    op = ">=" if target.mode == "max" else "<="
    return "".join(
        [
            f"<h2>{_esc(task)}</h2>",
            f'<p class="sub">Target: <code>{_esc(target.metric)} {op} {target.value:g}</code>; '
            f"{_esc(resolution_text(analysis, task))}. <i>final</i> is {_esc(target.metric)} at "
            f"the last step, <i>best</i> at the evaluation with the best validation value "
            f"(never the best test value): mean ± half-width of the {spec.level:.0%} "
            f"t-interval over {spec.seeds} fresh seeds of each optimizer's best setting. "
            "Steps and time to target: Kaplan-Meier median (<code>&gt;= N</code>: fewer than "
            "half the seeds reached it) and seeds that reached it.</p>",
            _table(analysis, task),
            f'<ul class="verdicts">{verdicts}</ul>' if verdicts else "",
            _figure(
                curves_figure(seeds, target.metric, task, target.value),
                "Training loss and test metric against steps and wall time (dashed: target).",
            ),
            '<div class="grid">',
            _figure(
                steps_to_target_figure(rows, task),
                "Fraction of seeds at the target by step (Kaplan-Meier; censored runs stay flat).",
            ),
            _figure(
                lr_sensitivity_figure(search, selection_metric(target.metric), task),
                "Learning-rate sensitivity: the search trials (selection on validation).",
            ),
            "</div>",
        ]
    )


def _trajectories(spec: StudySpec, analysis: StudyAnalysis) -> str:
    if not spec.trajectories:
        return ""
    figs = []
    for task in spec.trajectories:
        from steplab.tasks import get_task

        metric = selection_metric(get_task(task).target.metric)
        best = best_trajectory_runs(analysis.records, task, spec.optimizers, metric)
        figs.append(
            _figure(trajectory_figure(task, best), f"{task}: {spec.trajectory_steps} steps")
        )
    lo, hi = TRAJECTORY_LR_RANGE
    return (
        f"<h2>Paths on 2-D test functions</h2><p class='sub'>Each optimizer at the best of "
        f"{spec.trajectory_budget} learning rates log-spaced in [{lo:g}, {hi:g}] (smallest final "
        f"distance to the minimum). Illustrations, not evidence: do not choose an optimizer "
        f"from these.</p><div class='grid'>{''.join(figs)}</div>"
    )


def _protocol(spec: StudySpec, analysis: StudyAnalysis) -> str:
    items = "".join(f"<li>{_esc(item)}</li>" for item in protocol_items(spec, analysis))
    return f"<h2>Protocol</h2><ol>{items}</ol>"


def _claims(analysis: StudyAnalysis) -> str:
    if not analysis.claims:
        return ""
    items = "".join(
        f'<li><span class="{c.outcome}">{_esc(c.outcome.upper())}</span> '
        f"{_esc(claim_sentence(c).split(': ', 1)[1])}</li>"
        for c in analysis.claims
    )
    return f"<h2>Claims</h2><div class='claims'><ul>{items}</ul></div>"


def render_html(
    spec: StudySpec,
    analysis: StudyAnalysis,
    command: str | None,
    env: dict[str, Any],
    elapsed: float,
) -> str:
    """The whole report page as one string."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>steplab comparison: {_esc(', '.join(spec.tasks))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>steplab: optimizer comparison</h1>",
        f"<p class='sub'>{_esc(', '.join(spec.optimizers))} on {_esc(', '.join(spec.tasks))}; "
        f"{spec.budget} lr trials and {spec.seeds} fresh paired seeds each; generated {now}.</p>",
    ]
    parts.append(_claims(analysis))
    parts += [_task_section(spec, analysis, t) for t in spec.tasks]
    if analysis.profiles is not None:
        parts.append(
            "<h2>Performance profiles</h2>"
            + _figure(
                profiles_figure(analysis.profiles),
                "Fraction of tasks solved within tau times the fastest.",
            )
        )
    parts.append(_trajectories(spec, analysis))
    if analysis.warnings:
        items = "".join(f"<li>{_esc(w)}</li>" for w in analysis.warnings)
        parts.append(f"<h2>Warnings</h2><div class='warn'><ul>{items}</ul></div>")
    parts.append(_protocol(spec, analysis))
    env_rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in env.items())
    parts += [
        "<h2>Reproduce</h2>",
        f"<pre>{_esc(command or 'steplab compare')}</pre>",
        f"<p class='small'>Spec hash {spec.spec_hash}; report built in {elapsed:.1f} s. "
        "Every run's numbers: results.csv and results.json next to this page.</p>",
        f"<div class='wrap'><table><tbody>{env_rows}</tbody></table></div>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
