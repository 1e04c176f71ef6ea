"""Deep textual words: k-means clusters of skip-gram tag vectors (paper 3, section 2).

"The entire textual word vectors are clustered to acquire the new deep textual word vocabulary,
and then each word/tag in the annotation is projected to this vocabulary. Thus each annotation
can be represented in the form of bag-of-deep-textual-words." We cluster with scikit-learn's
``KMeans`` (seeded, ``n_init`` restarts). Choices the paper leaves open, each a config field:

* the tag vectors are L2-normalised before clustering (``normalise``), so clusters group tags by
  direction, the similarity skip-gram vectors are compared with;
* the number of deep words is ``n_words``, capped at the number of tags (k-means cannot have more
  clusters than points);
* a bag holds counts (``weighting="count"``) and is optionally L2-normalised per annotation
  (``l2_bag``), so long annotations do not dominate the covariance of the semantic view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans


@dataclass(frozen=True)
class TextualWordsConfig:
    """Hyper-parameters of ``TextualWords``."""

    n_words: int = 100
    """Deep textual words (k-means clusters; paper: unspecified)."""
    normalise: bool = True
    """L2-normalise tag vectors before clustering."""
    weighting: Literal["count", "binary"] = "count"
    """Bag entries: number of the annotation's tags in each deep word, or presence."""
    l2_bag: bool = False
    """L2-normalise each bag."""
    n_init: int = 10
    seed: int = 0


class TextualWords:
    """``fit(tag_vectors)`` -> ``assignment[tag]`` = its deep word; ``bags(tags)`` -> float32
    ``[n_posts, n_words]`` bags of deep textual words."""

    def __init__(self, config: TextualWordsConfig | None = None) -> None:
        self.config = config or TextualWordsConfig()
        if self.config.n_words < 1:
            raise ValueError(f"n_words must be >= 1, got {self.config.n_words}")
        if self.config.weighting not in ("count", "binary"):
            raise ValueError(f"weighting must be 'count' or 'binary', got {self.config.weighting!r}")
        self.assignment: np.ndarray | None = None
        self.centroids: np.ndarray | None = None

    @property
    def n_words(self) -> int:
        if self.centroids is None:
            raise RuntimeError("TextualWords must be fitted first")
        return len(self.centroids)

    def fit(self, tag_vectors: np.ndarray) -> "TextualWords":
        v = np.asarray(tag_vectors, dtype=np.float64)
        if v.ndim != 2 or len(v) < 1 or not np.isfinite(v).all():
            raise ValueError(f"tag vectors must be a finite [n_tags, dim] array, got shape {v.shape}")
        if self.config.normalise:
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        k = min(self.config.n_words, len(v))
        km = KMeans(n_clusters=k, n_init=self.config.n_init, random_state=self.config.seed).fit(v)
        self.assignment = km.labels_.astype(np.int64)
        self.centroids = km.cluster_centers_.astype(np.float32)
        return self

    def membership(self) -> sparse.csr_matrix:
        """Binary tag x deep-word matrix."""
        if self.assignment is None:
            raise RuntimeError("TextualWords must be fitted first")
        n = len(self.assignment)
        return sparse.csr_matrix(
            (np.ones(n, dtype=np.float32), (np.arange(n), self.assignment)), shape=(n, self.n_words)
        )

    def bags(self, tags: sparse.spmatrix) -> np.ndarray:
        """The bag of deep textual words of each row of a binary post x tag matrix."""
        tags = sparse.csr_matrix(tags)
        if self.assignment is None:
            raise RuntimeError("TextualWords must be fitted first")
        if tags.shape[1] != len(self.assignment):
            raise ValueError(f"tag matrix has {tags.shape[1]} columns, the words were fitted on {len(self.assignment)} tags")
        bag = np.asarray((tags @ self.membership()).todense(), dtype=np.float32)
        if self.config.weighting == "binary":
            bag = (bag > 0).astype(np.float32)
        if self.config.l2_bag:
            bag /= np.maximum(np.linalg.norm(bag, axis=1, keepdims=True), 1e-12)
        return bag
