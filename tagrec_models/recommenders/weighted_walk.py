"""Paper 2 (Liu Zheng et al. 2020): group-aware neighbours + weighted random walk, and the
three ablations of its Figure 12, registered as ``ug_nw``, ``ug_nonw``, ``noug_nw`` and
``noug_nonw``.

Scoring one post (user, image):

1. neighbours (section 4.1): the k training images with the highest correlation degree
   ``y = lambda * s + (1 - lambda) * J`` (paper 2, eq. 5), s the min-max normalised Euclidean
   similarity of the visual codes (paper 2, eqs. 2-3), J the Jaccard coefficient of the two images'
   groups (paper 2, eq. 4). "UG" uses groups; "noUG" ranks by s alone.
2. weights (section 4.1.3): the neighbours' y normalised (default: to sum to 1). "NW" gives
   the image nodes these weights in the walk; "noNW" gives every image weight 1.
3. the weighted random walk with restart at the target image (section 4.2, paper 2, eq. 6, d = 0.85)
   on the neighbour-tag bipartite graph, iterated to convergence; tags are ranked by their
   stationary probability (``tagrec_models.graph.random_walk`` spells out the graph).

Personalisation. The target's groups enter through J (a test image's groups are side
information, known at upload). Two further routes for the user's own history, both 0 (off,
the paper) by default and meant to be chosen on validation:

* ``user_restart``: that share of the restart mass goes to the user's own training tag
  distribution (by default restricted to the tags the neighbours carry) instead of the
  target image (a personalised PageRank restart);
* ``own_image_bonus``: added to y for training images the same user posted, so the user's
  own images are preferred as neighbours.

A cold-start user (index -1) has no history: both terms are off for that post.

Choices where the paper is vague (config fields where they change rankings): k = 15 (the only neighbour count the
paper states, section 5.1); weights normalised to sum to 1; the target image is linked to
its neighbours (it has no tags of its own); paper 2, eq. 6's mass withheld by an image of weight
w < 1 is returned to the restart, i.e. the stationary vector is rescaled to sum to 1; a
query never takes its own image as a neighbour; tags the walk never reaches are ranked
after all reached tags by training popularity.

Tuning (``search_space``, searched on validation by ``studies.tuning``): Paper 2: lambda swept
0.1..0.9 (Figure 10), k = 15 (section 5.1) with counts around it, the damping d = 0.85 of a
random walk with restart and values either side; the user restart (our extension) off or on.
Without groups lambda has nothing to weigh (visual similarity only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
import numpy as np

from tagrec_models.data import Posts, SideInfo
from tagrec_models.graph.random_walk import walk_tag_scores
from tagrec_models.neighbours.similarity import WeightNormalisation
from tagrec_models.recommenders.neighbour_base import NeighbourConfig, NeighbourRecommender
from tagrec_models.recommenders.registry import register


@dataclass(frozen=True)
class WeightedWalkConfig(NeighbourConfig):
    """Hyper-parameters of paper 2's recommender (defaults: the paper's UG-NW). Besides the
    neighbour fields (``feature``, ``k`` = 15, ``exclude_same_image``, ``backend``...):

    lam: paper 2, eq. 5's lambda, the visual share of the correlation degree (paper: 0.4, Figure 10).
    use_groups: "UG" (paper 2, eq. 5 with the Jaccard term) or "noUG" (visual similarity only).
    use_weights: "NW" (image nodes carry their normalised y in paper 2, eq. 6) or "noNW" (weight 1).
    weight_normalisation: "sum" (weights sum to 1) or "max" (the best neighbour weighs 1).
    damping: paper 2, eq. 6's d, the probability of following an edge (paper: 0.85).
    tol: convergence threshold on each graph's L1 change per iteration.
    max_iter: iterations allowed before the walk counts as not converging (an error).
    user_restart: share of the restart mass put on the user's own tag distribution (0 = off).
    user_restart_scope: "graph" restricts that distribution to the tags the neighbours carry
        (the history re-weights the visually plausible tags), "all" uses it
        whole.
    own_image_bonus: added to y for the user's own training images (0 = off).
    popularity_fallback: rank tags the walk never reaches by training popularity.
    """

    lam: float = 0.4
    use_groups: bool = True
    use_weights: bool = True
    weight_normalisation: WeightNormalisation = "sum"
    damping: float = 0.85
    tol: float = 1e-10
    max_iter: int = 1000
    user_restart: float = 0.0
    user_restart_scope: Literal["graph", "all"] = "graph"
    own_image_bonus: float = 0.0
    popularity_fallback: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")
        if not 0.0 < self.damping < 1.0:
            raise ValueError(f"damping must lie in (0, 1), got {self.damping}")
        if not 0.0 <= self.user_restart < 1.0:
            raise ValueError(f"user_restart must lie in [0, 1), got {self.user_restart}")
        if self.own_image_bonus < 0:
            raise ValueError(f"own_image_bonus must be non-negative, got {self.own_image_bonus}")
        if self.user_restart_scope not in ("graph", "all"):
            raise ValueError(f"user_restart_scope must be 'graph' or 'all', got {self.user_restart_scope!r}")
        if self.weight_normalisation not in ("sum", "max"):
            raise ValueError(f"weight_normalisation must be 'sum' or 'max', got {self.weight_normalisation!r}")


class WeightedWalk(NeighbourRecommender):
    """Paper 2's method; the four registered names differ only in their config defaults."""

    Config = WeightedWalkConfig
    # Paper 2: lambda swept 0.1..0.9 (Figure 10), k = 15 (section 5.1) with counts around it,
    # the damping d = 0.85 of a random walk with restart and values either side; the user
    # restart (our extension) off or on.
    search_space = {"k": [5, 10, 15, 25, 50], "lam": [0.1, 0.2, 0.4, 0.6, 0.8],
                    "damping": [0.5, 0.7, 0.85, 0.95], "user_restart": [0.0, 0.25, 0.5]}
    contract_overrides = {"k": 5}

    def _neighbour_options(self) -> dict:
        return {"lam": self.config.lam, "own_image_bonus": self.config.own_image_bonus}

    def _score(self, posts: Posts, side: SideInfo) -> np.ndarray:
        cfg = self.config
        found = self.neighbours(posts, side)
        weights = found.weights(cfg.weight_normalisation) if cfg.use_weights else found.valid.astype(np.float64)
        profiles = self.memory.user_profiles(posts.user) if cfg.user_restart > 0 else None
        scores = walk_tag_scores(
            found.index,
            weights,
            self.memory.image_tags,
            restart_tags=profiles,
            restart_tag_mass=cfg.user_restart,
            restart_scope=cfg.user_restart_scope,
            damping=cfg.damping,
            tol=cfg.tol,
            max_iter=cfg.max_iter,
            batch_size=cfg.batch_size,
            log=self.log,
        )
        if cfg.popularity_fallback:
            scores = self.memory.popularity_fallback(scores)
        return scores


