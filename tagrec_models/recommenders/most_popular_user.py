"""MP-u: the user's most popular tags (Jaschke et al. 2007, "most popular tags by user"; the
MP-u baseline of paper 1, section 4.2).

A post of user ``u`` gets the tags ranked by how often ``u`` used them in training. Two
choices the papers leave open are config fields:

* ties between tags the user used equally often (and the tags the user never used) are broken
  by global popularity when ``tie_break_with_mp`` is set: the score is
  ``n_tags * count_u(t) + rank(t)``, with ``rank`` the dense rank of the tag's global count
  (0 for the rarest, equal counts share a rank, always below ``n_tags``), so the second term
  only reorders tags of equal user count; integers keep the float32 scores exact. Without it
  the score is ``count_u(t)`` and ties go to the lower tag index.
* a cold-start user (index -1) has no history: its posts get the MP ranking (global counts),
  the only information there is.

Tuning (``search_space``, searched on validation by ``studies.tuning``): The only choice MP-u
has: how ties in a user's counts are broken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender, RecommenderConfig
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class MostPopularByUserConfig(RecommenderConfig):
    """* ``tie_break_with_mp``: break ties in a user's counts by global tag popularity."""

    tie_break_with_mp: bool = True


@register
class MostPopularByUser(Recommender):
    name = "mp_u"
    papers = {"paper1": "baseline", "paper2": "baseline"}
    Config = MostPopularByUserConfig
    # The only choice MP-u has: how ties in a user's counts are broken.
    search_space = {"tie_break_with_mp": [True, False]}
    personalised = True
    contract_overrides: dict = {}

    def _fit(self, data: TrainingData) -> None:
        train = data.train
        if train.n_posts and train.user.min() < 0:
            raise ValueError("mp_u: training posts must all have a known user (index >= 0)")
        # user x post indicator times post x tag matrix = user x tag assignment counts.
        owner = sparse.csr_matrix(
            (np.ones(train.n_posts, dtype=np.float32), (train.user, np.arange(train.n_posts))),
            shape=(train.n_users, train.n_posts),
        )
        binary = (train.tags > 0).astype(np.float32)
        self.user_counts = (owner @ binary).toarray().astype(np.float32)
        self.tag_counts = np.asarray(binary.sum(axis=0), dtype=np.float32).ravel()

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        if posts.n_posts and posts.user.max() >= self.user_counts.shape[0]:
            raise IndexError(
                f"mp_u knows {self.user_counts.shape[0]} users but a post has user "
                f"{int(posts.user.max())}"
            )
        known = posts.user != UNKNOWN_USER
        scores = np.empty((posts.n_posts, self.n_tags), dtype=np.float32)
        scores[known] = self.user_counts[posts.user[known]]
        scores[~known] = self.tag_counts
        if self.config.tie_break_with_mp:
            rank = np.unique(self.tag_counts, return_inverse=True)[1].astype(np.float32)
            scores[known] = self.n_tags * scores[known] + rank
        return scores
