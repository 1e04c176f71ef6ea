"""Cross-modal Correlation Score (paper 3, section 4.1 and Table 1).

The paper defines CCS only loosely ("the maximum correlation for each multimodal
visual-semantic representation pair in the same common space", in [0, 1] per pair) and tabulates
its running sum over the top-1..20 pairs. We compute it the way DCCA papers report total
correlation (Andrew et al. 2013, section 4): the projections learnt on training data are applied
to *held-out* pairs, the Pearson correlation of each canonical pair (column j of both views) is
measured on those held-out pairs, and ``CCS@k`` is the sum of the first ``k`` of them, in the
order the model ranked the pairs on its training data. A pair that does not generalise can thus
contribute little or even a negative amount; re-sorting by held-out value would flatter every
model, so it is not the default (``order="heldout"`` gives it for comparison).
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def pairwise_correlations(zx: np.ndarray, zy: np.ndarray) -> np.ndarray:
    """Pearson correlation of column j of ``zx`` with column j of ``zy``, for every j.

    A constant column has no defined correlation; it counts as 0 (it carries no signal)."""
    zx = np.asarray(zx, dtype=np.float64)
    zy = np.asarray(zy, dtype=np.float64)
    if zx.ndim != 2 or zx.shape != zy.shape:
        raise ValueError(f"projected views must be 2-d and of equal shape, got {zx.shape} and {zy.shape}")
    if zx.shape[0] < 2:
        raise ValueError(f"correlations need at least 2 held-out pairs, got {zx.shape[0]}")
    xc, yc = zx - zx.mean(axis=0), zy - zy.mean(axis=0)
    denom = np.sqrt((xc**2).sum(axis=0) * (yc**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, (xc * yc).sum(axis=0) / np.where(denom > 0, denom, 1.0), 0.0)
    return corr


def ccs_curve(
    zx: np.ndarray,
    zy: np.ndarray,
    top: int = 20,
    order: Literal["model", "heldout"] = "model",
) -> np.ndarray:
    """``CCS@k`` for k = 1..top: the cumulative sum of the held-out pair correlations.

    ``zx``/``zy`` are the two views of the same held-out items projected into the common space
    (``[n, n_pairs]``, columns in the model's order). If the model has fewer than ``top``
    pairs, the curve stops at the number it has."""
    corr = pairwise_correlations(zx, zy)
    if order == "heldout":
        corr = np.sort(corr)[::-1]
    elif order != "model":
        raise ValueError(f"order must be 'model' or 'heldout', got {order!r}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    return np.cumsum(corr[:top])
