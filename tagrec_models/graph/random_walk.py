"""Paper 2, section 4.2: the weighted random walk with restart on the neighbour-tag graph.

Eq. 6 (the paper's weighted PageRank), for every node i of the graph:

    PR(i) = (1 - d) * r_i + d * sum_{j in in(i)} w_j * PR(j) / |out(j)|

with ``r_i = 1`` for the target image u and 0 elsewhere (the walk restarts at the target),
``w_j = 1`` for a tag node and ``w_j`` = the neighbour's weight (section 4.1.3) for an image
node, and d = 0.85. In matrix form ``p = (1 - d) r + d M p`` with ``M[i, j] = w_j / |out(j)|``
for every edge j -> i. Because every ``w_j <= 1`` the columns of M sum to at most 1, so
``d M`` is a contraction and the iteration converges from any start at rate d.

Mass: an image node with ``w_j < 1`` passes on only ``w_j`` of what it holds, so the fixed
point of paper 2, eq. 6 as printed sums to less than 1. We report it rescaled to sum to 1 per graph.
That rescaled vector is exactly the stationary distribution of a proper Markov chain in
which the mass an image node withholds (``1 - w_j`` of its share) jumps back to the restart
distribution: the extra restart term is proportional to r, so the fixed point is the same
vector up to a scalar. Rankings are those of paper 2, eq. 6 either way.

The graph built here (``neighbour_tag_graph``), one per query, nodes in this order:

* the target image u, linked to each of its k neighbours (how the walk leaves the restart
  node: a new image has no tags of its own, so its only edges are to its neighbours);
* the k neighbour images, each linked to u and to every tag it carries;
* one node per tag of the vocabulary (tags no neighbour carries are isolated and keep only
  the restart mass given to them, if any).

Many queries are walked at once as one block-diagonal sparse matrix; the iteration is a
sparse matrix-vector product, never a loop over nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from scipy import sparse

Log = Callable[[str], None]


@dataclass(frozen=True)
class WalkResult:
    """``scores``: ``[n_blocks, block_size]``, each row the stationary vector of one graph,
    summing to 1; ``iterations`` run; ``residual``: the last step's largest per-graph L1
    change."""

    scores: np.ndarray
    iterations: int
    residual: float


def eq6_operator(adjacency: sparse.spmatrix, node_weight: np.ndarray) -> sparse.csr_matrix:
    """``M[i, j] = w_j * A[i, j] / |out(j)|`` from a 0/1 adjacency (``A[i, j] = 1``: an edge
    j -> i; undirected graphs are symmetric) and the node weights of paper 2, eq. 6."""
    adjacency = sparse.csr_matrix(adjacency, dtype=np.float64)
    n = adjacency.shape[0]
    if adjacency.shape != (n, n):
        raise ValueError(f"eq6_operator: adjacency must be square, got {adjacency.shape}")
    node_weight = np.asarray(node_weight, dtype=np.float64)
    if node_weight.shape != (n,):
        raise ValueError(f"eq6_operator: node_weight must have shape ({n},), got {node_weight.shape}")
    _check_weights(node_weight, "node_weight")
    out_degree = np.asarray(adjacency.sum(axis=0)).ravel()
    scale = np.divide(node_weight, out_degree, out=np.zeros(n), where=out_degree > 0)
    return sparse.csr_matrix(adjacency @ sparse.diags(scale))


def random_walk_with_restart(
    operator: sparse.spmatrix,
    restart: np.ndarray,
    *,
    damping: float = 0.85,
    tol: float = 1e-10,
    max_iter: int = 1000,
    block_size: int | None = None,
) -> WalkResult:
    """Iterate paper 2, eq. 6, ``p <- (1 - d) r + d M p``, from ``p = r`` until every graph's L1 change
    is below ``tol``; return each graph's fixed point rescaled to sum to 1.

    ``operator`` may hold many graphs on its block diagonal, each ``block_size`` nodes long
    (default: one graph). ``restart`` is the restart distribution, non-negative and summing to
    1 within each block. Raises if ``max_iter`` steps do not reach ``tol``.
    """
    operator = sparse.csr_matrix(operator, dtype=np.float64)
    restart = np.asarray(restart, dtype=np.float64).ravel()
    n = operator.shape[0]
    if operator.shape != (n, n) or restart.shape != (n,):
        raise ValueError(f"random_walk_with_restart: operator {operator.shape} and restart {restart.shape} disagree")
    if not 0.0 < damping < 1.0:
        raise ValueError(f"random_walk_with_restart: damping must lie in (0, 1), got {damping}")
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"random_walk_with_restart: need tol > 0 and max_iter >= 1, got {tol}, {max_iter}")
    block_size = n if block_size is None else int(block_size)
    if block_size < 1 or n % block_size:
        raise ValueError(f"random_walk_with_restart: {n} nodes do not split into blocks of {block_size}")
    if (restart < 0).any():
        raise ValueError("random_walk_with_restart: restart has negative entries")
    sums = restart.reshape(-1, block_size).sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-9):
        raise ValueError("random_walk_with_restart: restart must sum to 1 within each graph")
    column_mass = np.asarray(operator.sum(axis=0)).ravel()
    if (operator.data < 0).any() or (column_mass > 1.0 + 1e-9).any():
        raise ValueError("random_walk_with_restart: operator columns must be non-negative and sum to at most 1")

    base = (1.0 - damping) * restart
    p = restart.copy()
    residual = np.inf
    for iteration in range(1, max_iter + 1):
        nxt = base + damping * (operator @ p)
        residual = float(np.abs(nxt - p).reshape(-1, block_size).sum(axis=1).max())
        p = nxt
        if residual < tol:
            break
    else:
        raise RuntimeError(
            f"random walk did not converge in {max_iter} iterations (last L1 change {residual:.3g}, tol {tol:.3g})"
        )
    blocks = p.reshape(-1, block_size)
    blocks = blocks / blocks.sum(axis=1, keepdims=True)
    return WalkResult(scores=blocks, iterations=iteration, residual=residual)


@dataclass(frozen=True)
class NeighbourTagGraph:
    """Many queries' graphs on one block diagonal: ``operator`` is paper 2, eq. 6's M; block q holds
    nodes ``[u, neighbour_1..neighbour_k, tag_1..tag_T]`` (``block_size = 1 + k + T``)."""

    operator: sparse.csr_matrix
    n_queries: int
    k: int
    n_tags: int

    @property
    def block_size(self) -> int:
        return 1 + self.k + self.n_tags

    def tag_slice(self) -> slice:
        return slice(1 + self.k, self.block_size)


def neighbour_tag_graph(
    neighbours: np.ndarray, weights: np.ndarray, image_tags: sparse.spmatrix
) -> NeighbourTagGraph:
    """Section 4.2.1: each query's weighted neighbour-tag bipartite graph, as paper 2, eq. 6's operator.

    ``neighbours``: ``[Q, k]`` rows of ``image_tags`` (-1 = no neighbour); ``weights``:
    ``[Q, k]`` in [0, 1], each neighbour's w (all ones for the paper's "noNW");
    ``image_tags``: binary ``[n_train, n_tags]``. The target carries weight 1, tags 1.
    """
    neighbours = np.asarray(neighbours, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if neighbours.ndim != 2 or weights.shape != neighbours.shape:
        raise ValueError(f"neighbour_tag_graph: neighbours {neighbours.shape} and weights {weights.shape} disagree")
    image_tags = sparse.csr_matrix(image_tags, dtype=np.float64)
    if neighbours.size and neighbours.max() >= image_tags.shape[0]:
        raise ValueError("neighbour_tag_graph: a neighbour index is beyond the training images")
    _check_weights(weights[neighbours >= 0], "weights")
    n_q, k = neighbours.shape
    n_tags = image_tags.shape[1]
    size = 1 + k + n_tags
    n_nodes = n_q * size

    qq, jj = np.nonzero(neighbours >= 0)
    w = weights[qq, jj]
    target = qq * size
    node = target + 1 + jj
    tags = image_tags[neighbours[qq, jj]].tocoo()
    row = tags.row  # which (q, j) pair, in the order of qq / jj
    tag_node = qq[row] * size + 1 + k + tags.col

    out_target = np.bincount(qq, minlength=n_q).astype(np.float64)
    out_node = 1.0 + np.bincount(row, minlength=len(qq))
    out_tag = np.bincount(tag_node, minlength=n_nodes).astype(np.float64)

    # Edge j -> i carries w_j / |out(j)| (paper 2, eq. 6); the target's and the tags' w is 1.
    src = np.concatenate([target, node, node[row], tag_node])
    dst = np.concatenate([node, target, tag_node, node[row]])
    val = np.concatenate(
        [
            1.0 / out_target[qq],
            w / out_node,
            w[row] / out_node[row],
            1.0 / out_tag[tag_node],
        ]
    )
    operator = sparse.csr_matrix((val, (dst, src)), shape=(n_nodes, n_nodes))
    return NeighbourTagGraph(operator=operator, n_queries=n_q, k=k, n_tags=n_tags)


def walk_tag_scores(
    neighbours: np.ndarray,
    weights: np.ndarray,
    image_tags: sparse.spmatrix,
    *,
    restart_tags: np.ndarray | None = None,
    restart_tag_mass: np.ndarray | float = 0.0,
    restart_scope: Literal["graph", "all"] = "graph",
    damping: float = 0.85,
    tol: float = 1e-10,
    max_iter: int = 1000,
    batch_size: int = 256,
    log: Log | None = None,
) -> np.ndarray:
    """Each query's tag scores: the tag part of its graph's stationary vector (paper 2, eq. 6, the
    whole vector summing to 1), ``[Q, n_tags]``.

    ``restart_tags`` (``[Q, n_tags]``, rows summing to 1 or all zero) with
    ``restart_tag_mass`` (a scalar or ``[Q]`` in [0, 1)) moves that share of the restart
    from the target image onto the user's own tag distribution (personalised restart; 0 is
    the paper). With ``restart_scope="graph"`` the user's distribution is restricted to the
    tags the query's neighbours carry (and renormalised): the history then re-weights the
    visually plausible tags instead of pulling in the user's tags of unrelated topics;
    ``"all"`` restarts on the whole distribution. A row with no mass left (a cold-start user,
    or no overlap with the graph) keeps the whole restart on the target.
    """
    neighbours = np.asarray(neighbours, dtype=np.int64)
    n_q, k = neighbours.shape
    image_tags = sparse.csr_matrix(image_tags, dtype=np.float64)
    n_tags = image_tags.shape[1]
    if restart_scope not in ("graph", "all"):
        raise ValueError(f"walk_tag_scores: restart_scope must be 'graph' or 'all', got {restart_scope!r}")
    mass = np.broadcast_to(np.asarray(restart_tag_mass, dtype=np.float64), (n_q,)).copy()
    if ((mass < 0) | (mass >= 1)).any():
        raise ValueError("walk_tag_scores: restart_tag_mass must lie in [0, 1)")
    if restart_tags is not None:
        restart_tags = np.asarray(restart_tags, dtype=np.float64)
        if restart_tags.shape != (n_q, n_tags):
            raise ValueError(f"walk_tag_scores: restart_tags must be [{n_q}, {n_tags}], got {restart_tags.shape}")
        row_sums = restart_tags.sum(axis=1)
        if (restart_tags < 0).any() or not np.all(np.isclose(row_sums, 1.0) | (row_sums == 0)):
            raise ValueError("walk_tag_scores: restart_tags rows must be distributions or all zero")
        mass = np.where(row_sums > 0, mass, 0.0)
    else:
        mass[:] = 0.0

    out = np.zeros((n_q, n_tags))
    for start in range(0, n_q, batch_size):
        stop = min(start + batch_size, n_q)
        graph = neighbour_tag_graph(neighbours[start:stop], weights[start:stop], image_tags)
        restart = np.zeros((stop - start, graph.block_size))
        batch_mass = mass[start:stop].copy()
        if restart_tags is not None:
            personal = restart_tags[start:stop]
            if restart_scope == "graph":
                # A tag node is in a query's graph when it has an edge (a non-empty column).
                linked = np.diff(graph.operator.tocsc().indptr).reshape(-1, graph.block_size) > 0
                personal = personal * linked[:, graph.tag_slice()]
                totals = personal.sum(axis=1, keepdims=True)
                personal = np.divide(personal, totals, out=np.zeros_like(personal), where=totals > 0)
                batch_mass = np.where(totals[:, 0] > 0, batch_mass, 0.0)
            restart[:, graph.tag_slice()] = batch_mass[:, None] * personal
        restart[:, 0] = 1.0 - batch_mass
        result = random_walk_with_restart(
            graph.operator, restart.ravel(), damping=damping, tol=tol, max_iter=max_iter, block_size=graph.block_size
        )
        out[start:stop] = result.scores[:, graph.tag_slice()]
        if log is not None and (stop == n_q or (start // batch_size) % 20 == 19):
            log(f"random walk: {stop}/{n_q} queries ({result.iterations} iterations in the last batch)")
    return out


def _check_weights(weights: np.ndarray, name: str) -> None:
    if not np.isfinite(weights).all() or (weights < 0).any() or (weights > 1.0 + 1e-12).any():
        raise ValueError(f"{name}: paper 2, eq. 6's node weights must lie in [0, 1]")
