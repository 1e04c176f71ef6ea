"""Paper 2, section 4.1: the pieces of the neighbour score (Liu Zheng et al. 2020).

* paper 2, eq. 2: Euclidean distance between the feature vectors (VLAD codes) of two images;
* paper 2, eq. 3: min-max normalisation of a query's distances over the training set X, turned into a
  visual similarity in [0, 1]: ``s = 1 - (d - d_min) / (d_max - d_min)``;
* paper 2, eq. 4: Jaccard coefficient of the two images' group sets, ``|g_p & g_x| / |g_p | g_x|``;
* paper 2, eq. 5: the correlation degree ``y = lambda * s + (1 - lambda) * J``;
* the top-k scores "normalised to be used as the weight in neighbour voting".

Every function here is vectorised over many (query, candidate) pairs and shared by both
neighbour-search back ends and the brute-force reference, so the three agree by construction
on everything but which candidates they look at.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse

WeightNormalisation = Literal["sum", "max"]


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Paper 2, eq. 2, row by row: ``||a_i - b_i||_2`` computed from the differences in float64.

    Differences (not the ``|a|^2 + |b|^2 - 2ab`` expansion) so that the distances of near
    neighbours carry no cancellation error: these are the values the neighbour scores use.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"euclidean: shapes {a.shape} and {b.shape} differ")
    return np.sqrt(np.einsum("...d,...d->...", a - b, a - b))


def min_max_similarity(distance: np.ndarray, d_min: np.ndarray, d_max: np.ndarray) -> np.ndarray:
    """Paper 2, eq. 3: ``1 - (d - d_min) / (d_max - d_min)``, broadcast over the last axis.

    ``d_min``/``d_max`` are the extreme distances from the query to the whole training set X
    (not only to the neighbours), so the similarity of the nearest training image is 1 and of
    the farthest 0. When every training image is equally far (``d_max == d_min``) the visual
    evidence cannot separate them: every similarity is 1 (the paper leaves 0/0 undefined).
    """
    distance = np.asarray(distance, dtype=np.float64)
    d_min = np.asarray(d_min, dtype=np.float64)
    d_max = np.asarray(d_max, dtype=np.float64)
    if np.any(d_max < d_min):
        raise ValueError("min_max_similarity: d_max is smaller than d_min")
    span = d_max - d_min
    safe = np.where(span > 0, span, 1.0)
    sim = 1.0 - (distance - d_min) / safe
    sim = np.where(span > 0, sim, 1.0)
    # Rounding may push a value a hair outside [0, 1]; the scale is [0, 1] by definition.
    return np.clip(sim, 0.0, 1.0)


def group_sizes(groups: sparse.csr_matrix) -> np.ndarray:
    """The number of groups of each image (row non-zeros of a binary image x group matrix)."""
    groups = sparse.csr_matrix(groups)
    return np.diff(groups.indptr).astype(np.float64)


def jaccard_from_counts(intersection: np.ndarray, size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """Paper 2, eq. 4 from counts: ``|A & B| / (|A| + |B| - |A & B|)``; 0 when both are empty.

    Two images without any group share no group evidence, so their group similarity is 0
    (the paper's formula is 0/0 there).
    """
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(size_a, dtype=np.float64) + np.asarray(size_b, dtype=np.float64) - intersection
    if np.any(union < intersection) or np.any(intersection < 0):
        raise ValueError("jaccard_from_counts: intersection larger than a set or negative")
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def jaccard_matrix(groups_a: sparse.csr_matrix, groups_b: sparse.csr_matrix) -> np.ndarray:
    """Paper 2, eq. 4 for every pair: a dense ``[n_a, n_b]`` matrix of Jaccard coefficients.

    ``groups_*`` are binary image x group matrices with the same group columns.
    """
    groups_a = _binary(groups_a, "groups_a")
    groups_b = _binary(groups_b, "groups_b")
    if groups_a.shape[1] != groups_b.shape[1]:
        raise ValueError(
            f"jaccard_matrix: groups_a has {groups_a.shape[1]} group columns, groups_b {groups_b.shape[1]}"
        )
    inter = (groups_a @ groups_b.T).toarray()
    return jaccard_from_counts(inter, group_sizes(groups_a)[:, None], group_sizes(groups_b)[None, :])


def correlation(visual: np.ndarray, group: np.ndarray, lam: float) -> np.ndarray:
    """Paper 2, eq. 5: ``y = lambda * visual + (1 - lambda) * group`` (lambda in [0, 1])."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"correlation: lambda must lie in [0, 1], got {lam}")
    return lam * np.asarray(visual, dtype=np.float64) + (1.0 - lam) * np.asarray(group, dtype=np.float64)


def neighbour_weights(scores: np.ndarray, mode: WeightNormalisation = "sum", valid: np.ndarray | None = None) -> np.ndarray:
    """Paper 2 section 4.1.3: the top-k correlation degrees "normalised to be used as the
    weight in neighbour voting", row by row.

    ``mode="sum"`` divides by the row sum (weights form a distribution over the neighbours,
    the reading we take by default); ``"max"`` divides by the row maximum (the best neighbour
    weighs 1). ``valid`` marks real neighbours (padding gets weight 0). A row whose scores are
    all 0 gets equal weights: with no evidence to prefer one neighbour, none is preferred.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.any(scores < 0):
        raise ValueError("neighbour_weights: correlation degrees must be non-negative")
    valid = np.ones(scores.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    scores = np.where(valid, scores, 0.0)
    if mode == "sum":
        norm = scores.sum(axis=-1, keepdims=True)
    elif mode == "max":
        norm = scores.max(axis=-1, keepdims=True)
    else:
        raise ValueError(f"neighbour_weights: mode must be 'sum' or 'max', got {mode!r}")
    n_valid = valid.sum(axis=-1, keepdims=True)
    uniform = np.where(valid, 1.0 / np.maximum(n_valid, 1), 0.0)
    if mode == "max":
        uniform = np.where(valid, 1.0, 0.0)
    weights = np.divide(scores, norm, out=np.zeros_like(scores), where=norm > 0)
    return np.where(norm > 0, weights, uniform)


def _binary(matrix: sparse.spmatrix, name: str) -> sparse.csr_matrix:
    matrix = sparse.csr_matrix(matrix, dtype=np.float64)
    matrix.sum_duplicates()
    if matrix.nnz and (matrix.data != 1).any():
        if (matrix.data <= 0).any():
            raise ValueError(f"{name}: a group membership matrix holds non-positive entries")
        matrix.data[:] = 1.0
    return matrix
