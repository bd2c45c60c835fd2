"""Reading an LR range-test curve: smoothing, the two suggestion rules, and the outputs.

Both rules read a *zero-lag* smoothing of the loss against ``log10(lr)``: a
centered moving average of log-loss over ``n/25`` points either side. The
causal EMA the sweep uses for its stop rule lags the raw loss by about
``1/(1-β)`` steps, which on an exponential sweep is a large factor in learning
rate (20 steps of a 100-step sweep over 8 decades is 40x); averaging logs keeps
the explosion at the end of the sweep from leaking back into the valley.

* **Steepest descent** (Smith 2017, section 3.3; the rule of torch-lr-finder
  and Lightning, made robust): the slope ``d loss / d log10(lr)`` is the
  least-squares slope over a window of ``n/20`` points either side (not the
  difference of neighbours, which noise dominates: torch-lr-finder #106,
  Lightning #1767), and only points up to the minimum count. The suggestion is
  the lr where that slope is most negative. It is conservative: progress
  accumulates over the sweep, so the loss falls fastest well before the best
  constant rate (about ``1/(12L)`` on a quadratic of curvature ``L``).
* **Valley** (the headline suggestion): the *floor* of the valley is the
  contiguous stretch around the minimum where the smoothed loss is within 10%
  of its total fall of the minimum; the suggestion is its geometric middle,
  the lr farthest (in log-lr) from both the descent and the divergence. On a
  noisy quadratic of curvature ``L`` it lands at about ``0.8/L`` (the best
  constant rate is ``1/L``, divergence starts at ``2/L``). fastai's ``valley``
  suggester and the torch-lr-finder maintainers' advice to pick "half-way or
  two-thirds down the descending part" (#56) read the same region by eye.

When the curve gives no clear answer (too few points, the loss never falls,
the fall is under 5%), the suggestions are None and ``problem`` says why.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LRRangeResult", "analyse_curve", "plot_curve"]

#: fewer recorded points than this gives no suggestion
MIN_POINTS = 10
#: a relative fall of the smoothed loss smaller than this counts as a flat curve
MIN_RELATIVE_FALL = 0.05
#: the valley floor: where the smoothed loss is within this fraction of its fall of the minimum
FLOOR_TOLERANCE = 0.1


@dataclass(frozen=True)
class LRRangeResult:
    """The curve of an LR range test and what it suggests.

    Attributes:
        lrs: the learning rate of each recorded step.
        losses: the raw training loss of each step.
        smoothed: the bias-corrected EMA of the loss (what the stop rule watches).
        centered: the zero-lag smoothing (centered moving average) the suggestions read.
        steepest_lr: lr of steepest descent per log-lr before the minimum, or None.
        valley_lr: geometric middle of the valley floor, or None.
        min_loss_lr: lr at the minimum of the centered curve, or None.
        suggested_lr: ``valley_lr``, else ``steepest_lr``; None when there is no clear answer.
        stop_reason: why the sweep ended.
        problem: why the curve gives no clear answer, or None.
        num_steps: the planned length of the sweep.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    centered: list[float]
    steepest_lr: float | None
    valley_lr: float | None
    min_loss_lr: float | None
    suggested_lr: float | None
    stop_reason: str
    problem: str | None
    num_steps: int

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; returns the path."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return out

    def plot(self, path: str | Path, title: str = "LR range test") -> Path:
        """Save the curve with both suggestions marked as a PNG (see :func:`plot_curve`)."""
        return plot_curve(self, path, title)

    def summary_line(self) -> str:
        """One line for a terminal: the suggestion, or why there is none."""
        if self.suggested_lr is None:
            return f"no clear suggestion: {self.problem}"
        return (
            f"suggested lr {self.suggested_lr:.3g} (valley {_fmt(self.valley_lr)}, "
            f"steepest {_fmt(self.steepest_lr)}, minimum at {_fmt(self.min_loss_lr)}; "
            f"{len(self.lrs)} steps, {self.stop_reason})"
        )


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def _ema(values: np.ndarray, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average, causal."""
    out = np.empty_like(values)
    avg = 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1.0 - beta) * float(v)
        out[i] = avg / (1.0 - beta ** (i + 1))
    return out


def _centered_smooth(values: np.ndarray, half: int) -> np.ndarray:
    """Centered moving average over ``[i-half, i+half]`` (clipped), of log-loss when all > 0.

    Averaging logs (a geometric mean) keeps the explosion at the end of a sweep
    from leaking backwards into the valley before it.
    """
    positive = bool(np.all(values > 0))
    y = np.log(values) if positive else values
    cum = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(len(y))
    lo, hi = np.maximum(0, idx - half), np.minimum(len(y), idx + half + 1)
    out = (cum[hi] - cum[lo]) / (hi - lo)
    result: np.ndarray = np.exp(out) if positive else out
    return result


def _windowed_slope(x: np.ndarray, y: np.ndarray, half: int) -> np.ndarray:
    """Least-squares slope of y against x over ``[i-half, i+half]`` (clipped) at each i."""
    slopes = np.zeros_like(y)
    for i in range(len(y)):
        lo, hi = max(0, i - half), min(len(y), i + half + 1)
        xs, ys = x[lo:hi], y[lo:hi]
        dx = xs - xs.mean()
        denom = float((dx * dx).sum())
        slopes[i] = float((dx * (ys - ys.mean())).sum()) / denom if denom > 0 else 0.0
    return slopes


def _valley_floor(centered: np.ndarray, i_min: int) -> tuple[int, int]:
    """The contiguous stretch around the minimum within ``FLOOR_TOLERANCE`` of the total fall."""
    level = centered[i_min] + FLOOR_TOLERANCE * (centered[0] - centered[i_min])
    lo = hi = i_min
    while lo > 0 and centered[lo - 1] <= level:
        lo -= 1
    while hi < len(centered) - 1 and centered[hi + 1] <= level:
        hi += 1
    return lo, hi


def _problem(centered: np.ndarray, i_min: int) -> str | None:
    n = len(centered)
    if n < MIN_POINTS:
        return (
            f"only {n} steps were recorded before the sweep stopped (at least {MIN_POINTS} "
            "needed); lower min_lr or raise num_steps"
        )
    start, low = float(centered[0]), float(centered[i_min])
    fall = (start - low) / abs(start) if start != 0 else math.inf
    rises = float(centered[-1]) - start > MIN_RELATIVE_FALL * abs(start)
    if fall < MIN_RELATIVE_FALL and not rises:
        return (
            f"flat curve: the smoothed loss fell by only {100 * max(fall, 0.0):.1f}%; widen "
            "the lr range or check that the model can still learn"
        )
    if i_min < 2 or fall < MIN_RELATIVE_FALL:
        return "the loss never falls (it is lowest at the first lrs); lower min_lr"
    return None


def analyse_curve(
    lrs: list[float], losses: list[float], *, beta: float, stop_reason: str, num_steps: int
) -> LRRangeResult:
    """Smooth a range-test curve and compute the steepest and valley suggestions.

    Args:
        lrs: the learning rate of each step (increasing).
        losses: the raw loss of each step (finite).
        beta: EMA coefficient used for both smoothings.
        stop_reason: why the sweep ended (copied into the result).
        num_steps: the planned sweep length (copied into the result).

    Returns:
        The :class:`LRRangeResult`.

    Example:
        >>> import numpy as np
        >>> lrs = list(np.logspace(-4, 0, 50))
        >>> losses = [1.0 / (1.0 + 30 * lr) + (lr > 0.3) * 10 * lr for lr in lrs]
        >>> res = analyse_curve(lrs, losses, beta=0.9, stop_reason="test", num_steps=50)
        >>> 1e-3 < res.suggested_lr < 0.3
        True
    """
    y = np.asarray(losses, dtype=np.float64)
    smoothed = _ema(y, beta) if len(y) else y
    centered = _centered_smooth(y, max(2, len(y) // 25)) if len(y) else y
    i_min = int(np.argmin(centered)) if len(y) else 0
    problem = _problem(centered, i_min)
    steepest = valley = min_lr = None
    if problem is None:
        x = np.log10(np.asarray(lrs, dtype=np.float64))
        slopes = _windowed_slope(x, centered, max(2, len(y) // 20))[: i_min + 1]
        steepest = float(lrs[int(np.argmin(slopes))])
        lo, hi = _valley_floor(centered, i_min)
        valley = float(10 ** ((x[lo] + x[hi]) / 2.0))
        min_lr = float(lrs[i_min])
    return LRRangeResult(
        lrs=[float(v) for v in lrs],
        losses=[float(v) for v in losses],
        smoothed=smoothed.tolist(),
        centered=centered.tolist(),
        steepest_lr=steepest,
        valley_lr=valley,
        min_loss_lr=min_lr,
        suggested_lr=valley if valley is not None else steepest,
        stop_reason=stop_reason,
        problem=problem,
        num_steps=num_steps,
    )


def plot_curve(result: LRRangeResult, path: str | Path, title: str = "LR range test") -> Path:
    """Draw loss against lr (log axis) with both suggestions marked; save a PNG.

    Args:
        result: the range-test result.
        path: where to write the PNG.
        title: the figure title.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.lrs, result.losses, color="0.75", lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=1, ls="--", label="EMA (stop rule)")
    ax.plot(result.lrs, result.centered, color="C0", lw=2, label="zero-lag smoothing")
    marks = [("valley", result.valley_lr, "C2"), ("steepest", result.steepest_lr, "C1")]
    for name, lr, color in marks:
        if lr is not None:
            ax.axvline(lr, color=color, ls=":", lw=1.5, label=f"{name} {lr:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if result.centered:
        lo, hi = min(result.centered), max(result.centered[0], min(result.centered) * 1.5)
        ax.set_ylim(lo - 0.1 * abs(hi - lo), hi + 0.5 * abs(hi - lo) + 1e-12)
    ax.set_title(title if result.problem is None else f"{title}: no clear suggestion")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
