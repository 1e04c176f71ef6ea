"""Guards paper 2's weighted random walk with restart (section 4.2, eq. 6): a hand-solved
3-image, 4-tag graph (Figure 7's size), the stationary property, batching, the personalised
restart and the convergence and input checks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.graph import (
    eq6_operator,
    neighbour_tag_graph,
    random_walk_with_restart,
    walk_tag_scores,
)

# Figure 7's size: three images (the target u and its neighbours n1, n2) and four tags.
# n1 (weight 3/5) carries t1, t2; n2 (weight 2/5) carries t2, t3, t4; u is linked to n1, n2.
TAGS = sparse.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=float))
NEIGHBOURS = np.array([[0, 1]])
WEIGHTS = np.array([[0.6, 0.4]])


def hand_solution() -> np.ndarray:
    """Eq. 6 solved by hand, nodes in the order u, n1, n2, t1, t2, t3, t4.

    d = 17/20; out-degrees: u 2, n1 3 (u, t1, t2), n2 4 (u, t2, t3, t4), t1 1, t2 2, t3 1,
    t4 1; w = 1 for u and tags, 3/5 for n1, 2/5 for n2. Write a = w1 N1 / 3 = N1 / 5 and
    b = w2 N2 / 4 = N2 / 10 (what n1, n2 send along each edge). Then

        T1 = d a,  T2 = d (a + b),  T3 = T4 = d b,  U = 3/20 + d (a + b)
        N1 = d (U/2 + T1 + T2/2) = d U/2 + d^2 (3a + b)/2
        N2 = d (U/2 + T2/2 + T3 + T4) = d U/2 + d^2 (a + 5b)/2

    With N1 = 5a, N2 = 10b, subtracting the two: 5a - 10b = d^2 (a - 2b), so
    (5 - d^2)(a - 2b) = 0 and a = 2b. Then 10b = d U/2 + 7 d^2 b / 2, i.e.
    b = d U / (20 - 7 d^2), and U = 3/20 + 3 d b gives U = 3 (20 - 7 d^2) / (20 (20 - 10 d^2)).
    With d^2 = 289/400: U = 17931/102200, b = 51/5110, a = 102/5110, N1 = N2 = 51/511,
    T1 = 1734/102200, T2 = 2601/102200, T3 = T4 = 867/102200. These sum to 44400/102200
    (images of weight < 1 withhold mass); rescaled to sum to 1 the vector is
    (17931, 10200, 10200, 1734, 2601, 867, 867) / 44400.
    """
    d = Fraction(17, 20)
    u = 3 * (20 - 7 * d**2) / (20 * (20 - 10 * d**2))
    b = d * u / (20 - 7 * d**2)
    a = 2 * b
    raw = [u, 5 * a, 10 * b, d * a, d * (a + b), d * b, d * b]
    assert raw == [Fraction(17931, 102200), Fraction(51, 511), Fraction(51, 511),
                   Fraction(1734, 102200), Fraction(2601, 102200), Fraction(867, 102200), Fraction(867, 102200)]
    total = sum(raw)
    assert total == Fraction(44400, 102200)
    return np.array([float(x / total) for x in raw])


def test_walk_matches_hand_solution():
    graph = neighbour_tag_graph(NEIGHBOURS, WEIGHTS, TAGS)
    restart = np.zeros(graph.block_size)
    restart[0] = 1.0
    result = random_walk_with_restart(graph.operator, restart, damping=0.85, tol=1e-14)
    expected = hand_solution()
    np.testing.assert_allclose(result.scores[0], expected, rtol=0, atol=1e-12)
    assert result.scores.sum() == pytest.approx(1.0, abs=1e-12)
    # t2 (both neighbours) > t1 (the heavier neighbour) > t3 = t4
    tags = walk_tag_scores(NEIGHBOURS, WEIGHTS, TAGS, tol=1e-14)[0]
    np.testing.assert_allclose(tags, expected[3:], atol=1e-12)
    assert tags[1] > tags[0] > tags[2] == pytest.approx(tags[3])


def test_unit_weights_conserve_mass_by_hand():
    """noNW on a chain u - n - t: U = 3/20 + d N/2, N = d (U + T), T = d N/2 (out(n) = 2).
    Then T = 17/40 N, N = (17/20 U) / (1 - 289/800) = (680/511) U, and
    U (1 - (17/40)(680/511)) = 3/20 gives U = 511/1480, N = 680/1480, T = 289/1480: with
    every weight 1 nothing is withheld and the raw fixed point already sums to 1."""
    graph = neighbour_tag_graph(np.array([[0]]), np.array([[1.0]]), sparse.csr_matrix(np.array([[1.0]])))
    restart = np.array([1.0, 0.0, 0.0])
    p = restart.copy()
    for _ in range(300):  # the raw eq. 6 iteration, no rescaling
        p = 0.15 * restart + 0.85 * (graph.operator @ p)
    np.testing.assert_allclose(p, np.array([511, 680, 289]) / 1480, atol=1e-12)
    result = random_walk_with_restart(graph.operator, restart, tol=1e-14)
    np.testing.assert_allclose(result.scores[0], p, atol=1e-12)


def test_rescaled_vector_is_stationary_for_the_leak_to_restart_chain():
    """The rescaled fixed point is the stationary law of a true Markov chain: from node j
    follow an edge (prob. d w_j, uniformly over j's edges) or jump to the restart law."""
    graph = neighbour_tag_graph(NEIGHBOURS, WEIGHTS, TAGS)
    restart = np.zeros(graph.block_size)
    restart[0] = 1.0
    p = random_walk_with_restart(graph.operator, restart, tol=1e-14).scores[0]
    follow = 0.85 * graph.operator.toarray()  # column j: where j's walker goes along edges
    chain = follow + np.outer(restart, 1.0 - follow.sum(axis=0))
    np.testing.assert_allclose(chain.sum(axis=0), 1.0)
    np.testing.assert_allclose(chain @ p, p, atol=1e-12)


def test_eq6_operator_from_adjacency_matches_graph_builder():
    graph = neighbour_tag_graph(NEIGHBOURS, WEIGHTS, TAGS)
    adjacency = (graph.operator.toarray() > 0).astype(float)
    weights = np.array([1.0, 0.6, 0.4, 1, 1, 1, 1])
    np.testing.assert_allclose(eq6_operator(adjacency, weights).toarray(), graph.operator.toarray())


def test_batched_walks_equal_single_walks():
    rng = np.random.default_rng(0)
    tags = sparse.csr_matrix((rng.random((30, 9)) < 0.3).astype(float))
    neighbours = rng.integers(0, 30, size=(7, 5))
    neighbours[2, 3:] = -1  # a query with only three neighbours
    weights = rng.random((7, 5))
    weights /= weights.sum(axis=1, keepdims=True)
    together = walk_tag_scores(neighbours, weights, tags, tol=1e-13, batch_size=3)
    for q in range(7):
        alone = walk_tag_scores(neighbours[q : q + 1], weights[q : q + 1], tags, tol=1e-13)
        np.testing.assert_allclose(together[q], alone[0], atol=1e-12)
    # A tag no neighbour carries is never reached.
    carried = np.zeros((7, 9), dtype=bool)
    for q in range(7):
        valid = neighbours[q][neighbours[q] >= 0]
        carried[q] = np.asarray(tags[valid].sum(axis=0)).ravel() > 0
    assert (together[~carried] == 0).all() and (together[carried] > 0).all()


def test_personalised_restart_lifts_the_users_tags():
    profile = np.array([[0.0, 0.0, 0.0, 1.0]])  # the user always used t4
    plain = walk_tag_scores(NEIGHBOURS, WEIGHTS, TAGS, tol=1e-13)[0]
    personal = walk_tag_scores(NEIGHBOURS, WEIGHTS, TAGS, restart_tags=profile, restart_tag_mass=0.3, tol=1e-13)[0]
    assert personal[3] > personal[2] and plain[3] == pytest.approx(plain[2])
    # A cold-start user (all-zero profile) gets the plain walk.
    cold = walk_tag_scores(NEIGHBOURS, WEIGHTS, TAGS, restart_tags=np.zeros((1, 4)), restart_tag_mass=0.3, tol=1e-13)
    np.testing.assert_allclose(cold[0], plain, atol=1e-12)


def test_walk_errors_are_clear():
    graph = neighbour_tag_graph(NEIGHBOURS, WEIGHTS, TAGS)
    restart = np.zeros(graph.block_size)
    restart[0] = 1.0
    with pytest.raises(RuntimeError, match="converge"):
        random_walk_with_restart(graph.operator, restart, tol=1e-12, max_iter=2)
    with pytest.raises(ValueError, match="restart"):
        random_walk_with_restart(graph.operator, 2 * restart)
    with pytest.raises(ValueError, match="damping"):
        random_walk_with_restart(graph.operator, restart, damping=1.0)
    with pytest.raises(ValueError, match="weights"):
        neighbour_tag_graph(NEIGHBOURS, np.array([[1.5, 0.4]]), TAGS)
    with pytest.raises(ValueError, match="restart_tag_mass"):
        walk_tag_scores(NEIGHBOURS, WEIGHTS, TAGS, restart_tags=np.array([[0, 0, 0, 1.0]]), restart_tag_mass=1.0)


def test_restart_scope_graph_keeps_unrelated_history_out():
    # Five tags; the user's history is split between t4 (in the graph) and t5 (no neighbour
    # carries it).
    tags = sparse.hstack([TAGS, sparse.csr_matrix((2, 1))]).tocsr()
    profile = np.array([[0.0, 0.0, 0.0, 0.5, 0.5]])
    scoped = walk_tag_scores(NEIGHBOURS, WEIGHTS, tags, restart_tags=profile, restart_tag_mass=0.3, tol=1e-13)[0]
    whole = walk_tag_scores(
        NEIGHBOURS, WEIGHTS, tags, restart_tags=profile, restart_tag_mass=0.3, restart_scope="all", tol=1e-13
    )[0]
    assert scoped[4] == 0.0 and whole[4] > 0.0
    # "graph" renormalises the in-graph part: all 0.3 of the restart lands on t4.
    assert scoped[3] > whole[3] > whole[2]
