"""Calibration and likelihood metrics of classifiers: NLL and expected calibration error.

Expected calibration error (ECE, Naeini et al. 2015; Guo et al. 2017) compares
a classifier's confidence (its top softmax probability) with its accuracy.
steplab uses **15 equal-mass bins**: the examples are sorted by confidence and
cut into 15 bins of (as nearly as possible) equal counts, the first
``n mod 15`` bins holding one example more (as :func:`numpy.array_split`), so
every bin's accuracy is estimated from the same number of examples; ties in
confidence are broken by the examples' order. Then

    ECE = sum over bins b of (|b| / n) * |accuracy(b) - mean confidence(b)|.

Equal-mass bins avoid the near-empty high-confidence bins of equal-width
binning, which make equal-width ECE noisy (Nixon et al., "Measuring
Calibration in Deep Learning", 2019).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ECE_BINS", "classification_scores", "expected_calibration_error"]

#: bins of the expected calibration error (equal mass)
ECE_BINS = 15


def expected_calibration_error(
    confidence: Tensor, correct: Tensor, n_bins: int = ECE_BINS
) -> float:
    """ECE over ``n_bins`` equal-mass bins (see the module docstring).

    Args:
        confidence: top-class probability of each example, shape ``[n]``.
        correct: whether each prediction was right (bool or 0/1), shape ``[n]``.
        n_bins: number of bins; fewer examples than bins gives one bin per example.

    Returns:
        The ECE in ``[0, 1]``; 0.0 for no examples.

    Raises:
        ValueError: shapes disagree or ``n_bins < 1``.

    Example:
        >>> conf = torch.tensor([0.9, 0.8, 0.6, 0.55])
        >>> right = torch.tensor([True, True, False, True])
        >>> # two bins of two: {0.55, 0.6} acc 0.5 conf 0.575; {0.8, 0.9} acc 1 conf 0.85
        >>> round(expected_calibration_error(conf, right, n_bins=2), 4)  # (0.075 + 0.15) / 2
        0.1125
    """
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(
            f"confidence/correct: got shapes {tuple(confidence.shape)} and "
            f"{tuple(correct.shape)}, expected the same 1-D shape"
        )
    if n_bins < 1:
        raise ValueError(f"n_bins: got {n_bins}, expected >= 1")
    n = len(confidence)
    if n == 0:
        return 0.0
    order = torch.sort(confidence.double(), stable=True).indices
    conf, hit = confidence.double()[order], correct.double()[order]
    total = 0.0
    for c_bin, h_bin in zip(conf.tensor_split(min(n_bins, n)), hit.tensor_split(min(n_bins, n)),
                            strict=True):
        total += len(c_bin) * abs(float(h_bin.mean()) - float(c_bin.mean()))
    return total / n


def classification_scores(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy, NLL (mean cross-entropy, nats) and 15-bin equal-mass ECE of ``logits``.

    Args:
        logits: ``[n, classes]`` unnormalised scores.
        labels: ``[n]`` class indices.

    Returns:
        ``{"accuracy", "nll", "ece"}``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
        >>> s = classification_scores(logits, torch.tensor([0, 0, 0]))
        >>> round(s["accuracy"], 3), round(s["nll"], 3)
        (0.667, 0.496)
    """
    logp = torch.log_softmax(logits.double(), dim=-1)
    n = max(len(labels), 1)
    nll = float(-logp.gather(1, labels.view(-1, 1)).sum()) / n
    conf, pred = logp.exp().max(dim=-1)
    correct = pred == labels
    return {
        "accuracy": float(correct.sum()) / n,
        "nll": nll,
        "ece": expected_calibration_error(conf, correct),
    }
