"""Draw a landscape (the dict :func:`steplab.observe.landscape_run.landscape` writes) as a PNG.

Three panels: the interpolation line (loss against ``a``; the initial weights
at 0, the final at 1), the random-plane contour (final weights at the centre)
and the PCA-plane contour with the optimizer's path on it (numbered by step).
Contour levels follow the quantiles of the grid's losses, so the basin around
the minimum keeps its detail when the loss far away is huge.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["draw_landscape"]


def _array(values: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)


def _levels(z: np.ndarray) -> np.ndarray:
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        return np.array([0.0, 1.0])
    levels = np.unique(np.quantile(finite, np.linspace(0.0, 0.95, 16)))
    return levels if levels.size >= 2 else np.array([finite.min(), finite.min() + 1.0])


def _contour(ax: Any, plane: dict[str, Any], title: str) -> None:
    x, y, z = np.array(plane["x"]), np.array(plane["y"]), _array(plane["loss"])
    filled = ax.contourf(x, y, z, levels=_levels(z), cmap="viridis", extend="max")
    ax.contour(x, y, z, levels=_levels(z), colors="white", linewidths=0.4, alpha=0.6)
    ax.figure.colorbar(filled, ax=ax, shrink=0.85, label="training loss")
    ax.plot([0], [0], marker="*", color="red", markersize=10, label="final weights")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def draw_landscape(data: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """Write the landscape figure of ``data`` to ``out`` (any matplotlib format).

    Args:
        data: the landscape dict (``interpolation``, ``random_plane``, optional ``pca_plane``).
        out: the image file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if "pca_plane" in data else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4))
    line = data["interpolation"]
    alpha = np.array(line["alpha"])
    loss = np.array([np.nan if v is None else v for v in line["loss"]])
    axes[0].plot(alpha, loss, color="C0")
    axes[0].axvline(0.0, color="grey", linestyle=":", linewidth=0.8)
    axes[0].axvline(1.0, color="grey", linestyle=":", linewidth=0.8)
    axes[0].set_xlabel("a  (0 = initial, 1 = final weights)", fontsize=8)
    axes[0].set_ylabel("training loss", fontsize=8)
    axes[0].set_title("1-D interpolation (Goodfellow et al. 2015)", fontsize=9)
    if np.all(loss[np.isfinite(loss)] > 0):
        axes[0].set_yscale("log")
    _contour(axes[1], data["random_plane"], "filter-normalised random plane (Li et al. 2018)")
    if panels == 3:
        plane = data["pca_plane"]
        ev = plane["explained_variance"]
        _contour(axes[2], plane, f"PCA plane of the path ({ev[0]:.0%} + {ev[1]:.0%} variance)")
        path = np.array(plane["path"])
        axes[2].plot(path[:, 0], path[:, 1], "o-", color="orange", markersize=3, linewidth=1.2,
                     label="optimizer path")
        for (px, py), step in zip(path[[0, -1]], [plane["path_steps"][0],
                                                 plane["path_steps"][-1]], strict=True):
            axes[2].annotate(f"step {step}", (px, py), fontsize=7, color="white")
        axes[2].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{data['task']}  {data.get('optimizer')}  ({data['examples']} examples)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
