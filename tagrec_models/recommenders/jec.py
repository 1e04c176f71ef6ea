"""JEC: Joint Equal Contribution with greedy label transfer (Makadia, Pavlovic & Kumar, ECCV 2008,
"A new baseline for image annotation"; the JEC row of paper 3's Table 2).

Distance (Makadia et al., section 3.1, "JEC"): every base distance is scaled to [0, 1] by the
largest value it takes between training images, and the scaled distances are averaged with
equal weights. JEC combined colour histograms (L1, and KL-divergence for LAB) with Gabor and
Haar texture (L1); here the inputs are whatever ``features`` name in ``SideInfo`` (default: the
pooled CNN embedding), and by default three distances on it are combined: ``l1`` (JEC's L1),
``kl`` (JEC's KL-divergence, the non-negative embedding read as a histogram) and ``cosine``
(see ``crossmodal.distances``). The max is taken over a seeded sample of ``scale_sample``
training images (all of them when there are fewer).

Greedy label transfer (section 3.2), for n = ``n_labels`` labels and the ``k`` nearest training
images I_1..I_k (by the combined distance, ties to the lower index):

1. rank the tags of I_1 by their training frequency and transfer the n highest;
2. if I_1 has fewer than n tags, rank the other tags of I_2..I_k by the product of
   (a) their co-occurrence with the tags transferred in step 1 and (b) their local frequency
   (the number of I_2..I_k that carry them), and transfer the best n - |I_1|.

Choice: co-occurrence of tag w with the transferred set T is ``sum_{t in T} P(w | t)`` (training
images carrying both / images carrying t), so frequent transferred tags do not swamp the sum;
ties in the product go to local frequency, then training frequency, then the lower index.

Scores encode the full ranking (n_tags for the first tag, n_tags - 1 for the second, ...):
I_1's tags by frequency, then the other neighbours' tags by the step-2 order, then every other
tag by training frequency. Not personalised: a cold-start user (-1) gets the same scores.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Makadia et al.
transfer from 5 neighbours; the distance set is the one choice JEC makes (its own L1 + KL, or
the cosine that suits a CNN embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.crossmodal.distances import DISTANCES, base_distance
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class JECConfig(RecommenderConfig):
    """Features, distances and the label-transfer sizes of JEC."""

    features: tuple[str, ...] = ("cnn",)
    """SideInfo features the distances are computed on."""
    distances: tuple[str, ...] = ("l1", "kl", "cosine")
    """Base distances applied to every feature, averaged after scaling to [0, 1]."""
    k: int = 5
    """Neighbours used by the label transfer (Makadia et al.: 5)."""
    n_labels: int = 5
    """Labels transferred by the greedy procedure (Corel5k: 5)."""
    scale_sample: int = 1000
    """Training images over which each distance's maximum is measured."""


@register
class JEC(Recommender):
    name = "jec"
    papers = {"paper3": "baseline"}
    Config = JECConfig
    # Makadia et al. transfer from 5 neighbours; the distance set is the one choice JEC makes
    # (its own L1 + KL, or the cosine that suits a CNN embedding).
    search_space = {"k": [3, 5, 8, 12, 20],
                    "distances": [("l1", "kl", "cosine"), ("cosine",), ("cosine", "kl"), ("l1", "kl")]}
    needs = ("cnn",)
    personalised = False

    def _check_side(self, side: SideInfo) -> None:
        for feature in self.config.features:
            side.feature(feature)

    def _fit(self, data: TrainingData) -> None:
        cfg = self.config
        if not cfg.features or not cfg.distances:
            raise ValueError("JEC needs at least one feature and one distance")
        for name in cfg.distances:
            if name not in DISTANCES:
                raise ValueError(f"unknown JEC distance {name!r}; choose from {DISTANCES}")
        if cfg.k < 1 or cfg.n_labels < 1:
            raise ValueError(f"JEC needs k >= 1 and n_labels >= 1, got {cfg.k}, {cfg.n_labels}")
        train = data.train
        # float32, like the features themselves: half the size of a saved model.
        self.ref = {f: np.asarray(data.side.feature(f)[train.image], dtype=np.float32) for f in cfg.features}
        rng = np.random.default_rng(cfg.seed)
        n = train.n_posts
        sample = np.sort(rng.choice(n, size=min(cfg.scale_sample, n), replace=False))
        self.scales = {}
        for f in cfg.features:
            x = self.ref[f][sample]
            for d in cfg.distances:
                top = float(base_distance(d, x, x).max())
                self.scales[(f, d)] = top if top > 0 else 1.0
        tags = sparse.csr_matrix(train.tags, dtype=np.float64)
        tags.data[:] = 1.0
        self.ref_tags = [tags.indices[tags.indptr[i] : tags.indptr[i + 1]].copy() for i in range(n)]
        self.prior = np.asarray(tags.sum(axis=0)).ravel()
        cooc = np.asarray((tags.T @ tags).todense())
        # P(w | t): row t divided by the count of t (0 for a tag never seen).
        self.cond = cooc / np.maximum(np.diag(cooc), 1.0)[:, None]

    def distance(self, side: SideInfo, images: np.ndarray) -> np.ndarray:
        """The JEC distance ``[len(images), n_train]``: the mean of the scaled base distances."""
        total = 0.0
        for f in self.config.features:
            q = np.asarray(side.feature(f)[images], dtype=np.float64)
            for d in self.config.distances:
                total = total + base_distance(d, q, self.ref[f]) / self.scales[(f, d)]
        return total / (len(self.config.features) * len(self.config.distances))

    def ranking(self, neighbours: np.ndarray) -> np.ndarray:
        """The full tag ranking of JEC's greedy transfer for neighbours I_1..I_k (best first)."""
        n_tags, n = len(self.prior), self.config.n_labels
        by_prior = lambda tags: np.asarray(sorted(tags, key=lambda t: (-self.prior[t], t)), dtype=np.int64)
        first = by_prior(self.ref_tags[neighbours[0]])
        transferred = first[:n]
        local = np.zeros(n_tags)
        for j in neighbours[1:]:
            local[self.ref_tags[j]] += 1
        cooc = self.cond[transferred].sum(axis=0) if len(transferred) else np.zeros(n_tags)
        taken = np.zeros(n_tags, dtype=bool)
        taken[first] = True
        candidates = [t for t in np.flatnonzero(local > 0) if not taken[t]]
        second = sorted(candidates, key=lambda t: (-(cooc[t] * local[t]), -local[t], -self.prior[t], t))
        taken[second] = True
        rest = by_prior(np.flatnonzero(~taken))
        return np.concatenate([first, np.asarray(second, dtype=np.int64), rest])

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        n_tags = len(self.prior)
        scores = np.zeros((posts.n_posts, n_tags), dtype=np.float32)
        k = min(self.config.k, len(self.ref_tags))
        for start in range(0, posts.n_posts, 256):
            dist = self.distance(side, posts.image[start : start + 256])
            near = np.argsort(dist, axis=1, kind="stable")[:, :k]
            for row, neighbours in enumerate(near):
                order = self.ranking(neighbours)
                scores[start + row, order] = np.arange(n_tags, 0, -1, dtype=np.float32)
        return scores
