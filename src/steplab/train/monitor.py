"""Gradient monitoring at log steps: global norm, per-layer norms, update-to-weight ratio.

All three cost a pass over the parameters, so the loop computes them only on
steps that write a ``metrics.jsonl`` row:

* ``grad_norm``: ``‖g‖₂ = √(Σᵢ ‖gᵢ‖₂²)`` over all gradients, before clipping;
* ``layer_grad_norms``: ``‖gᵢ‖₂`` for each named parameter ``i``, before clipping;
* ``update_ratio``: ``‖θ_{t+1} − θ_t‖₂ / ‖θ_t‖₂`` over all parameters, the
  relative size of the step (about 1e-3 is the usual healthy range; Karpathy,
  "A Recipe for Training Neural Networks", 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["UpdateProbe", "layer_grad_norms"]


def layer_grad_norms(names: Sequence[str], params: Sequence[torch.Tensor]) -> dict[str, float]:
    """Return ``{name: ‖grad‖₂}`` for each parameter that has a gradient.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> layer_grad_norms(["w"], [p])
        {'w': 5.0}
    """
    pairs = [(n, p.grad) for n, p in zip(names, params, strict=True) if p.grad is not None]
    if not pairs:
        return {}
    norms = torch._foreach_norm([g for _, g in pairs])
    values = torch.stack([v.float() for v in norms]).tolist()
    return {n: float(v) for (n, _), v in zip(pairs, values, strict=True)}


class UpdateProbe:
    """Measures ``‖θ_{t+1} − θ_t‖ / ‖θ_t‖`` around one optimizer step.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(4))
        >>> probe = UpdateProbe([p])
        >>> with torch.no_grad():
        ...     _ = p.add_(0.5)
        >>> probe.ratio()
        0.5
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        with torch.no_grad():
            self.before = [p.detach().clone() for p in self.params]

    def ratio(self) -> float:
        """Relative change of the parameters since the probe was made (0 if they were all 0)."""
        with torch.no_grad():
            deltas = torch._foreach_sub([p.detach() for p in self.params], self.before)
            num = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(deltas)))
            den = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self.before)))
        d = float(den)
        return float(num) / d if d > 0 else 0.0
