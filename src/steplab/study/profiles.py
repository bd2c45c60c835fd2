"""AlgoPerf-style performance profiles over several tasks (Dahl et al., 2023).

For task ``w`` and optimizer ``s`` with time-to-target ``t[s, w]`` (steps or
seconds; ``inf`` when the target was not reached), the performance ratio is
``r[s, w] = t[s, w] / min_s' t[s', w]``. The profile of ``s`` is
``rho_s(tau) = |{w : r[s, w] <= tau}| / |W|`` and its score is the normalised
area ``B_s = 1 / (r_max - 1) * integral_1^{r_max} rho_s(tau) dtau`` with
``r_max = 4`` as in AlgoPerf.

References:
    Dahl et al., "Benchmarking Neural Network Training Algorithms", 2023,
    arXiv:2306.07179. Dolan and Moré, "Benchmarking optimization software
    with performance profiles", Math. Programming 91, 2002.

>>> times = {"a": {"t1": 100.0, "t2": 50.0}, "b": {"t1": 200.0, "t2": 50.0}}
>>> prof = performance_profiles(times)
>>> prof.scores["a"], round(prof.scores["b"], 2)
(1.0, 0.83)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["PerformanceProfiles", "performance_profiles"]


@dataclass(frozen=True)
class PerformanceProfiles:
    """Performance profiles of several optimizers over the same tasks.

    Attributes:
        taus: the grid of ratios ``tau`` in ``[1, r_max]``.
        rho: optimizer -> fraction of tasks with ratio ``<= tau``, per ``tau``.
        ratios: optimizer -> task -> performance ratio (``inf`` when not reached).
        scores: optimizer -> normalised area under its profile (1 = best everywhere).
    """

    taus: list[float]
    rho: dict[str, list[float]]
    ratios: dict[str, dict[str, float]]
    scores: dict[str, float]


def performance_profiles(
    times: Mapping[str, Mapping[str, float]], r_max: float = 4.0, n_tau: int = 301
) -> PerformanceProfiles:
    """Compute performance profiles from times-to-target.

    Args:
        times: optimizer -> task -> time-to-target (``inf`` or nan: not reached).
        r_max: largest ratio considered.
        n_tau: points of the ``tau`` grid.

    Returns:
        The profiles and scores. A task no optimizer solved counts as failed
        for every optimizer.
    """
    optimizers = list(times)
    tasks = sorted({t for row in times.values() for t in row})
    taus = np.linspace(1.0, r_max, n_tau)
    ratios: dict[str, dict[str, float]] = {s: {} for s in optimizers}
    for task in tasks:
        values = {s: _finite_or_inf(times[s].get(task, math.inf)) for s in optimizers}
        best = min(values.values())
        for s in optimizers:
            ok = math.isfinite(best) and best > 0 and math.isfinite(values[s])
            ratios[s][task] = (
                values[s] / best if ok else (1.0 if values[s] == best == 0 else math.inf)
            )
    rho: dict[str, list[float]] = {}
    scores: dict[str, float] = {}
    for s in optimizers:
        r = np.array([ratios[s][t] for t in tasks], dtype=float)
        curve = np.array([(r <= tau).mean() if r.size else 0.0 for tau in taus])
        rho[s] = [float(v) for v in curve]
        area = float(np.sum((curve[1:] + curve[:-1]) / 2.0 * np.diff(taus)))
        scores[s] = area / (r_max - 1.0)
    return PerformanceProfiles([float(t) for t in taus], rho, ratios, scores)


def _finite_or_inf(value: float | None) -> float:
    if value is None or not math.isfinite(value):
        return math.inf
    return float(value)
