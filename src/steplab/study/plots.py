"""The report's figures: curves with seed bands, lr sensitivity, steps-to-target, profiles.

Every function returns a ``data:image/png;base64,...`` URI, so the HTML report
embeds its figures and opens offline. Matplotlib runs with the Agg backend.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from steplab.study.profiles import PerformanceProfiles
from steplab.study.report_data import OptimizerRow, RunRecord

__all__ = [
    "color_of",
    "curves_figure",
    "lr_sensitivity_figure",
    "profiles_figure",
    "steps_to_target_figure",
    "to_data_uri",
]

_DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def color_of(index: int) -> Any:
    """The colour of the ``index``-th optimizer (stable across figures)."""
    return _pyplot().get_cmap("tab10")(index % 10)


def to_data_uri(fig: Any) -> str:
    """Render ``fig`` as a PNG data URI and close it."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # constrained layout: one draw
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _series(records: Sequence[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, per-seed values (nan-padded) and mean wall time per step for ``key``."""
    # a target check logs one row where the target was first met: not a curve point
    points = (r for rec in records for r in rec.rows if key in r and "target_check" not in r)
    steps = sorted({int(r["step"]) for r in points})
    index = {s: i for i, s in enumerate(steps)}
    values = np.full((len(records), len(steps)), np.nan)
    walls = np.full((len(records), len(steps)), np.nan)
    for i, rec in enumerate(records):
        for row in rec.rows:
            if key in row and row[key] is not None and int(row["step"]) in index:
                values[i, index[int(row["step"])]] = float(row[key])
                walls[i, index[int(row["step"])]] = float(row.get("wall_time", np.nan))
    with np.errstate(all="ignore"):
        values[~np.isfinite(values)] = np.nan
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            wall = np.nanmean(walls, axis=0) if len(records) else np.array([])
    return np.array(steps, dtype=float), values, wall


def _band(ax: Any, x: np.ndarray, values: np.ndarray, color: Any, label: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    ax.plot(x, mean, color=color, label=label, linewidth=1.6)
    if values.shape[0] > 1:
        ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)


def curves_figure(
    seed_runs: dict[str, list[RunRecord]], metric: str, task: str, target: float | None = None
) -> str:
    """Training loss and ``metric`` against steps and wall time, mean line and min-max seed band.

    ``target`` draws a dashed line at the target value on the metric panels.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.6), layout="constrained")
    for i, (opt, records) in enumerate(seed_runs.items()):
        if not records:
            continue
        for row_i, key in enumerate(("train_loss", metric)):
            steps, values, wall = _series(records, key)
            if steps.size == 0:
                continue
            _band(axes[row_i][0], steps, values, color_of(i), opt)
            _band(axes[row_i][1], wall, values, color_of(i), opt)
    for row_i, key in enumerate(("train_loss", metric)):
        for col, xlabel in enumerate(("step", "wall time (s)")):
            ax = axes[row_i][col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(key.replace("_", " "))
            ax.grid(alpha=0.3)
            if key.endswith("loss"):
                ax.set_yscale("log")
            if key == metric and target is not None:
                ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label="_target")
    fig.suptitle(f"{task}: mean over seeds, band = min-max over seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(4, len(labels)),
            frameon=False,
        )
    return to_data_uri(fig)


def lr_sensitivity_figure(search_runs: dict[str, list[RunRecord]], metric: str, task: str) -> str:
    """Final validation ``metric`` of every search trial against its lr; x marks a failed run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), layout="constrained")
    for i, (opt, records) in enumerate(search_runs.items()):
        pts = sorted(
            (
                float(r.config["lr"]),
                r.summary.get("metrics", {}).get(metric),
                r.summary.get("status"),
            )
            for r in records
            if r.config.get("lr") is not None
        )
        ok = [(lr, v) for lr, v, s in pts if v is not None and math.isfinite(v) and s != "diverged"]
        if ok:
            ax.plot(*zip(*ok, strict=True), marker="o", color=color_of(i), label=opt)
        bad = [lr for lr, v, s in pts if (lr, v) not in ok]
        if bad:
            ymin = min((v for _, v in ok), default=0.0)
            ax.scatter(bad, [ymin] * len(bad), marker="x", color=color_of(i), s=50)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{task}: lr sensitivity (tuning runs; x = diverged)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return to_data_uri(fig)


def steps_to_target_figure(rows: Sequence[OptimizerRow], task: str) -> str:
    """Kaplan-Meier curves: fraction of seeds that reached the target by each step.

    A run that never reached it is censored at its length (the curve stays
    flat there), so no interval is drawn on a value that was never observed.
    """
    from steplab.study.verdicts import kaplan_meier

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.4), layout="constrained")
    horizon = max((max(r.limits) for r in rows if r.limits), default=1.0)
    for i, row in enumerate(rows):
        if not row.seeds:
            continue
        times, survival = kaplan_meier(row.hit_steps, row.limits)
        xs = [0.0, *times.tolist(), horizon]
        ys = [0.0, *(1.0 - survival).tolist()]
        ys.append(ys[-1])
        label = f"{row.optimizer} ({row.reached}/{len(row.seeds)})"
        ax.step(xs, ys, where="post", color=color_of(i), label=label, linewidth=1.6)
    ax.axhline(0.5, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlim(0, horizon)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of seeds at the target")
    ax.set_title(f"{task}: time to target (Kaplan-Meier)\ndotted line: median")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return to_data_uri(fig)


def profiles_figure(profiles: PerformanceProfiles) -> str:
    """AlgoPerf-style performance profiles ``rho(tau)`` of every optimizer."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    for i, (opt, rho) in enumerate(profiles.rho.items()):
        ax.step(
            profiles.taus,
            rho,
            where="post",
            color=color_of(i),
            label=f"{opt} (score {profiles.scores[opt]:.2f})",
        )
    ax.set_xlabel("tau (ratio to the fastest optimizer, steps to target)")
    ax.set_ylabel("fraction of tasks")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("performance profiles")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return to_data_uri(fig)
