"""``steplab plot``: a run's curves (or several runs overlaid) as PNG or self-contained HTML.

One row of panels per series that any of the runs logged, each drawn against
steps (left) and training wall time (right), one colour per run with a legend:

- loss: ``train_loss`` (solid) and ``val_loss`` (dashed);
- each evaluated metric other than loss (``val_accuracy``, ... dashed for ``test_``);
- ``lr``;
- gradient norm and update ratio (log scale);
- the state monitor's series: median effective step size, first-moment norm,
  median second moment, Lookahead's slow-fast distance, clip fraction (log scale).

A run still being written plots as far as it got (its legend says "running").
The HTML page embeds the PNG and a table of the runs; it needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from steplab.errors import SpecError
from steplab.observe.runs import RunRecord, read_run

__all__ = ["PANELS", "Panel", "plot_runs"]


@dataclass(frozen=True)
class Panel:
    """One row of the figure: a title, the row keys it draws, and its y scale."""

    title: str
    keys: tuple[str, ...]
    log: bool = False


#: the rows of the figure, in order; rows no run has data for are left out
PANELS: tuple[Panel, ...] = (
    Panel("loss", ("train_loss", "val_loss")),
    Panel("learning rate", ("lr",)),
    Panel("gradient norm", ("grad_norm",), log=True),
    Panel("update ratio ‖Δθ‖/‖θ‖", ("update_ratio",), log=True),
    Panel("effective step size (median)", ("state.step_size_median",), log=True),
    Panel("first-moment norm ‖m‖", ("state.m_norm",), log=True),
    Panel("second moment (median)", ("state.v_p50",), log=True),
    Panel("Lookahead slow-fast distance", ("state.slow_fast_distance",), log=True),
    Panel("clip fraction", ("state.clip_fraction",)),
)
_FORMATS = (".png", ".html", ".svg", ".pdf")


def _metric_panels(runs: Sequence[RunRecord]) -> list[Panel]:
    names = sorted({k.split("_", 1)[1] for r in runs for row in r.rows for k in row
                    if k.startswith(("val_", "test_")) and k not in ("val_loss", "test_loss")})
    return [Panel(name, (f"val_{name}", f"test_{name}")) for name in names]


def _panels(runs: Sequence[RunRecord]) -> list[Panel]:
    panels = [PANELS[0], *_metric_panels(runs), *PANELS[1:]]
    return [p for p in panels if any(r.series(k)[0] for r in runs for k in p.keys)]


def _figure(runs: Sequence[RunRecord]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(runs)
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 2.6 * len(panels)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, panel in enumerate(panels):
        for col, x in enumerate(("step", "wall_time")):
            ax = axes[row][col]
            for i, run in enumerate(runs):
                for j, key in enumerate(panel.keys):
                    xs, ys = run.series(key, x)
                    if xs:
                        label = f"{run.label} [{run.status}]" if j == 0 else None
                        ax.plot(xs, ys, color=colours[i % len(colours)],
                                linestyle="-" if j == 0 else "--", label=label, linewidth=1.2)
            if panel.log and all(y > 0 for r in runs for k in panel.keys for y in r.series(k)[1]):
                ax.set_yscale("log")
            ax.set_title(panel.title + ("  (- - " + panel.keys[1] + ")" if len(panel.keys) > 1
                                        else ""), fontsize=9)
            ax.set_xlabel("step" if x == "step" else "training wall time (s)", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _html(runs: Sequence[RunRecord], png: bytes) -> str:
    rows = []
    for run in runs:
        metrics = (run.summary or {}).get("metrics", {})
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        last = run.rows[-1]["step"] if run.rows else 0
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            run.path.name, run.config.get("task", "?"), run.config.get("optimizer", "?"),
            run.status, last, shown)) + "</tr>")
    image = base64.b64encode(png).decode("ascii")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>steplab runs</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}</style></head><body>"
        "<h1>steplab runs</h1><table><tr><th>run</th><th>task</th><th>optimizer</th>"
        "<th>status</th><th>last step</th><th>final metrics</th></tr>" + "".join(rows) +
        f"</table><p><img alt='run curves' src='data:image/png;base64,{image}'></p>"
        "</body></html>\n")


def plot_runs(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Plot one or more run directories into ``out`` (``.png``, ``.html``, ``.svg`` or ``.pdf``).

    Args:
        runs: run directories written by ``steplab train`` (finished or still running).
        out: the file to write; its suffix picks the format.

    Returns:
        The path written.

    Raises:
        SpecError: no runs, a directory that is not a run, a run with no rows yet,
            or an unknown suffix.
    """
    target = Path(out)
    if target.suffix.lower() not in _FORMATS:
        raise SpecError(f"out: got {str(target)!r}, expected a file ending in "
                        f"{', '.join(_FORMATS)}")
    if not runs:
        raise SpecError("runs: got none, expected at least one run directory")
    records = [read_run(r) for r in runs]
    empty = [str(r.path) for r in records if not r.rows]
    if empty:
        raise SpecError(f"run: got {empty[0]!r}, which has no metrics rows yet")
    fig = _figure(records)
    import matplotlib.pyplot as plt

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix.lower() == ".html":
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)  # type: ignore[attr-defined]
            target.write_text(_html(records, buffer.getvalue()), encoding="utf-8")
        else:
            fig.savefig(target, dpi=100)  # type: ignore[attr-defined]
    finally:
        plt.close(fig)  # type: ignore[arg-type]
    return target
