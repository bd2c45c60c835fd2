"""Optimizer paths on the 2-D test functions, drawn over contour plots of the function.

The path of each optimizer is the ``params`` column of its best run on the
function (best final validation distance to the minimum over the shared lr
grid). The contour levels are log-spaced in ``f - min f`` so the valley floor
of Rosenbrock and the bowl of Beale both show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from steplab.study.plots import _pyplot, color_of, to_data_uri
from steplab.study.report_data import RunRecord

__all__ = ["function_grid", "trajectory_figure"]

_GRID = 120


def _path(record: RunRecord) -> np.ndarray:
    pts = [row["params"] for row in record.rows if isinstance(row.get("params"), list)]
    arr = np.array(pts, dtype=float).reshape(-1, 2)
    return arr[np.all(np.isfinite(arr), axis=1)]


def function_grid(
    task_name: str, xlim: tuple[float, float], ylim: tuple[float, float], n: int = _GRID
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate the task's ``f`` on an ``n x n`` grid (vectorised with ``torch.vmap``).

    Returns:
        ``(X, Y, F)`` arrays of shape ``(n, n)``.
    """
    import torch

    from steplab.tasks import get_task

    task = get_task(task_name)
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    gx, gy = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float64)
    fn = getattr(task, "fn", None)
    with torch.no_grad():
        if fn is not None:
            values = torch.vmap(fn)(points)
        else:  # any duck-typed 2-D task: evaluate through its model
            model = task.build_model(torch.Generator().manual_seed(0)).double()
            param = next(model.parameters())
            out = []
            for p in points:
                param.copy_(p)
                out.append(float(model(None).reshape(-1)[0]))
            values = torch.tensor(out)
    return gx, gy, values.numpy().reshape(n, n)


def _limits(
    task: Any, paths: Sequence[np.ndarray]
) -> tuple[tuple[float, float], tuple[float, float]]:
    anchors = [np.array(task.start, dtype=float)] if hasattr(task, "start") else []
    if hasattr(task, "minimum"):
        anchors.append(np.array(task.minimum, dtype=float))
    base = (
        np.array(anchors)
        if anchors
        else np.concatenate([p[:1] for p in paths if len(p)] or [np.zeros((1, 2))])
    )
    lo, hi = base.min(axis=0), base.max(axis=0)
    pad = np.maximum((hi - lo) * 0.35, 1.0)
    lo, hi = lo - pad, hi + pad
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def trajectory_figure(task_name: str, best_runs: dict[str, RunRecord | None]) -> str:
    """Contour plot of ``task_name`` with each optimizer's path; returns a PNG data URI."""
    from steplab.tasks import get_task

    plt = _pyplot()
    task = get_task(task_name)
    paths = {opt: _path(r) for opt, r in best_runs.items() if r is not None}
    xlim, ylim = _limits(task, list(paths.values()))
    gx, gy, f = function_grid(task_name, xlim, ylim)
    fig, ax = plt.subplots(figsize=(6.0, 5.4), layout="constrained")
    shifted = np.log10(np.maximum(f - np.nanmin(f), 0.0) + 1e-3)
    ax.contourf(gx, gy, shifted, levels=30, cmap="Greys", alpha=0.55)
    ax.contour(gx, gy, shifted, levels=15, colors="grey", linewidths=0.4)
    for i, (opt, run) in enumerate(best_runs.items()):
        path = paths.get(opt)
        if path is None or len(path) == 0 or run is None:
            continue
        lr = run.config.get("lr")
        ax.plot(
            path[:, 0],
            path[:, 1],
            color=color_of(i),
            linewidth=1.3,
            marker=".",
            markersize=2,
            label=f"{opt} (lr {lr:.2g})" if lr else opt,
        )
        ax.plot(*path[-1], marker="o", color=color_of(i), markersize=5)
    if hasattr(task, "minimum"):
        ax.plot(*task.minimum, marker="*", color="gold", markersize=14, markeredgecolor="k")
    if hasattr(task, "start"):
        ax.plot(*task.start, marker="s", color="k", markersize=5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(f"{task_name} (star: minimum, square: start)")
    fig.legend(fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    return to_data_uri(fig)


def best_trajectory_runs(
    records: Sequence[RunRecord], task: str, optimizers: Sequence[str], metric: str
) -> dict[str, RunRecord | None]:
    """For each optimizer, its trajectory run on ``task`` with the smallest final ``metric``."""
    out: dict[str, RunRecord | None] = {}
    for opt in optimizers:
        runs = [
            r
            for r in records
            if r.group.kind == "trajectory"
            and r.group.task == task
            and r.group.optimizer == opt
            and r.role == "search"
        ]
        scored = [
            (float(r.summary.get("metrics", {}).get(metric, math.inf)), i, r)
            for i, r in enumerate(runs)
        ]
        scored = [s for s in scored if math.isfinite(s[0])]
        out[opt] = min(scored)[2] if scored else None
    return out
