"""Watch the optimizer state while training: moments, step sizes, update ratios, Lookahead's gap.

Every ``every`` steps :class:`StateMonitor` measures, per parameter (layer) and
over all parameters:

* ``m_norm``: ``‖m‖₂`` of the first-moment buffer (``exp_avg``,
  ``momentum_buffer``, ``grad_avg``); overall ``√(Σ ‖mᵢ‖²)``;
* ``v_p5``, ``v_p50``, ``v_p95``: quantiles of the second-moment buffer's
  elements (``exp_avg_sq``, ``square_avg``, ``sum``); overall over all elements;
* ``step_size_min``, ``step_size_median``, ``step_size_max``: of the
  per-element effective step size ``lr / (√v̂ + eps)`` (see
  :func:`steplab.state.inspection.effective_step_size`; adaptive rules only);
* ``update_ratio``: ``‖θ_{t+1} − θ_t‖₂ / ‖θ_t‖₂`` across this step;
* ``slow_fast_distance`` (Lookahead only): ``‖φ − θ‖₂`` between slow and fast
  weights just before the step, i.e. the gap the coming synchronisation closes
  when the step is a sync step;
* ``clip_fraction`` (overall only, when a clip is set and
  :meth:`StateMonitor.observe_gradients` was called before clipping): the
  fraction of gradient elements the clip changed: 1.0 when ``clip_norm``
  rescaled the gradient (every element), else the fraction with
  ``|g| > clip_value``.

It works as a pair of optimizer step hooks, so it serves ``fit`` and any loop of
your own::

    monitor = StateMonitor(optimizer, model, every=50, on_row=print).attach()
    for x, y in batches:
        loss_fn(model(x), y).backward()
        optimizer.step()              # the hooks measure on every 50th step
        optimizer.zero_grad()

Quantiles and medians of tensors above 16,384 elements (and over all layers)
use an evenly strided sample of 16,384 elements; minima, maxima and norms are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn

from steplab.errors import SpecError
from steplab.state.inspection import (
    FIRST_MOMENT,
    SECOND_MOMENT,
    decoded_buffers,
    effective_step_size,
)
from steplab.state.names import inner_of, is_lookahead, named_parameters

__all__ = ["Row", "StateMonitor"]

#: one measurement: overall statistics plus ``"layers": {name: {statistic: value}}``
Row = dict[str, Any]
_SAMPLE = 1 << 14  # quantiles of bigger tensors use an evenly strided sample of this size
_Q = torch.tensor([0.05, 0.5, 0.95])


def _sample(x: torch.Tensor) -> torch.Tensor:
    flat = x.detach().reshape(-1).float()
    return flat[:: flat.numel() // _SAMPLE + 1] if flat.numel() > _SAMPLE else flat


def _v_quantiles(v: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(v, _Q.to(v.dtype)).tolist()
    return {"v_p5": q[0], "v_p50": q[1], "v_p95": q[2]}


def _step_stats(sizes: torch.Tensor) -> dict[str, float]:
    low, high = torch.aminmax(sizes)
    return {"step_size_min": float(low), "step_size_median": float(torch.quantile(
        _sample(sizes), 0.5)), "step_size_max": float(high)}


def _norms(tensors: list[torch.Tensor]) -> list[float]:
    """L2 norms of ``tensors``, in one fused call."""
    if not tensors:
        return []
    return [float(v) for v in torch.stack(torch._foreach_norm(tensors)).double().tolist()]


def _first(buffers: dict[str, Any], names: frozenset[str]) -> torch.Tensor | None:
    for key in sorted(names):
        value = buffers.get(key)
        if isinstance(value, torch.Tensor) and value.numel():
            return value
    return None


class StateMonitor:
    """Measure optimizer state every ``every`` steps, per layer and overall.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (a steplab ``Lookahead`` included).
        model: names the parameters; without it, the groups' ``param_names``
            or ``param_<i>``.
        every: measure on steps ``every, 2*every, ...`` (counted by :attr:`step`).
        clip_norm: the global-norm clip the loop applies (for ``clip_fraction``).
        clip_value: the element clip the loop applies (for ``clip_fraction``).
        on_row: called as ``on_row(step, row)`` after each measured step.
        start_step: steps already done (when resuming).

    Raises:
        SpecError: ``every`` is not an integer >= 1.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> opt = torch.optim.Adam(model.parameters(), lr=0.1)
        >>> rows = []
        >>> monitor = StateMonitor(opt, model, every=2, on_row=lambda s, r: rows.append(s))
        >>> with monitor:
        ...     for _ in range(4):
        ...         model(torch.ones(1, 2)).sum().backward(); opt.step(); opt.zero_grad()
        >>> rows, sorted(monitor.last["layers"])
        ([2, 4], ['bias', 'weight'])
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module | None = None, *,
                 every: int = 100, clip_norm: float | None = None,
                 clip_value: float | None = None,
                 on_row: Callable[[int, Row], None] | None = None, start_step: int = 0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise SpecError(f"every: got {every!r}, expected an integer >= 1")
        self.optimizer, self.every, self.on_row = optimizer, every, on_row
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.step = start_step
        self.last: Row | None = None
        named = named_parameters(model) if model is not None else {}
        by_id = {id(p): n for n, p in named.items()}
        self._params: list[tuple[str, nn.Parameter, dict[str, Any]]] = []
        for g_index, group in enumerate(optimizer.param_groups):
            names = group.get("param_names") or []
            for i, p in enumerate(group["params"]):
                name = by_id.get(id(p)) or (names[i] if i < len(names) else f"param_{g_index}_{i}")
                self._params.append((name, p, group))
        self._before: list[torch.Tensor] | None = None
        self._gap: dict[str, float] = {}
        self._clip: float | None = None
        self._handles: list[Any] = []

    # -- hooks -------------------------------------------------------------------------------

    @property
    def due(self) -> bool:
        """True when the coming optimizer step is one the monitor measures."""
        return (self.step + 1) % self.every == 0

    def attach(self) -> StateMonitor:
        """Register the optimizer step hooks; returns ``self``."""
        if not self._handles:
            self._handles = [self.optimizer.register_step_pre_hook(self._pre),
                             self.optimizer.register_step_post_hook(self._post)]
        return self

    def detach(self) -> None:
        """Remove the optimizer step hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> StateMonitor:
        return self.attach()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.detach()

    def observe_gradients(self) -> None:
        """Record ``clip_fraction`` from the raw gradients; call before clipping, on due steps."""
        if not self.due or (self.clip_norm is None and self.clip_value is None):
            return
        grads = [p.grad for _, p, _ in self._params if p.grad is not None]
        if not grads:
            return
        with torch.no_grad():
            norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
            if self.clip_norm is not None and norm > self.clip_norm:
                self._clip = 1.0
            elif self.clip_value is not None:
                over = sum(int((g.abs() > self.clip_value).sum()) for g in grads)
                self._clip = over / sum(g.numel() for g in grads)
            else:
                self._clip = 0.0

    def _pre(self, *_: Any) -> None:
        if not self.due:
            return
        with torch.no_grad():
            self._before = [p.detach().clone() for _, p, _ in self._params]
            self._gap = self._slow_fast_gap()

    def _post(self, *_: Any) -> None:
        self.step += 1
        if self._before is None:
            return
        row = self.measure(self._before)
        self._before, self._gap, self._clip = None, {}, None
        self.last = row
        if self.on_row is not None:
            self.on_row(self.step, row)

    # -- measurements ------------------------------------------------------------------------

    def _slow_fast_gap(self) -> dict[str, float]:
        if not is_lookahead(self.optimizer):
            return {}
        slow_state: dict[torch.Tensor, dict[str, torch.Tensor]] = getattr(
            self.optimizer, "slow_state", {})
        out = {}
        for name, p, _ in self._params:
            slow = slow_state.get(p, {}).get("slow_param")
            if slow is not None:
                out[name] = float(torch.linalg.vector_norm((slow - p.detach()).double()))
        return out

    def measure(self, before: Sequence[torch.Tensor]) -> Row:
        """Statistics of the state now, with ``before`` the parameters before the step.

        Args:
            before: each parameter's value before the step, in optimizer order.

        Returns:
            A :data:`Row`: overall statistics and ``"layers"``.
        """
        state = inner_of(self.optimizer).state
        layers: dict[str, dict[str, float]] = {}
        vs: list[torch.Tensor] = []
        sizes: list[torch.Tensor] = []
        decoded: dict[str, dict[str, Any]] = {}
        with torch.no_grad():
            params = [p.detach() for _, p, _ in self._params]
            deltas = _norms(list(torch._foreach_sub(params, list(before))))
            norms = _norms(list(before))
            for (name, p, group), delta, norm in zip(self._params, deltas, norms, strict=True):
                stats = layers[name] = {"update_ratio": delta / norm if norm > 0 else 0.0}
                buffers = decoded_buffers(state.get(p, {}), p.numel())  # lean state: decoded
                decoded[name] = buffers
                v = _first(buffers, SECOND_MOMENT)
                if v is not None:
                    vs.append(v.detach().reshape(-1).float())
                    stats |= _v_quantiles(_sample(v))
                size = effective_step_size(buffers, group) if buffers else None
                if size is not None and size.numel():
                    sizes.append(size.reshape(-1))
                    stats |= _step_stats(size)
                if name in self._gap:
                    stats["slow_fast_distance"] = self._gap[name]
            firsts = [(name, m) for name, _, _ in self._params
                      if (m := _first(decoded[name], FIRST_MOMENT)) is not None]
            for (name, _), m_norm in zip(firsts, _norms([m for _, m in firsts]), strict=True):
                layers[name]["m_norm"] = m_norm
        m_sq = sum(layers[name]["m_norm"] ** 2 for name, _ in firsts)
        deltas_sq, before_sq = sum(d * d for d in deltas), sum(n * n for n in norms)
        return self._overall(layers, m_sq, deltas_sq, before_sq, vs, sizes)

    def _overall(self, layers: dict[str, dict[str, float]], m_sq: float, deltas_sq: float,
                 before_sq: float, vs: list[torch.Tensor], sizes: list[torch.Tensor]) -> Row:
        row: Row = {"update_ratio": math.sqrt(deltas_sq / before_sq) if before_sq > 0 else 0.0}
        if any("m_norm" in stats for stats in layers.values()):
            row["m_norm"] = math.sqrt(m_sq)
        if vs:  # strided over all elements: each layer counts by its size
            row |= _v_quantiles(_sample(torch.cat(vs)))
        if sizes:
            row |= _step_stats(torch.cat(sizes))
        if self._gap:
            row["slow_fast_distance"] = math.sqrt(sum(d * d for d in self._gap.values()))
        if self._clip is not None:
            row["clip_fraction"] = self._clip
        row["layers"] = layers
        return row
