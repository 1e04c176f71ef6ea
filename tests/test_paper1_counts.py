"""Guards the counting baselines of paper 1, MP and MP-u, against tag counts worked out by hand,
including tie-breaking and the cold-start user."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, TrainingData
from tagrec_models.evaluation.metrics import top_k
from tagrec_models.recommenders import get_recommender

N_USERS, N_TAGS, N_IMAGES = 3, 4, 10

# Training posts (user, image, tags):
#   u0: img0 {0, 1}, img1 {0}, img2 {2}
#   u1: img3 {1},    img4 {1, 3}
#   u2: img5 {3}
# global counts: tag0 2, tag1 3, tag2 1, tag3 2
# per user:      u0 [2, 1, 1, 0]   u1 [0, 2, 0, 1]   u2 [0, 0, 0, 1]
TRAIN = [(0, 0, [0, 1]), (0, 1, [0]), (0, 2, [2]), (1, 3, [1]), (1, 4, [1, 3]), (2, 5, [3])]
TEST = [(0, 6, [3]), (1, 7, [0]), (2, 8, [1]), (UNKNOWN_USER, 9, [1])]


def posts(rows) -> Posts:
    r = [p for p, (_, _, tags) in enumerate(rows) for _ in tags]
    c = [t for _, _, tags in rows for t in tags]
    matrix = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), N_TAGS))
    return Posts(
        user=np.array([u for u, _, _ in rows], dtype=np.int64),
        image=np.array([i for _, i, _ in rows], dtype=np.int64),
        tags=matrix,
        n_users=N_USERS,
        n_images=N_IMAGES,
    )


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return TrainingData(train=posts(TRAIN))


def test_mp_scores_are_the_global_counts(data):
    model = get_recommender("mp")().fit(data)
    scores = model.score(posts(TEST))
    np.testing.assert_array_equal(scores, np.tile([2, 3, 1, 2], (4, 1)))
    # tie of tags 0 and 3 (2 each) goes to the lower index
    np.testing.assert_array_equal(top_k(scores, 4)[0], [1, 0, 3, 2])


def test_mp_u_ranks_by_the_users_counts_and_breaks_ties_by_global_popularity(data):
    model = get_recommender("mp_u")().fit(data)
    scores = model.score(posts(TEST))
    # dense rank of the global counts [2, 3, 1, 2] -> [1, 2, 0, 1]; score = 4 * count_u + rank
    #   u0: [4*2+1, 4*1+2, 4*1+0, 0+1] = [9, 6, 4, 1]
    #   u1: [0+1, 4*2+2, 0+0, 4*1+1]   = [1, 10, 0, 5]
    #   u2: [0+1, 0+2, 0+0, 4*1+1]     = [1, 2, 0, 5]
    #   cold-start user: the global counts [2, 3, 1, 2]
    np.testing.assert_array_equal(
        scores, [[9, 6, 4, 1], [1, 10, 0, 5], [1, 2, 0, 5], [2, 3, 1, 2]]
    )
    # u0 used tags 1 and 2 once each: tag 1 is globally more popular, so it comes first.
    np.testing.assert_array_equal(top_k(scores, 4), [[0, 1, 2, 3], [1, 3, 0, 2], [3, 1, 0, 2], [1, 0, 3, 2]])


def test_mp_u_without_tie_break_uses_the_raw_user_counts(data):
    model = get_recommender("mp_u")(tie_break_with_mp=False).fit(data)
    scores = model.score(posts(TEST))
    np.testing.assert_array_equal(scores[:3], [[2, 1, 1, 0], [0, 2, 0, 1], [0, 0, 0, 1]])
    np.testing.assert_array_equal(scores[3], [2, 3, 1, 2])  # cold start still gets MP
    # u2's unused tags now tie and go by index: 3, then 0, 1, 2
    np.testing.assert_array_equal(top_k(scores, 4)[2], [3, 0, 1, 2])


def test_mp_u_rejects_a_user_it_does_not_know(data):
    model = get_recommender("mp_u")().fit(data)
    bad = posts([(0, 6, [1])])
    bad = Posts(user=np.array([N_USERS + 1]), image=bad.image, tags=bad.tags, n_users=N_USERS, n_images=N_IMAGES)
    with pytest.raises(IndexError, match="user"):
        model.score(bad)
