"""Calibration by simulation: do the verdicts' levels hold at the sample sizes studies use?

Each cell draws ``reps`` studies of ``n`` paired seeds from a known model and
measures how often the analysis errs:

* **false-positive rate**: under no effect, how often the two-sided test at
  ``alpha`` rejects (must be at most ``alpha``);
* **coverage**: how often the ``1 - alpha`` interval's tests accept the true
  effect (must be at least ``1 - alpha``); for the final metric also the
  TOST's false "equivalent" rate when the true effect sits on the margin.

Models (the paired design: a seed fixes initialisation and data order, so
both optimizers share a seed effect and add their own noise):

* final metric: ``a_i = s_i + e_ai + delta``, ``b_i = s_i + e_bi``;
* time to target: ``T_b = exp(mu + s_i + e_bi)``, ``T_a = theta · exp(mu + s_i + e_ai)``,
  rounded up to an evaluation grid of 1% of a 600-step run and censored at 600
  (about a fifth of the runs never reach the target).

Noise ``e`` is normal or skewed (a centred exponential). The same vectorised
functions the verdicts use compute every p-value. ``tests/study`` asserts the
bounds; ``scripts/verdict_calibration.py`` prints the table for the docs.

>>> row = simulate("final", 5, "normal", effect=0.0, reps=400, seed=1)
>>> row["false_positive_rate"] <= 0.1
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from steplab.study.verdicts.censored import sign_flip_pvalues, truncated_log_diffs
from steplab.study.verdicts.paired import paired_t_pvalues

__all__ = ["CELLS", "calibration_table", "simulate"]

#: the grid every calibration run covers: (quantity, n, noise, effect)
CELLS: tuple[tuple[str, int, str, float], ...] = tuple(
    (q, n, noise, effect)
    for q, effects in (("final", (0.0, 0.02)), ("steps_to_target", (0.0, 0.3)))
    for n in (3, 5, 10)
    for noise in ("normal", "skewed")
    for effect in effects
)
_SCALE = {"final": 0.02, "steps_to_target": 0.25}
_HORIZON, _RESOLUTION, _MU = 600.0, 6.0, math.log(420.0)


def _noise(rng: np.random.Generator, kind: str, scale: float, shape: tuple[int, int]) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0.0, scale, shape)
    return rng.exponential(scale, shape) - scale  # right-skewed, mean 0


def _final_cell(
    rng: np.random.Generator, n: int, noise: str, delta: float, reps: int, alpha: float
) -> dict[str, float]:
    scale = _SCALE["final"]
    d = _noise(rng, noise, scale, (reps, n)) - _noise(rng, noise, scale, (reps, n)) + delta
    greater, less = paired_t_pvalues(d, 0.0)
    reject = np.minimum(1.0, 2.0 * np.minimum(greater, less)) < alpha
    g_true, l_true = paired_t_pvalues(d, delta)
    covered = (g_true > alpha / 2) & (l_true > alpha / 2)
    margin = abs(delta) if delta else scale  # truth on the margin: "equivalent" is wrong
    d_edge = d - delta + margin
    tost = np.maximum(paired_t_pvalues(d_edge, -margin)[0], paired_t_pvalues(d_edge, margin)[1])
    return {
        "rejection_rate": float(reject.mean()),
        "coverage": float(covered.mean()),
        "false_equivalence_rate": float((tost < alpha).mean()),
    }


def _time_cell(
    rng: np.random.Generator, n: int, noise: str, speedup: float, reps: int, alpha: float
) -> dict[str, float]:
    scale = _SCALE["steps_to_target"]
    seed = rng.normal(0.0, 0.3, (reps, n))
    theta = 1.0 - speedup

    def times(factor: float) -> np.ndarray:
        raw = factor * np.exp(_MU + seed + _noise(rng, noise, scale, (reps, n)))
        grid = np.ceil(raw / _RESOLUTION) * _RESOLUTION
        return np.where(grid <= _HORIZON, grid, np.inf)

    ta, tb = times(theta), times(1.0)
    with np.errstate(divide="ignore"):
        la, lb = np.log(ta), np.log(tb)
    limit = np.full((reps, n), math.log(_HORIZON))
    low0, high0 = sign_flip_pvalues(truncated_log_diffs(la, lb, limit, limit, 0.0))
    reject = np.minimum(1.0, 2.0 * np.minimum(low0, high0)) < alpha
    low, high = sign_flip_pvalues(truncated_log_diffs(la, lb, limit, limit, math.log(theta)))
    covered = (low > alpha / 2) & (high > alpha / 2)
    return {
        "rejection_rate": float(reject.mean()),
        "coverage": float(covered.mean()),
        "censored_fraction": float(np.mean(~np.isfinite(tb))),
    }


def simulate(
    quantity: str, n: int, noise: str, effect: float, reps: int = 4000, alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """One calibration cell.

    Args:
        quantity: ``"final"`` (effect: a difference) or ``"steps_to_target"`` (a speed-up).
        n: paired seeds per simulated study.
        noise: ``"normal"`` or ``"skewed"``.
        effect: the true effect (0: the null).
        reps: simulated studies.
        alpha: the tests' level.
        seed: seed of the simulation.

    Returns:
        The cell's settings and rates; ``false_positive_rate`` is the rejection
        rate when ``effect == 0`` (else ``power``).
    """
    rng = np.random.default_rng([seed, n, len(noise), int(effect * 1000)])
    cell = _final_cell if quantity == "final" else _time_cell
    rates = cell(rng, n, noise, effect, reps, alpha)
    name = "false_positive_rate" if effect == 0.0 else "power"
    rates[name] = rates.pop("rejection_rate")
    return {"quantity": quantity, "n": n, "noise": noise, "effect": effect, "reps": reps,
            "alpha": alpha, **rates}


def calibration_table(reps: int = 4000, alpha: float = 0.05, seed: int = 0) -> list[dict[str, Any]]:
    """Every cell of :data:`CELLS`."""
    return [simulate(q, n, noise, e, reps, alpha, seed) for q, n, noise, e in CELLS]