@register
class UGNW(WeightedWalk):
    """UG-NW: groups in the neighbour score and neighbour weights in the walk (the paper's
    full method)."""

    name = "ug_nw"
    papers = {"paper2": "proposed"}
    needs = ("vlad", "groups")


@dataclass(frozen=True)
class UGNoNWConfig(WeightedWalkConfig):
    use_weights: bool = False


@register
class UGNoNW(WeightedWalk):
    """UG-noNW: groups in the neighbour score, every neighbour weighs 1 in the walk."""

    name = "ug_nonw"
    papers = {"paper2": "ablation"}
    Config = UGNoNWConfig
    needs = ("vlad", "groups")


@dataclass(frozen=True)
class NoUGNWConfig(WeightedWalkConfig):
    use_groups: bool = False


@register
class NoUGNW(WeightedWalk):
    """noUG-NW: visual neighbours only, weighted by their visual similarity in the walk."""

    name = "noug_nw"
    papers = {"paper2": "ablation"}
    Config = NoUGNWConfig
    # Without groups lambda has nothing to weigh (visual similarity only).
    search_space = {"k": [5, 10, 15, 25, 50], "damping": [0.5, 0.7, 0.85, 0.95], "user_restart": [0.0, 0.25, 0.5]}
    needs = ("vlad",)


@dataclass(frozen=True)
class NoUGNoNWConfig(WeightedWalkConfig):
    use_groups: bool = False
    use_weights: bool = False


@register
class NoUGNoNW(WeightedWalk):
    """noUG-noNW: visual neighbours only, unweighted walk."""

    name = "noug_nonw"
    papers = {"paper2": "ablation"}
    Config = NoUGNoNWConfig
    # Without groups lambda has nothing to weigh (visual similarity only).
    search_space = {"k": [5, 10, 15, 25, 50], "damping": [0.5, 0.7, 0.85, 0.95], "user_restart": [0.0, 0.25, 0.5]}
    needs = ("vlad",)


ABLATIONS: dict[str, tuple[bool, bool]] = {
    "ug_nw": (True, True),
    "ug_nonw": (True, False),
    "noug_nw": (False, True),
    "noug_nonw": (False, False),
}
"""Registered name -> (use_groups, use_weights), the four policies of paper 2's Figure 12."""
