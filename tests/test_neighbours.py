"""Guards paper 2's neighbour selection (section 4.1): min-max similarity (eq. 3), group
Jaccard (eq. 4), the correlation degree (eq. 5) and neighbour weights against hand-worked
values, and the exact batched search (dense, blocked BLAS, scikit-learn and faiss indexes) against
the one-query-at-a-time brute-force reference, ties and the farthest-point trick included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.neighbours import (
    NeighbourIndex,
    brute_force_neighbours,
    correlation,
    jaccard_from_counts,
    jaccard_matrix,
    min_max_similarity,
    neighbour_weights,
)
from tagrec_models.neighbours.search import faiss_available

# The faiss back end needs faiss-cpu (the test extra installs it).
_NEEDS_FAISS = pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
FAISS = pytest.param("faiss", marks=_NEEDS_FAISS)
FAISS_UNBLOCKED = pytest.param("faiss", None, marks=_NEEDS_FAISS)


def test_min_max_similarity_by_hand():
    # distances 1, 3, 2, 5: d_min = 1, d_max = 5, span 4; s = 1 - (d - 1) / 4.
    d = np.array([[1.0, 3.0, 2.0, 5.0]])
    s = min_max_similarity(d, d.min(axis=1, keepdims=True), d.max(axis=1, keepdims=True))
    np.testing.assert_allclose(s, [[1.0, 0.5, 0.75, 0.0]])


def test_min_max_similarity_equal_distances_are_all_similar():
    d = np.full((1, 3), 2.0)
    np.testing.assert_array_equal(min_max_similarity(d, 2.0, 2.0), np.ones((1, 3)))


def test_jaccard_by_hand():
    # A = {0, 1}, B = {1, 2}, C = {}, D = {0, 1}
    groups = sparse.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]], dtype=float))
    jac = jaccard_matrix(groups, groups)
    # |A & B| = 1, |A | B| = 3; A vs C: 0/2; A vs D: 2/2; C vs C: 0/0 -> 0 (no group evidence).
    assert jac[0, 1] == pytest.approx(1 / 3)
    assert jac[0, 2] == 0.0
    assert jac[0, 3] == 1.0
    assert jac[2, 2] == 0.0
    assert jac[1, 1] == 1.0
    np.testing.assert_allclose(jac, jac.T)
    assert jaccard_from_counts(np.array([2.0]), np.array([3.0]), np.array([4.0]))[0] == pytest.approx(2 / 5)


def test_correlation_by_hand():
    # lambda 0.4, s = 0.5, J = 1/3: 0.4 * 0.5 + 0.6 / 3 = 0.2 + 0.2 = 0.4
    assert correlation(np.array(0.5), np.array(1 / 3), 0.4) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="lambda"):
        correlation(np.array(0.5), np.array(0.5), 1.5)


def test_neighbour_weights_by_hand():
    y = np.array([[0.8, 0.6, 0.6], [0.0, 0.0, 0.0], [0.5, 0.25, 0.0]])
    valid = np.array([[True, True, True], [True, True, False], [True, True, False]])
    # sum: 0.8/2, 0.6/2, 0.6/2; an all-zero row: equal weights over the valid neighbours;
    # padding gets 0.
    np.testing.assert_allclose(
        neighbour_weights(y, "sum", valid), [[0.4, 0.3, 0.3], [0.5, 0.5, 0.0], [2 / 3, 1 / 3, 0.0]]
    )
    np.testing.assert_allclose(
        neighbour_weights(y, "max", valid), [[1.0, 0.75, 0.75], [1.0, 1.0, 0.0], [1.0, 0.5, 0.0]]
    )
    with pytest.raises(ValueError, match="non-negative"):
        neighbour_weights(-y - 1)


def _line_example():
    """Four training images on a line (1-d codes 0, 1, 3, 5) and a query at 0.5.

    distances 0.5, 0.5, 2.5, 4.5 -> d_min 0.5, d_max 4.5, s = 1, 1, 0.5, 0.
    groups: query {g0}; x0 {g1}, x1 {g0, g1}, x2 {g0}, x3 {} -> J = 0, 1/2, 1, 0.
    lambda 0.4: y = 0.4 s + 0.6 J = 0.4, 0.7, 0.8, 0.0 -> top 2: x2 (0.8), x1 (0.7),
    weights (sum) 8/15, 7/15. Without groups (noUG) y = s = 1, 1, 0.5, 0: x0 and x1 tie and
    the lower row goes first.
    """
    train = np.array([[0.0], [1.0], [3.0], [5.0]], dtype=np.float32)
    groups = sparse.csr_matrix(np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=float))
    query = np.array([[0.5]], dtype=np.float32)
    query_groups = sparse.csr_matrix(np.array([[1, 0]], dtype=float))
    return train, groups, query, query_groups


@pytest.mark.parametrize("backend", ["dense", "blocked", "index", FAISS])
def test_search_by_hand(backend):
    train, groups, query, query_groups = _line_example()
    index = NeighbourIndex(train, groups=groups, backend=backend)
    found = index.search(query, 2, lam=0.4, query_groups=query_groups)
    np.testing.assert_array_equal(found.index, [[2, 1]])
    np.testing.assert_allclose(found.score, [[0.8, 0.7]])
    np.testing.assert_allclose(found.visual, [[0.5, 1.0]])
    np.testing.assert_allclose(found.group, [[1.0, 0.5]])
    np.testing.assert_allclose(found.d_min, [0.5])
    np.testing.assert_allclose(found.d_max, [4.5])
    np.testing.assert_allclose(found.weights("sum"), [[8 / 15, 7 / 15]])

    visual_only = index.search(query, 3, lam=0.4, query_groups=query_groups, use_groups=False)
    np.testing.assert_array_equal(visual_only.index, [[0, 1, 2]])
    np.testing.assert_allclose(visual_only.score, [[1.0, 1.0, 0.5]])


def _random_problem(seed: int, equal_norms: bool):
    rng = np.random.default_rng(seed)
    n, dim, n_q, n_groups, n_users = 400, 48, 30, 8, 25
    train = rng.normal(size=(n, dim)).astype(np.float32)
    if equal_norms:  # like L2-normalised VLAD codes: the farthest point is the nearest to -q
        train /= np.linalg.norm(train, axis=1, keepdims=True)
    else:
        train *= rng.uniform(0.3, 3.0, size=(n, 1)).astype(np.float32)
    queries = rng.normal(size=(n_q, dim)).astype(np.float32)
    groups = sparse.csr_matrix((rng.random((n, n_groups)) < 0.15).astype(float))
    query_groups = sparse.csr_matrix((rng.random((n_q, n_groups)) < 0.15).astype(float))
    image_ids = np.arange(n) + 1000
    # Some queries show a training image (it must not be its own neighbour), others are new.
    query_images = np.where(rng.random(n_q) < 0.5, rng.choice(image_ids, n_q), rng.integers(0, 1000, n_q))
    owners = rng.integers(0, n_users, n)
    image_users = sparse.csr_matrix((np.ones(n), (np.arange(n), owners)), shape=(n, n_users))
    query_users = rng.integers(-1, n_users, n_q)
    return dict(
        train=train,
        queries=queries,
        groups=groups,
        query_groups=query_groups,
        image_ids=image_ids,
        query_images=query_images,
        owners=owners,
        image_users=image_users,
        query_users=query_users,
    )


SEARCHES = [
    dict(lam=0.4),
    dict(lam=0.4, use_groups=False),
    dict(lam=0.1, own_image_bonus=0.3),
    dict(lam=0.7, distinct_owners=True),
    dict(lam=1.0),
]


@pytest.mark.parametrize(
    "backend, block_cells",
    [("dense", None), ("blocked", 500), ("blocked", None), ("index", None), FAISS_UNBLOCKED],
)
@pytest.mark.parametrize("equal_norms", [True, False])
def test_search_equals_brute_force(backend, block_cells, equal_norms):
    p = _random_problem(3 + equal_norms, equal_norms)
    index = NeighbourIndex(
        p["train"],
        groups=p["groups"],
        image_ids=p["image_ids"],
        image_users=p["image_users"],
        owners=p["owners"],
        backend=backend,
        # 500 cells: the blocked back end streams the training set in ~70-row blocks.
        **({} if block_cells is None else {"block_cells": block_cells}),
    )
    for options in SEARCHES:
        ref_index, ref_score = brute_force_neighbours(
            p["train"],
            p["queries"],
            12,
            train_groups=p["groups"],
            query_groups=p["query_groups"],
            train_image_ids=p["image_ids"],
            query_images=p["query_images"],
            train_image_users=p["image_users"],
            query_users=p["query_users"],
            owners=p["owners"],
            **options,
        )
        found = index.search(
            p["queries"],
            12,
            query_groups=p["query_groups"],
            query_images=p["query_images"],
            query_users=p["query_users"],
            batch_size=7,  # several batches, one of them short
            **options,
        )
        np.testing.assert_array_equal(found.index, ref_index, err_msg=str(options))
        np.testing.assert_allclose(found.score, ref_score, rtol=0, atol=1e-12, err_msg=str(options))
    # eq. 3's normalisers: the extreme distances to all training images but the query's own.
    dist = np.sqrt(((p["queries"][:, None, :].astype(np.float64) - p["train"][None]) ** 2).sum(axis=2))
    own = p["image_ids"][None, :] == p["query_images"][:, None]
    np.testing.assert_allclose(found.d_min, np.where(own, np.inf, dist).min(axis=1), rtol=1e-12)
    np.testing.assert_allclose(found.d_max, np.where(own, -np.inf, dist).max(axis=1), rtol=1e-12)


@pytest.mark.parametrize("backend", ["dense", "blocked", "index", FAISS])
def test_normalisers_are_exact_for_many_queries(backend):
    """d_min / d_max over 3000 queries: enough that an unordered screen showing only its first
    few candidates would miss the true nearest image somewhere."""
    rng = np.random.default_rng(5)
    train = rng.normal(size=(300, 6)).astype(np.float32)
    queries = rng.normal(size=(3000, 6)).astype(np.float32)
    found = NeighbourIndex(train, backend=backend).search(queries, 20, use_groups=False, batch_size=1000)
    dist = np.sqrt(((queries[:, None, :].astype(np.float64) - train[None]) ** 2).sum(axis=2))
    np.testing.assert_allclose(found.d_min, dist.min(axis=1), rtol=1e-12)
    np.testing.assert_allclose(found.d_max, dist.max(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(found.index, np.argsort(dist, axis=1, kind="stable")[:, :20])


@pytest.mark.parametrize("backend", ["index", FAISS])
@pytest.mark.parametrize("equal_norms", [True, False])
def test_farthest_point_trick_finds_the_farthest_image(backend, equal_norms):
    """The index back ends answer eq. 3's d_max as a nearest-neighbour query: -q among codes of
    equal norm, or -q lifted beside codes lifted onto a sphere; the first answer must be the
    training image farthest from q."""
    rng = np.random.default_rng(7 + equal_norms)
    train = rng.normal(size=(500, 32)).astype(np.float32)
    if equal_norms:
        train /= np.linalg.norm(train, axis=1, keepdims=True)
    else:
        train *= rng.uniform(0.2, 4.0, size=(500, 1)).astype(np.float32)
    queries = rng.normal(size=(60, 32)).astype(np.float32)
    index = NeighbourIndex(train, backend=backend)
    far_index, lift = index._farthest_index()
    assert lift is not equal_norms
    query = -queries if not lift else np.hstack([-queries, np.zeros((len(queries), 1), dtype=np.float32)])
    farthest = index._knn(far_index, query, 1)[1][:, 0]
    dist = np.sqrt(((queries[:, None, :].astype(np.float64) - train[None]) ** 2).sum(axis=2))
    np.testing.assert_array_equal(farthest, dist.argmax(axis=1))


@pytest.mark.parametrize("backend", ["dense", "blocked", "index", FAISS])
def test_near_ties_go_to_the_lower_row(backend):
    """Codes a hair apart (below float32's resolution of the screened distance, so the screen
    and faiss see ties and may order them either way) and equal groups: the exact re-scoring
    must still rank by the exact score and give ties to the lower training row."""
    rng = np.random.default_rng(9)
    base = rng.normal(size=(40, 24)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    train = np.repeat(base, 3, axis=0)[rng.permutation(120)]
    train[::2] = np.nextafter(train[::2], np.float32(2.0))  # one float32 step on half the rows
    groups = sparse.csr_matrix((rng.random((120, 4)) < 0.3).astype(float))
    queries = rng.normal(size=(25, 24)).astype(np.float32)
    query_groups = sparse.csr_matrix((rng.random((25, 4)) < 0.3).astype(float))
    index = NeighbourIndex(train, groups=groups, backend=backend)
    for options in (dict(lam=0.4), dict(lam=0.4, use_groups=False)):
        ref_index, ref_score = brute_force_neighbours(
            train, queries, 8, train_groups=groups, query_groups=query_groups, **options
        )
        found = index.search(queries, 8, query_groups=query_groups, **options)
        np.testing.assert_array_equal(found.index, ref_index, err_msg=str(options))
        np.testing.assert_allclose(found.score, ref_score, rtol=0, atol=1e-12, err_msg=str(options))


def test_search_options_do_what_they_say():
    p = _random_problem(11, True)
    index = NeighbourIndex(
        p["train"], groups=p["groups"], image_ids=p["image_ids"], image_users=p["image_users"], owners=p["owners"]
    )
    common = dict(query_groups=p["query_groups"], query_images=p["query_images"], query_users=p["query_users"])
    plain = index.search(p["queries"], 10, lam=0.4, **common)
    # Never the query's own image.
    assert not (p["image_ids"][plain.index] == p["query_images"][:, None]).any()
    # Distinct owners: no owner twice in a row.
    distinct = index.search(p["queries"], 10, lam=0.4, distinct_owners=True, **common)
    for row in p["owners"][distinct.index]:
        assert len(set(row)) == len(row)
    # The own-image bonus brings a known user's own images in; cold users are unaffected.
    bonus = index.search(p["queries"], 10, lam=0.4, own_image_bonus=5.0, **common)
    for q, user in enumerate(p["query_users"]):
        own_in_plain = (p["owners"][plain.index[q]] == user).sum()
        own_in_bonus = (p["owners"][bonus.index[q]] == user).sum()
        if user < 0:
            np.testing.assert_array_equal(bonus.index[q], plain.index[q])
        else:
            n_own = int(((p["owners"] == user) & (p["image_ids"] != p["query_images"][q])).sum())
            assert own_in_bonus == min(10, n_own) >= own_in_plain


def test_fewer_training_images_than_k_pads_with_minus_one():
    train, groups, query, query_groups = _line_example()
    found = NeighbourIndex(train, groups=groups).search(query, 6, lam=0.4, query_groups=query_groups)
    np.testing.assert_array_equal(found.index, [[2, 1, 0, 3, -1, -1]])
    assert found.valid.sum() == 4
    np.testing.assert_allclose(found.weights().sum(), 1.0)


def test_bad_inputs_are_named():
    train, groups, query, query_groups = _line_example()
    with pytest.raises(ValueError, match="NaN"):
        NeighbourIndex(np.array([[np.nan]], dtype=np.float32))
    for bad in (np.inf, -np.inf, np.nan, 1e39):  # 1e39 is finite in float64, infinite in float32
        features = np.ones((5, 7))
        features[3, 4] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            NeighbourIndex(features, block_cells=14)  # blocks of 2 rows: the bad row is in the last full one
    index = NeighbourIndex(train, groups=groups)
    with pytest.raises(ValueError, match="query_features"):
        index.search(np.zeros((1, 3), dtype=np.float32), 2)
    with pytest.raises(ValueError, match="lambda"):
        index.search(query, 2, lam=1.5, query_groups=query_groups)
    with pytest.raises(ValueError, match="query_groups"):
        index.search(query, 2, lam=0.4)
    with pytest.raises(ValueError, match="groups"):
        NeighbourIndex(train).search(query, 2, lam=0.4, query_groups=query_groups)
    with pytest.raises(ValueError, match="backend"):
        NeighbourIndex(train, backend="annoy")


def _duplicates_problem(equal_norms: bool, dim: int = 4096):
    """20 distinct codes, 40 exact copies of each (shuffled), as the training set; the 20
    codes themselves and 30 noisy ones as queries (4,096-d, VLAD's size: at 1,024-d faiss's
    float32 distances of copies happened to come out equal). Each code's copies share one group (the
    query of a code is in its group), and each copy has its own owner."""
    rng = np.random.default_rng(17 + equal_norms)
    base = rng.normal(size=(20, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    if not equal_norms:
        base *= rng.uniform(0.5, 2.0, size=(20, 1)).astype(np.float32)
    code = np.repeat(np.arange(20), 40)[rng.permutation(800)]
    train = base[code]
    query_code = np.concatenate([np.arange(20), rng.integers(0, 20, 30)])
    queries = base[query_code].copy()
    queries[20:] += (0.05 * rng.normal(size=(30, dim))).astype(np.float32)
    groups = sparse.csr_matrix((np.ones(800), (np.arange(800), code)), shape=(800, 20))
    query_groups = sparse.csr_matrix((np.ones(50), (np.arange(50), query_code)), shape=(50, 20))
    n_users = 60
    owners = rng.integers(0, n_users, 800)
    image_users = sparse.csr_matrix((np.ones(800), (np.arange(800), owners)), shape=(800, n_users))
    query_users = rng.integers(-1, n_users, 50)
    return dict(train=train, queries=queries, groups=groups, query_groups=query_groups, owners=owners,
                image_users=image_users, query_users=query_users)


# (k, options): distinct owners searches 4k candidates, so k = 4 keeps the cut among the copies.
DUPLICATE_SEARCHES = [
    (12, dict(lam=0.4, use_groups=False)),
    (12, dict(lam=0.4)),
    (12, dict(lam=0.3, own_image_bonus=0.2)),
    (4, dict(lam=0.4, use_groups=False, distinct_owners=True)),
]


@pytest.mark.parametrize(
    "backend, block_cells",
    [("dense", None), ("blocked", 10_000), ("blocked", None), ("index", None), FAISS_UNBLOCKED],
)
@pytest.mark.parametrize("equal_norms", [True, False])
def test_many_exact_duplicates_at_the_cut_go_to_the_lower_rows(backend, block_cells, equal_norms):
    """40 exact copies of each code, k = 12: the query's 40 copies (or its group's) tie at the
    cut, far more than any fixed margin of extra candidates. The float32 screens give copies
    distances a rounding step apart, and screens and indexes order equal values their own
    way; the answer must still be the brute force's: the lowest rows among the tied copies."""
    p = _duplicates_problem(equal_norms)
    index = NeighbourIndex(
        p["train"], groups=p["groups"], image_users=p["image_users"], owners=p["owners"], backend=backend,
        **({} if block_cells is None else {"block_cells": block_cells}),
    )
    for k, options in DUPLICATE_SEARCHES:
        ref_index, ref_score = brute_force_neighbours(
            p["train"], p["queries"], k, train_groups=p["groups"], query_groups=p["query_groups"],
            train_image_users=p["image_users"], query_users=p["query_users"], owners=p["owners"], **options,
        )
        found = index.search(
            p["queries"], k, query_groups=p["query_groups"], query_users=p["query_users"], batch_size=25, **options
        )
        np.testing.assert_array_equal(found.index, ref_index, err_msg=str(options))
        np.testing.assert_allclose(found.score, ref_score, rtol=0, atol=1e-12, err_msg=str(options))
    # The exact rule, spelled out on the 20 queries equal to a training code (visual only):
    # the code's 40 copies are at distance 0, so the neighbours are its 12 lowest rows.
    visual = index.search(p["queries"][:20], 12, use_groups=False)
    for q in range(20):
        copies = np.flatnonzero((p["train"] == p["queries"][q]).all(axis=1))
        np.testing.assert_array_equal(visual.index[q], copies[:12])


