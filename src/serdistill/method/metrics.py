"""The concordance correlation coefficient (CCC): the metric (numpy) and the loss (torch).

    CCC = 2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²)

with population moments (divide by n, not n − 1), as in Lin (1989) and the paper.
"""

from __future__ import annotations

import numpy as np
import torch

#: Added to the loss's denominator. Variances of real labels and predictions are O(0.01..1)
#: (MSP-Podcast labels span 1..7), far above 1e-6, so the loss is unchanged on real
#: batches; on a degenerate batch (all labels equal, or a single sample) the denominator
#: stays >= 1e-6, so the loss is finite (1 when nothing co-varies) and its gradient is
#: bounded by about 1 / (2·sqrt(1e-6)) = 500 per unit spread instead of being inf or NaN.
#: 1e-6 is also well above float32's resolution near O(1) moments (~1e-7).
CCC_EPS = 1e-6


def ccc(x: np.ndarray, y: np.ndarray) -> float | np.ndarray:
    """Concordance correlation coefficient of predictions ``x`` and labels ``y``.

    Args:
        x: shape (n,) or (n, k).
        y: the same shape as ``x``.

    Returns:
        A float for 1-D input, else an array of k values (one per column). NaN where it is
        undefined: fewer than one pair, or both inputs constant and equal.

    Raises:
        ValueError: shapes differ, or the input holds NaN (mask unlabelled rows first).

    Examples:
        >>> round(ccc(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])), 6)
        1.0
        >>> round(ccc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0])), 4)
        0.5714
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ccc needs predictions and labels of one shape; got {x.shape} and {y.shape}.")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("ccc got NaN values; drop unlabelled rows (NaN labels) before scoring.")
    if x.shape[0] == 0:
        return np.nan if x.ndim == 1 else np.full(x.shape[1:], np.nan)
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    var_x = ((x - mean_x) ** 2).mean(axis=0)
    var_y = ((y - mean_y) ** 2).mean(axis=0)
    cov = ((x - mean_x) * (y - mean_y)).mean(axis=0)
    denominator = var_x + var_y + (mean_x - mean_y) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(denominator > 0, 2.0 * cov / np.where(denominator > 0, denominator, 1.0), np.nan)
    return float(value) if value.ndim == 0 else value


def ccc_loss(
    prediction: torch.Tensor, target: torch.Tensor, *, eps: float = CCC_EPS, per_column: bool = False
) -> torch.Tensor:
    """``1 − CCC`` over the batch, averaged over output columns; safe on degenerate batches.

    Args:
        prediction: shape (n,) or (n, ...): the batch along dimension 0.
        target: the same shape.
        eps: added to the denominator (see :data:`CCC_EPS`).
        per_column: return ``1 − CCC`` of every column (the shape after dimension 0)
            instead of their mean (a stack of models: :mod:`serdistill.method.stacked`).

    Returns:
        A scalar tensor; finite with a finite gradient for any finite input, including a
        batch of one and a constant batch (both give a loss of 1).

    Examples:
        >>> x = torch.tensor([1.0, 2.0, 3.0])
        >>> float(ccc_loss(x, x)) < 1e-6
        True
        >>> float(ccc_loss(torch.tensor([2.0]), torch.tensor([5.0])))
        1.0
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"ccc_loss needs predictions and targets of one shape; got {tuple(prediction.shape)} and {tuple(target.shape)}."
        )
    mean_p = prediction.mean(dim=0)
    mean_t = target.mean(dim=0)
    dp = prediction - mean_p
    dt = target - mean_t
    cov = (dp * dt).mean(dim=0)
    denominator = (dp * dp).mean(dim=0) + (dt * dt).mean(dim=0) + (mean_p - mean_t) ** 2 + eps
    loss = 1.0 - 2.0 * cov / denominator
    return loss if per_column else loss.mean()


def ccc_torch(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CCC per column in torch without eps (for scoring on device); NaN where undefined."""
    prediction = prediction.double()
    target = target.double()
    mean_p, mean_t = prediction.mean(dim=0), target.mean(dim=0)
    dp, dt = prediction - mean_p, target - mean_t
    denominator = (dp * dp).mean(dim=0) + (dt * dt).mean(dim=0) + (mean_p - mean_t) ** 2
    return 2.0 * (dp * dt).mean(dim=0) / denominator
