"""``steplab landscape RUN``: the loss landscape around a run's final weights, from its files.

What it computes (see :mod:`steplab.observe.landscape` for the math):

1. ``interpolation``: the training loss on the line from the initial weights
   (rebuilt from ``config.json``'s task and seed) to the final weights (the
   latest checkpoint), ``a`` from -0.5 to 1.5 (Goodfellow et al. 2015);
2. ``random_plane``: a ``resolution x resolution`` grid on
   ``[-span, span]^2`` along two filter-normalised random directions around
   the final weights (Li et al. 2018);
3. ``pca_plane`` (with at least two checkpoints): the grid on the PCA plane
   of the path init -> checkpoints -> final, with the path projected onto it.

For a Lookahead run the path is its slow weights (the ones evaluated). The
loss is the task's training loss, averaged over ``batches`` fixed training
batches of the run's batch size (a seeded draw). It writes
``landscape.json`` (every grid) and ``landscape.png`` (three panels) into
``out`` (default ``RUN/landscape``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steplab.errors import SpecError
from steplab.observe.landscape import (
    Params,
    evaluate_points,
    filter_normalized_direction,
    pca_directions,
)
from steplab.observe.landscape_plot import draw_landscape
from steplab.state.checkpointer import Checkpointer
from steplab.state.contents import read
from steplab.tasks import Task, get_task

__all__ = ["LandscapeResult", "landscape"]


@dataclass(frozen=True)
class LandscapeResult:
    """Where :func:`landscape` wrote its files, and the data (as in the JSON file)."""

    json_path: Path
    png_path: Path
    data: dict[str, Any]


def _finite(values: Tensor) -> list[Any]:
    """Nested lists with non-finite losses as None (JSON has no NaN or Inf)."""
    return [_finite(v) if v.dim() else (float(v) if torch.isfinite(v) else None) for v in values]


def _config(run: Path) -> dict[str, Any]:
    if not (run / "config.json").is_file():
        raise SpecError(f"run: got {str(run)!r}, expected a run directory with config.json")
    try:
        config: dict[str, Any] = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SpecError(f"run: got {str(run)!r}, expected a run directory with config.json") \
            from None
    return config


def _path_weights(run: Path, names: list[str]) -> tuple[list[int], list[Params]]:
    root = run / "checkpoints"
    found = Checkpointer(root).checkpoints() if root.is_dir() else []
    if not found:
        raise SpecError(f"run: got {str(run)!r}, which has no checkpoints; expected a run "
                        "trained with --checkpoint-every N")
    steps, weights = [], []
    for path in found:
        contents = read(path)
        state = (contents.optimizer or {}).get("state", {})  # Lookahead: its slow weights
        weights.append({n: state.get(n, {}).get("slow_param", contents.model[n]).detach()
                        for n in names})
        steps.append(contents.step)
    return steps, weights


def _batches(task: Task, config: dict[str, Any], count: int, seed: int
             ) -> list[tuple[Tensor, Tensor]]:
    data = task.load_data(config.get("data_dir"))
    n = len(data.x_train)
    size = config.get("batch_size") or task.default_batch_size
    size = n if size == "full" else min(int(size), n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    picks = [order[i * size:(i + 1) * size] for i in range(min(count, max(1, n // size)))]
    return [(data.x_train[idx], data.y_train[idx]) for idx in picks]


def _grid(lo: tuple[float, float], hi: tuple[float, float], resolution: int
          ) -> tuple[Tensor, Tensor, Tensor]:
    xs = torch.linspace(lo[0], hi[0], resolution, dtype=torch.float64)
    ys = torch.linspace(lo[1], hi[1], resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # [len(ys), len(xs)], row = y
    return xs, ys, torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def _pca_extent(coords: Tensor) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = coords.min(dim=0).values, coords.max(dim=0).values
    pad = (hi - lo).clamp_min(1e-3) * 0.25
    return (float(lo[0] - pad[0]), float(lo[1] - pad[1])), (float(hi[0] + pad[0]),
                                                            float(hi[1] + pad[1]))


class _Points:
    """Evaluates the loss at points of weight space, counting them for the progress callback."""

    def __init__(self, model: torch.nn.Module, task: Task, data: list[tuple[Tensor, Tensor]],
                 chunk: int, total: int, on_progress: Callable[[int, int], None] | None) -> None:
        self.model, self.task, self.data, self.chunk = model, task, data, chunk
        self.total, self.done, self.on_progress = total, 0, on_progress

    def __call__(self, center: Params, dirs: list[Params], coeffs: Tensor) -> Tensor:
        base = self.done

        def tick(n: int) -> None:
            self.done = base + n
            if self.on_progress is not None:
                self.on_progress(self.done, self.total)
        return evaluate_points(self.model, self.task.loss, self.data, center, dirs, coeffs,
                               self.chunk, tick)


def _interpolation(points: _Points, init: Params, final: Params, resolution: int
                   ) -> dict[str, Any]:
    alphas = torch.linspace(-0.5, 1.5, resolution, dtype=torch.float64)
    line = {n: final[n] - init[n] for n in init}
    return {"alpha": alphas.tolist(), "loss": _finite(points(init, [line], alphas[:, None]))}


def _random_plane(points: _Points, final: Params, resolution: int, span: float, seed: int
                  ) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    d1, d2 = filter_normalized_direction(final, gen), filter_normalized_direction(final, gen)
    xs, ys, coeffs = _grid((-span, -span), (span, span), resolution)
    loss = points(final, [d1, d2], coeffs).reshape(resolution, resolution)
    return {"x": xs.tolist(), "y": ys.tolist(), "loss": _finite(loss), "span": span}


def _pca_plane(points: _Points, path: list[Params], steps: list[int], resolution: int
               ) -> dict[str, Any]:
    p1, p2, coords, explained = pca_directions(path)
    lo, hi = _pca_extent(coords)
    xs, ys, coeffs = _grid(lo, hi, resolution)
    loss = points(path[-1], [p1, p2], coeffs).reshape(resolution, resolution)
    return {"x": xs.tolist(), "y": ys.tolist(), "loss": _finite(loss), "path": coords.tolist(),
            "path_steps": steps, "explained_variance": list(explained)}


def landscape(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
              resolution: int = 21, batches: int = 4, span: float = 1.0, seed: int = 0,
              chunk: int = 64, on_progress: Callable[[int, int], None] | None = None
              ) -> LandscapeResult:
    """Compute the interpolation, random-plane and PCA-plane landscapes of a run.

    Args:
        run: a run directory with ``config.json`` and ``checkpoints/``.
        out: directory for ``landscape.json`` and ``landscape.png`` (default ``RUN/landscape``).
        resolution: points per axis of each grid (and along the interpolation line).
        batches: training batches the loss is averaged over (the cost grows linearly).
        span: the random-plane grid covers ``[-span, span]`` in each direction.
        seed: draws the random directions and the batches.
        chunk: grid points per batched forward pass.
        on_progress: called as ``on_progress(done, total)`` after each chunk.

    Returns:
        A :class:`LandscapeResult`.

    Raises:
        SpecError: bad arguments, not a run directory, or a run without checkpoints.
    """
    for option, value, least in (("resolution", resolution, 3), ("batches", batches, 1),
                                 ("chunk", chunk, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SpecError(f"{option}: got {value!r}, expected an integer >= {least}")
    if not span > 0:
        raise SpecError(f"span: got {span!r}, expected a number > 0")
    if not str(run).strip():
        raise SpecError("run: got '', expected a run directory")
    root = Path(run)
    config = _config(root)
    task = get_task(str(config["task"]), config.get("data_dir"))
    model = task.build_model(torch.Generator().manual_seed(int(config.get("seed", 0))))
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    steps, path = _path_weights(root, list(init))
    data = _batches(task, config, batches, seed)
    total = resolution + resolution**2 * (2 if len(path) >= 2 else 1)
    points = _Points(model, task, data, chunk, total, on_progress)
    result: dict[str, Any] = {
        "run": str(root), "task": config["task"], "optimizer": config.get("optimizer"),
        "checkpoint_steps": steps, "batches": len(data),
        "examples": sum(len(y) for _, y in data), "resolution": resolution, "seed": seed,
        "interpolation": _interpolation(points, init, path[-1], resolution),
        "random_plane": _random_plane(points, path[-1], resolution, span, seed),
    }
    if len(path) >= 2:
        result["pca_plane"] = _pca_plane(points, [init, *path], [0, *steps], resolution)
    target = Path(out) if out is not None else root / "landscape"
    target.mkdir(parents=True, exist_ok=True)
    json_path, png_path = target / "landscape.json", target / "landscape.png"
    json_path.write_text(json.dumps(result), encoding="utf-8")
    draw_landscape(result, png_path)
    return LandscapeResult(json_path, png_path, result)
