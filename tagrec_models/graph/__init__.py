"""Paper 2, section 4.2: the weighted random walk with restart (paper 2, eq. 6) on neighbour-tag graphs."""

from tagrec_models.graph.random_walk import (
    NeighbourTagGraph,
    WalkResult,
    eq6_operator,
    neighbour_tag_graph,
    random_walk_with_restart,
    walk_tag_scores,
)

__all__ = [
    "NeighbourTagGraph",
    "WalkResult",
    "eq6_operator",
    "neighbour_tag_graph",
    "random_walk_with_restart",
    "walk_tag_scores",
]