@pytest.mark.parametrize(
    "backend, block_cells",
    [("dense", None), ("blocked", 500), ("index", None), FAISS_UNBLOCKED],
)
@pytest.mark.parametrize("equal_norms", [True, False])
def test_extremes_are_exact_among_many_near_ties(backend, block_cells, equal_norms):
    """eq. 3's d_min and d_max when 30 images lie within float32 rounding of the nearest and
    30 of the farthest (copies of one code, each nudged by one float32 step in a random
    coordinate): their exact distances differ by far less than the screens' error, and more
    of them than the few extremes a screen re-measures. d_min, d_max, hence every score, must
    be the exact ones, and the neighbours the brute force's."""
    rng = np.random.default_rng(23 + equal_norms)
    dim = 512
    rest = rng.normal(size=(300, dim)).astype(np.float32)
    near = rng.normal(size=dim).astype(np.float32)
    query = (near + 0.01 * rng.normal(size=dim)).astype(np.float32)
    far = -3.0 * query  # farther than every other image, with or without normalising
    copies = []
    for code in (near, far):
        block = np.repeat(code[None], 30, axis=0)
        col = rng.integers(0, dim, 30)
        step = np.where(rng.random(30) < 0.5, np.inf, -np.inf).astype(np.float32)
        block[np.arange(30), col] = np.nextafter(block[np.arange(30), col], step)
        copies.append(block)
    train = np.vstack([rest, copies[0], copies[1]])
    if equal_norms:
        train /= np.linalg.norm(train, axis=1, keepdims=True)
        query /= np.linalg.norm(query)
    train = train[rng.permutation(len(train))]
    queries = np.vstack([query, query + np.float32(1e-3)]).astype(np.float32)
    dist = np.sqrt(((queries[:, None, :].astype(np.float64) - train[None]) ** 2).sum(axis=2))
    index = NeighbourIndex(train, backend=backend, **({} if block_cells is None else {"block_cells": block_cells}))
    found = index.search(queries, 10, use_groups=False)
    np.testing.assert_allclose(found.d_min, dist.min(axis=1), rtol=1e-14)
    np.testing.assert_allclose(found.d_max, dist.max(axis=1), rtol=1e-14)
    ref_index, ref_score = brute_force_neighbours(train, queries, 10, use_groups=False)
    np.testing.assert_array_equal(found.index, ref_index)
    np.testing.assert_allclose(found.score, ref_score, rtol=0, atol=1e-12)


def test_squared_norms_do_not_depend_on_the_block_size():
    """The index computes its float64 row norms a block at a time (bounded memory): every
    block size gives the same bits, so neighbour ties break the same way."""
    features = np.random.default_rng(0).normal(size=(37, 53)).astype(np.float32)
    whole = NeighbourIndex(features).sq_norms
    for cells in (1, 53, 54, 500):
        np.testing.assert_array_equal(NeighbourIndex(features, block_cells=cells).sq_norms, whole)
    np.testing.assert_allclose(whole, (features.astype(np.float64) ** 2).sum(axis=1), rtol=1e-12)
