"""MP: the most popular tags overall (Jaschke et al. 2007, the "MP" baseline of paper 1,
section 4.2). Every post gets the same ranking: tags by their training assignment count.

Tuning (``search_space``, searched on validation by ``studies.tuning``): MP has no hyper-
parameter: its one tuning trial is the model itself.
"""

from __future__ import annotations

import numpy as np

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.registry import register


@register
class MostPopular(Recommender):
    name = "mp"
    papers = {"paper1": "baseline", "paper3": "baseline"}
    # MP has no hyper-parameter: its one tuning trial is the model itself.
    search_space = {}

    def _fit(self, data: TrainingData) -> None:
        self.tag_counts = np.asarray(data.train.tags.sum(axis=0), dtype=np.float32).ravel()

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        return np.broadcast_to(self.tag_counts, (posts.n_posts, self.n_tags)).copy()
