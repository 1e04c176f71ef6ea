"""Nearest-neighbour label transfer in a common space (used by the CCA family of recommenders).

A query's tag scores are a weighted vote of its ``k`` most similar reference items:
``score(q, t) = sum_{j in N_k(q)} w_qj y_jt`` with ``w_qj = softmax_j(sim(q, j) / temperature)``
over the k neighbours (Makadia et al. 2008 and Murthy et al. 2014 transfer labels the same way,
with weights from similarity). The similarities are cosines in the (scaled) common space.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarities ``[len(a), len(b)]`` (a zero row has similarity 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"cosine similarity needs [n, d] and [m, d] arrays, got {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def label_transfer(
    similarity: np.ndarray, reference_tags: sparse.spmatrix, k: int, temperature: float
) -> np.ndarray:
    """Softmax-weighted vote of the ``k`` most similar references; float64 ``[n_q, n_tags]``.

    Ties in similarity go to the lower reference index (stable sort), so results are
    deterministic."""
    sim = np.asarray(similarity, dtype=np.float64)
    ref = sparse.csr_matrix(reference_tags, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] != ref.shape[0]:
        raise ValueError(f"similarity {sim.shape} does not match {ref.shape[0]} reference items")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(k, sim.shape[1])
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    top_sim = np.take_along_axis(sim, top, axis=1)
    w = np.exp((top_sim - top_sim[:, :1]) / temperature)
    w /= w.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(len(sim)), k)
    weights = sparse.csr_matrix((w.ravel(), (rows, top.ravel())), shape=sim.shape)
    return np.asarray((weights @ ref).todense())
