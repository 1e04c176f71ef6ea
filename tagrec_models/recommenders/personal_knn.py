"""Personalised group-aware neighbour voting: paper 2's stand-in for its PSIR baseline.

What paper 2 says of PSIR (section 5.3, ref. [32]): "Personalized Social Image
Recommendation: a personalized recommendation algorithm considering image metadata
information. We apply its image recommendation algorithm to implement the tag
recommendation." Reference [32] is missing from our copy of the paper (its reference list is
cut short) and we found no description precise enough to reproduce it, so we do NOT claim to
implement PSIR. This model is the closest well-defined personalised neighbour method using
the same evidence PSIR is said to use (visual content, image metadata, the user):

    score(t) = (1 - alpha) * V(t) + alpha * H_u(t)

* ``V``: weighted neighbour voting over the k neighbours chosen by paper 2, eq. 5 (visual
  similarity + group Jaccard, the image metadata), each voting with its normalised weight
  (section 4.1.3); V is rescaled to sum to 1 over the tags;
* ``H_u``: the user's own tag distribution in training (their tagging history), the
  personal part; a cold-start user (-1) has none, so alpha is 0 for that post.

``alpha`` (``history_weight``) is a config field, to be chosen on validation; 0 gives plain
group-aware weighted voting (no random walk), which also isolates what the walk adds.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Paper 2, Figure 10's
lambda range (0.1..0.9), neighbour counts around its 15, and the user's own history share alpha
from off to dominant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.data import Posts, SideInfo
from tagrec_models.neighbours.similarity import WeightNormalisation
from tagrec_models.recommenders.neighbour_base import NeighbourConfig, NeighbourRecommender
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class PersonalKnnConfig(NeighbourConfig):
    """Neighbour fields (``feature``, ``k``...) plus:

    lam: paper 2, eq. 5's visual share of the neighbour score (paper 2: 0.4).
    use_groups: include paper 2, eq. 4's group Jaccard in the neighbour score.
    weight_normalisation: how neighbour scores become voting weights ("sum" or "max").
    history_weight: alpha, the share of the user's own tag distribution in the score.
    popularity_fallback: rank tags with no evidence by training popularity.
    """

    lam: float = 0.4
    use_groups: bool = True
    weight_normalisation: WeightNormalisation = "sum"
    history_weight: float = 0.5
    popularity_fallback: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")
        if not 0.0 <= self.history_weight <= 1.0:
            raise ValueError(f"history_weight must lie in [0, 1], got {self.history_weight}")


@register
class PersonalKnn(NeighbourRecommender):
    name = "personal_knn"
    papers = {"paper2": "baseline"}
    Config = PersonalKnnConfig
    # Paper 2, Figure 10's lambda range (0.1..0.9), neighbour counts around its 15, and the
    # user's own history share alpha from off to dominant.
    search_space = {"k": [5, 10, 15, 25, 50], "lam": [0.1, 0.2, 0.4, 0.6, 0.8],
                    "history_weight": [0.0, 0.25, 0.5, 0.75], "weight_normalisation": ["sum", "max"]}
    needs = ("vlad", "groups")
    contract_overrides = {"k": 5}

    def _neighbour_options(self) -> dict:
        return {"lam": self.config.lam}

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        cfg = self.config
        found = self.neighbours(posts, side)
        weights = found.weights(cfg.weight_normalisation)
        q, j = np.nonzero(found.valid)
        vote_matrix = sparse.csr_matrix(
            (weights[q, j], (q, found.index[q, j])), shape=(posts.n_posts, len(self.memory.image_ids))
        )
        votes = np.asarray((vote_matrix @ self.memory.image_tags).todense())
        totals = votes.sum(axis=1, keepdims=True)
        votes = np.divide(votes, totals, out=np.zeros_like(votes), where=totals > 0)
        history = self.memory.user_profiles(posts.user)
        alpha = np.where(history.sum(axis=1) > 0, cfg.history_weight, 0.0)[:, None]
        scores = (1.0 - alpha) * votes + alpha * history
        if cfg.popularity_fallback:
            scores = self.memory.popularity_fallback(scores)
        return scores
