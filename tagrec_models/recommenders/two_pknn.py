"""2PKNN: two-pass k-nearest-neighbour label transfer (Verma & Jawahar, ECCV 2012, "Image
annotation using metric learning in semantic neighbourhoods"), the 2PKNN row of DESIGN.md's
Corel5k table, without its metric learning (+ML).

Why: plain kNN label transfer starves rare labels (a rare label seldom has an image among a
query's nearest neighbours), which per-label recall and N+ punish. 2PKNN builds a *balanced*
neighbourhood first.

* Pass 1 (semantic neighbourhoods, section 3.1): for each label w, the ``k1`` training images
  carrying w that are nearest to the query; their union is the query's neighbourhood T_J, where
  every label has up to ``k1`` representatives.
* Pass 2 (Verma & Jawahar 2012, section 3.1, eq. 2): ``score(w) = sum_{I in T_J} exp(-beta * D(J, I)) * [w in Y_I]``.

D is the mean of the base distances (``crossmodal.distances``; default ``cosine`` and ``kl`` on
the CNN embedding), each scaled to mean 1 over training images' 20 nearest neighbours, and is
shifted by the query's smallest distance before the exponential (a per-query constant factor,
which changes no ranking) so that nothing underflows. Scores can be divided by a power of the
label count (``rare_power``, see ``crossmodal.retune.prior_correction``). Not personalised: a
cold-start user (-1) gets the same scores as anyone; nothing is learnt, ``fit`` indexes the
training images.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Verma & Jawahar 2012
tune K1 (images per label in pass 1) and the pass-2 weight on validation; rare_power is the
label-frequency normalisation that trades frequent against rare labels (per-label columns
prefer k1 = 3, beta = 5, rare_power = 0.5 on Corel5k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.crossmodal.distances import DISTANCES, base_distance
from tagrec_models.crossmodal.retune import Retunable, prior_correction
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class TwoPKNNConfig(RecommenderConfig):
    """Distances, the two passes' sizes and the prior correction of 2PKNN."""

    features: tuple[str, ...] = ("cnn",)
    """SideInfo features the distances are computed on."""
    distances: tuple[str, ...] = ("cosine", "kl")
    """Base distances, applied to every feature and averaged after scaling."""
    k1: int = 10
    """Pass 1: nearest training images kept per label (Corel5k validation: 10 for per-image AF;
    3 with beta 5 and rare_power 0.5 for per-label F1)."""
    beta: float = 10.0
    """Pass 2: weight exp(-beta * D) of a neighbour at (scaled) distance D."""
    rare_power: float = 0.0
    """Divide a tag's score by (count + rare_smoothing) ** rare_power; 0 = off."""
    rare_smoothing: float = 5.0
    """Added to a tag's training count before the ``rare_power`` division."""
    chunk: int = 256
    """Query rows per chunk (bounds memory)."""


@register
class TwoPKNN(Retunable, Recommender):
    name = "two_pknn"
    papers = {"paper3": "beyond"}
    Config = TwoPKNNConfig
    # Verma & Jawahar 2012 tune K1 (images per label in pass 1) and the pass-2 weight on
    # validation; rare_power is the label-frequency normalisation that trades frequent against
    # rare labels (per-label columns prefer k1 = 3, beta = 5, rare_power = 0.5 on Corel5k).
    search_space = {"k1": [2, 3, 5, 10, 20], "beta": [1.0, 2.0, 5.0, 10.0, 20.0, 40.0],
                    "rare_power": [0.0, 0.25, 0.5, 0.75, 1.0]}
    needs = ("cnn",)
    personalised = False
    scoring_fields = frozenset({"k1", "beta", "rare_power", "rare_smoothing"})

    def _check_side(self, side: SideInfo) -> None:
        for feature in self.config.features:
            side.feature(feature)

    def _fit(self, data: TrainingData) -> None:
        self.forget_scoring()
        cfg = self.config
        if not cfg.features or not cfg.distances:
            raise ValueError("2PKNN needs at least one feature and one distance")
        for d in cfg.distances:
            if d not in DISTANCES:
                raise ValueError(f"unknown 2PKNN distance {d!r}; choose from {DISTANCES}")
        train = data.train
        # float32, like the features themselves: half the size of a saved model.
        self.ref = {f: np.asarray(data.side.feature(f)[train.image], dtype=np.float32) for f in cfg.features}
        self.bases = [(f, d) for f in cfg.features for d in cfg.distances]
        rng = np.random.default_rng(cfg.seed)
        n = train.n_posts
        probe = rng.choice(n, size=min(500, n), replace=False)
        near = min(20, n - 1)
        self.scale = []
        for f, d in self.bases:
            dist = np.sort(base_distance(d, self.ref[f][probe], self.ref[f]), axis=1)[:, 1 : near + 1]
            self.scale.append(max(float(dist.mean()), 1e-12) if dist.size else 1.0)
        self.ref_tags = sparse.csr_matrix(train.tags, dtype=np.float64)
        csc = self.ref_tags.tocsc()
        self.carriers = [csc.indices[csc.indptr[w] : csc.indptr[w + 1]].copy() for w in range(self.n_tags)]
        self.tag_counts = np.asarray(self.ref_tags.sum(axis=0)).ravel()

    def distance(self, side: SideInfo, images: np.ndarray) -> np.ndarray:
        """D(query, training image): the mean of the scaled base distances, remembered for
        re-scorings of the same posts at other k1 / beta / rare_power values, as tuning does
        (``Retunable.remembered``)."""
        return self.remembered("distance", side, images, lambda: self._distance(side, images))

    def _state(self) -> dict:
        state = super()._state()
        state["attributes"] = {k: v for k, v in state["attributes"].items() if k != "_scoring_memo_entries"}
        return state

    def _distance(self, side: SideInfo, images: np.ndarray) -> np.ndarray:
        total = sum(
            base_distance(d, np.asarray(side.feature(f)[images], dtype=np.float64), self.ref[f]) / self.scale[i]
            for i, (f, d) in enumerate(self.bases)
        )
        return total / len(self.bases)

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        cfg = self.config
        if cfg.k1 < 1 or cfg.beta < 0:
            raise ValueError(f"2PKNN needs k1 >= 1 and beta >= 0, got {cfg.k1}, {cfg.beta}")
        out = np.zeros((posts.n_posts, self.n_tags))
        for start in range(0, posts.n_posts, cfg.chunk):
            dist = self.distance(side, posts.image[start : start + cfg.chunk])
            rows = np.arange(len(dist))[:, None]
            member = np.zeros(dist.shape, dtype=bool)
            for carriers in self.carriers:  # pass 1: each label's k1 nearest carriers
                if len(carriers) == 0:
                    continue
                k = min(cfg.k1, len(carriers))
                sub = dist[:, carriers]
                top = np.argpartition(sub, k - 1, axis=1)[:, :k] if k < len(carriers) else np.broadcast_to(np.arange(k), sub.shape)
                member[rows, carriers[top]] = True
            weight = np.where(member, np.exp(-cfg.beta * (dist - dist.min(axis=1, keepdims=True))), 0.0)
            out[start : start + len(dist)] = (sparse.csr_matrix(weight) @ self.ref_tags).toarray()  # pass 2
        return prior_correction(out, self.tag_counts, cfg.rare_power, cfg.rare_smoothing)
