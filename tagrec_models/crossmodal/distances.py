"""Base distances between image features, for the nearest-neighbour models (``jec``,
``tagprop``): each is a ``[n_a, n_b]`` float64 matrix, smaller = more similar.

* ``l1``: city-block distance (JEC's distance for colour histograms and texture, Makadia et al.
  2008, section 3.1), by ``scipy.spatial.distance.cdist``;
* ``l2``: Euclidean distance;
* ``cosine``: 1 - cosine similarity;
* ``kl``: symmetrised Kullback-Leibler divergence of the features read as histograms (each row
  L1-normalised, a 1e-6 floor against log 0): JEC's distance for the LAB histogram. It needs
  non-negative features (the EfficientNet-Lite0 embedding is: ReLU6 before pooling), and says so
  otherwise;
* ``hellinger``: Euclidean distance between the square roots of the L1-normalised rows.

Everything runs in row chunks so memory stays bounded on 4,500 x 4,500 problems.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

DISTANCES = ("l1", "l2", "cosine", "kl", "hellinger")
_FLOOR = 1e-6


def _histograms(x: np.ndarray, name: str) -> np.ndarray:
    if (x < 0).any():
        raise ValueError(f"distance {name!r} reads features as histograms and needs them non-negative")
    return x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)


def base_distance(name: str, a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Distance ``name`` between every row of ``a`` and every row of ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"distance needs [n, d] and [m, d] arrays, got {a.shape} and {b.shape}")
    if name == "l1":
        return np.vstack([cdist(a[s : s + chunk], b, "cityblock") for s in range(0, len(a), chunk)] or [np.zeros((0, len(b)))])
    if name == "l2":
        aa, bb = (a**2).sum(1), (b**2).sum(1)
        return np.sqrt(np.maximum(aa[:, None] + bb[None, :] - 2 * a @ b.T, 0.0))
    if name == "cosine":
        an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.maximum(1.0 - an @ bn.T, 0.0)
    if name == "kl":
        p = np.maximum(_histograms(a, name), _FLOOR)
        q = np.maximum(_histograms(b, name), _FLOOR)
        p /= p.sum(1, keepdims=True)
        q /= q.sum(1, keepdims=True)
        lp, lq = np.log(p), np.log(q)
        # KL(p||q) + KL(q||p) = sum p log p + sum q log q - p.log q - q.log p, all matmuls.
        sym = (p * lp).sum(1)[:, None] + (q * lq).sum(1)[None, :] - p @ lq.T - lp @ q.T
        return np.maximum(0.5 * sym, 0.0)
    if name == "hellinger":
        return base_distance("l2", np.sqrt(_histograms(a, name)), np.sqrt(_histograms(b, name)))
    raise ValueError(f"unknown distance {name!r}; choose from {DISTANCES}")
