"""KNN: neighbour voting (Li, Snoek & Worring 2008, "Learning social tag relevance by
neighbor voting"), paper 2's "KNN" baseline (section 5.3, ref. [33]).

Tag relevance of tag t for image I is the number of I's k visual neighbours labelled with t
minus the number expected by chance:

    relevance(t, I) = |{J in N_k(I) : t in tags(J)}| - k * |L_t| / |L|

with ``|L_t|`` the training images labelled t and ``|L|`` all training images (Li et al.'s
prior). Neighbours are ranked by visual similarity alone (paper 2, eqs. 2-3 with lambda = 1: no
groups, no personalisation), and, following Li et al., at most one image per user is taken
(``distinct_owners``), so a user who uploaded a batch of near-identical photos casts one
vote. ``k`` is a config field: Li et al. use k = 1000 on millions of images; the default here
is paper 2's neighbour count (15) so that the baseline sees as many neighbours as the walk.
When fewer than k neighbours exist, the prior uses the number actually found.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Li et al. 2008 vote
with k in the tens to hundreds; paper 2 uses 15 for its baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.data import Posts, SideInfo
from tagrec_models.recommenders.neighbour_base import NeighbourConfig, NeighbourRecommender
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class KnnVotingConfig(NeighbourConfig):
    """Neighbour fields (``feature``, ``k``...) plus:

    distinct_owners: keep only the most similar image of each user among the neighbours
        (Li et al. 2008's unique-user rule).
    subtract_prior: subtract the tag prior ``k |L_t| / |L|`` (Li et al.); False gives plain
        vote counts.
    """

    distinct_owners: bool = True
    subtract_prior: bool = True


@register
class KnnVoting(NeighbourRecommender):
    name = "knn_voting"
    papers = {"paper2": "baseline"}
    Config = KnnVotingConfig
    # Li et al. 2008 vote with k in the tens to hundreds; paper 2 uses 15 for its baselines.
    search_space = {"k": [5, 10, 15, 25, 50, 100], "distinct_owners": [True, False],
                    "subtract_prior": [True, False]}
    needs = ("vlad",)
    personalised = False
    contract_overrides = {"k": 5}

    def _neighbour_options(self) -> dict:
        return {"lam": 1.0, "distinct_owners": self.config.distinct_owners}

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        cfg = self.config
        found = self.neighbours(posts, side)
        valid = found.valid
        q, j = np.nonzero(valid)
        votes_matrix = sparse.csr_matrix(
            (np.ones(len(q)), (q, found.index[q, j])), shape=(posts.n_posts, len(self.memory.image_ids))
        )
        votes = np.asarray((votes_matrix @ self.memory.image_tags).todense())
        if cfg.subtract_prior:
            share = self.memory.tag_counts / len(self.memory.image_ids)
            votes = votes - valid.sum(axis=1, keepdims=True) * share[None, :]
        return votes
