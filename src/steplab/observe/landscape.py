"""Loss landscapes: directions in weight space and batched evaluation of the loss along them.

- :func:`filter_normalized_direction`: a Gaussian random direction scaled,
  filter by filter, to the norms of the weights' filters (Li et al. 2018,
  "Visualizing the Loss Landscape of Neural Nets", Sec. 4): for each filter
  ``j`` of a weight (row ``j`` along dim 0, i.e. one output unit or channel),
  ``d_j <- d_j / ||d_j|| * ||theta_j||``. This removes the scale invariance of
  ReLU networks, so that surfaces of different networks compare. One-dimensional
  parameters (biases, norm scales) get a zero direction, as in the paper's
  code, unless every parameter is one-dimensional (a 2-D test function), when
  each is normalised as one filter.
- :func:`pca_directions`: the top two principal directions of an optimization
  path ``theta_i - theta_final`` and the path's coordinates in that plane (Li
  et al. Sec. 7: random directions are nearly orthogonal to the path, the PCA
  plane holds most of its motion).
- :func:`evaluate_points`: the loss at ``center + sum_k c_k d_k`` for many
  coefficient vectors at once, with ``torch.func.functional_call`` under
  ``torch.vmap`` over a chunk of points (one batched forward pass per chunk and
  batch, no model copies).

The 1-D interpolation ``theta(a) = theta_0 + a (theta_1 - theta_0)`` of
Goodfellow et al. 2015 ("Qualitatively characterizing neural network
optimization problems") is :func:`evaluate_points` with the one direction
``theta_1 - theta_0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["Params", "evaluate_points", "filter_normalized_direction", "pca_directions"]

#: parameters by name
Params = dict[str, Tensor]


def filter_normalized_direction(params: Params, generator: torch.Generator) -> Params:
    """A random direction with each filter scaled to the norm of the same filter of ``params``.

    Args:
        params: the weights the direction is normalised to, by name.
        generator: draws the Gaussian entries (in ``params`` order).

    Returns:
        A direction with the same names and shapes.

    Example:
        >>> w = {"w": torch.tensor([[3.0, 4.0], [0.0, 1.0]]), "b": torch.ones(2)}
        >>> d = filter_normalized_direction(w, torch.Generator().manual_seed(0))
        >>> [round(float(r.norm()), 4) for r in d["w"]], d["b"].tolist()
        ([5.0, 1.0], [0.0, 0.0])
    """
    all_flat = all(p.dim() <= 1 for p in params.values())
    out: Params = {}
    for name, p in params.items():
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if p.dim() <= 1 and not all_flat:
            out[name] = torch.zeros_like(p)
            continue
        rows_p = p.detach().double().reshape(p.shape[0] if p.dim() > 1 else 1, -1)
        rows_d = d.reshape(rows_p.shape)
        scale = rows_p.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[name] = (rows_d * scale).reshape(p.shape).to(p.dtype)
    return out


def _flat(params: Params) -> Tensor:
    return torch.cat([p.detach().double().reshape(-1) for p in params.values()])


def _unflat(vector: Tensor, like: Params) -> Params:
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start:start + p.numel()].reshape(p.shape).to(p.dtype)
        start += p.numel()
    return out


def pca_directions(path: Sequence[Params]) -> tuple[Params, Params, Tensor, tuple[float, float]]:
    """The PCA plane of an optimization path, centred on its last point.

    Args:
        path: weights along the path (at least 3 points), the final weights last.

    Returns:
        ``(d1, d2, coords, explained)``: two orthonormal directions (as
        parameters), the path's coordinates ``[len(path), 2]`` in that plane
        (the last point at the origin), and the fraction of the path's variance
        each direction explains.

    Raises:
        ValueError: fewer than 3 points.

    Example:
        >>> pts = [{"w": torch.tensor([x, y, 0.0])} for x, y in [(2, 0), (1, 1), (0, 0)]]
        >>> d1, d2, coords, explained = pca_directions(pts)
        >>> round(sum(explained), 6), coords[-1].tolist()
        (1.0, [0.0, 0.0])
    """
    if len(path) < 3:
        raise ValueError(f"path: got {len(path)} points, expected at least 3")
    final = _flat(path[-1])
    rows = torch.stack([_flat(p) - final for p in path[:-1]])
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)
    energy = s.pow(2)
    total = float(energy.sum()) or 1.0
    directions = vh[:2]
    coords = torch.cat([rows @ directions.T, torch.zeros(1, 2, dtype=rows.dtype)])
    explained = (float(energy[0]) / total, float(energy[1]) / total if len(s) > 1 else 0.0)
    return (_unflat(directions[0], path[-1]), _unflat(directions[1], path[-1]), coords,
            explained)


def _stack_points(center: Params, directions: Sequence[Params], coeffs: Tensor) -> Params:
    """``center + coeffs @ directions`` for each row of ``coeffs``, stacked by name."""
    out = {}
    for name, c in center.items():
        dirs = torch.stack([d[name].to(c.dtype) for d in directions])  # [k, *shape]
        moved = torch.tensordot(coeffs.to(c.dtype), dirs, dims=1)  # [n, *shape]
        out[name] = c.unsqueeze(0) + moved
    return out


def evaluate_points(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    center: Params,
    directions: Sequence[Params],
    coeffs: Tensor,
    chunk: int = 64,
    on_chunk: Callable[[int], None] | None = None,
) -> Tensor:
    """The mean loss over ``batches`` at ``center + sum_k coeffs[i, k] * directions[k]``.

    Args:
        model: gives the architecture and buffers; its parameters are not used or changed.
        loss_fn: ``loss_fn(output, target)``, a scalar mean over the batch.
        batches: ``(x, y)`` pairs; the loss is averaged over them weighted by size.
        center: the weights at the origin, by parameter name (every parameter).
        directions: directions by name (missing names: zero).
        coeffs: ``[n_points, len(directions)]``.
        chunk: points evaluated in one vmapped forward pass.
        on_chunk: called with the number of points done after each chunk (progress).

    Returns:
        A float64 tensor of ``n_points`` losses.
    """
    model = model.eval()
    buffers = dict(model.named_buffers())
    dirs = [{n: d.get(n, torch.zeros_like(c)) for n, c in center.items()} for d in directions]
    data = list(batches)
    total = sum(len(y) for _, y in data)

    def point_loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(model, (params, buffers), (x,))
        return loss_fn(out, y)

    batched = torch.vmap(point_loss, in_dims=(0, None, None))
    losses = torch.zeros(len(coeffs), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(coeffs), chunk):
            stacked = _stack_points(center, dirs, coeffs[start:start + chunk])
            acc = torch.zeros(len(coeffs[start:start + chunk]), dtype=torch.float64)
            for x, y in data:
                acc += batched(stacked, x, y).double() * (len(y) / total)
            losses[start:start + chunk] = acc
            if on_chunk is not None:
                on_chunk(min(start + chunk, len(coeffs)))
    return losses
