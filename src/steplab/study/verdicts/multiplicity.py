"""Holm's step-down adjustment, with a cap for hypotheses that cannot all be true.

Holm (1979): sort the ``K`` p-values, multiply the ``j``-th smallest by
``K - j + 1``, make the sequence non-decreasing and cap it at 1. Rejecting the
hypotheses whose adjusted p-value is below ``alpha`` keeps the chance of any
false rejection at most ``alpha``, whatever the dependence between tests.

Each comparison of a study carries two hypotheses that cannot both be true:
"no difference" (``effect = 0``) and "not equivalent" (``|effect| >= margin``).
So at most ``cap = K / 2`` of the ``K`` nulls are true, and the multiplier can
be ``min(K - j + 1, cap)``: the usual proof of Holm goes through unchanged
(when the first true null is rejected at step ``j``, at least
``min(K - j + 1, cap)`` hypotheses remain, and at most that many are true).
This is the simplest case of Shaffer's (1986) logically constrained Holm.

>>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.2])]
[0.04, 0.09, 0.09, 0.2]
>>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.2], cap=2)]
[0.02, 0.08, 0.06, 0.2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["holm"]


def holm(pvalues: Sequence[float], cap: int | None = None) -> list[float]:
    """Holm-adjusted p-values, in the input order.

    Args:
        pvalues: raw p-values (nan counts as 1).
        cap: the most hypotheses that can be true at once (None: all of them).

    Returns:
        Adjusted p-values; reject those below the family's ``alpha``.

    Raises:
        ValueError: ``cap`` is below 1.
    """
    p = np.nan_to_num(np.asarray(pvalues, dtype=float), nan=1.0)
    k = p.size
    if k == 0:
        return []
    if cap is not None and cap < 1:
        raise ValueError(f"cap: got {cap}, expected an integer >= 1")
    order = np.argsort(p, kind="stable")
    factors = np.arange(k, 0, -1, dtype=float)
    if cap is not None:
        factors = np.minimum(factors, float(cap))
    stepped = np.maximum.accumulate(np.minimum(1.0, factors * p[order]))
    out = np.empty(k)
    out[order] = stepped
    return [float(v) for v in out]
