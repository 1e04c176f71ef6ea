"""Paper 2, section 4.1: group-aware visual neighbours (paper 2, eqs. 2-5), searched exactly in batches.

``similarity`` holds the equations, ``search`` the batched exact top-k search (dense or blocked BLAS,
a scikit-learn or faiss exact index, plus the brute-force reference), ``memory`` what a lazy neighbour model
keeps from training, and paper 2's parameter studies of section 5 live in ``tagrec_models.studies.sweeps``.
"""

from tagrec_models.neighbours.memory import NeighbourMemory
from tagrec_models.neighbours.search import NeighbourIndex, Neighbours, brute_force_neighbours
from tagrec_models.neighbours.similarity import (
    correlation,
    euclidean,
    jaccard_from_counts,
    jaccard_matrix,
    min_max_similarity,
    neighbour_weights,
)

__all__ = [
    "NeighbourIndex",
    "NeighbourMemory",
    "Neighbours",
    "brute_force_neighbours",
    "correlation",
    "euclidean",
    "jaccard_from_counts",
    "jaccard_matrix",
    "min_max_similarity",
    "neighbour_weights",
]
