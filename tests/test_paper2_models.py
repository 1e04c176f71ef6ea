"""Guards paper 2's registered models (ug_nw, ug_nonw, noug_nw, noug_nonw, knn_voting,
personal_knn): they beat MP and random on a known-signal set, the group term and the user's
history do what they claim, cold-start users and the feature-name config work, and the
baselines match hand-worked scores."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import sparse

from paper2_data import N_TAGS, known_signal, with_cold_user
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.neighbours.search import faiss_available
from tagrec_models.recommenders import get_recommender

PAPER2 = ["ug_nw", "ug_nonw", "noug_nw", "noug_nonw", "knn_voting", "personal_knn"]


def ndcg10(name: str, data, test, side, **config) -> float:
    model = get_recommender(name)(**config).fit(data)
    return float(metrics_at_k(model.score(test, side), test.tags).ndcg[9])


@pytest.fixture(scope="module")
def clear():
    return known_signal(seed=0, signal=1.0)


@pytest.fixture(scope="module")
def blurred():
    """Visual codes that barely carry the topic; groups still do."""
    return known_signal(seed=1, signal=0.3)


def test_registered_with_paper_defaults():
    for name in PAPER2:
        assert get_recommender(name).name == name
    cfg = get_recommender("ug_nw").Config()
    assert (cfg.lam, cfg.damping, cfg.k, cfg.feature) == (0.4, 0.85, 15, "vlad")
    assert (cfg.use_groups, cfg.use_weights, cfg.user_restart, cfg.own_image_bonus) == (True, True, 0.0, 0.0)
    flags = {name: (get_recommender(name).Config().use_groups, get_recommender(name).Config().use_weights)
             for name in ["ug_nw", "ug_nonw", "noug_nw", "noug_nonw"]}
    assert flags == {"ug_nw": (True, True), "ug_nonw": (True, False), "noug_nw": (False, True), "noug_nonw": (False, False)}


@pytest.mark.parametrize("name", PAPER2)
def test_beats_mp_and_random(name, clear):
    data, test, side = clear
    model_score = ndcg10(name, data, test, side)
    mp = ndcg10("mp", data, test, side)
    rand = float(metrics_at_k(np.random.default_rng(0).random((test.n_posts, N_TAGS)), test.tags).ndcg[9])
    assert model_score > mp + 0.2
    assert model_score > rand + 0.2


def test_groups_help_when_pictures_are_blurred(blurred):
    data, test, side = blurred
    assert ndcg10("ug_nw", data, test, side) > ndcg10("noug_nw", data, test, side) + 0.1
    assert ndcg10("ug_nonw", data, test, side) > ndcg10("noug_nonw", data, test, side) + 0.1


def test_user_history_routes_help_users_with_habits(clear):
    data, test, side = clear
    plain = ndcg10("ug_nw", data, test, side)
    assert ndcg10("ug_nw", data, test, side, user_restart=0.3) > plain + 0.05
    assert ndcg10("ug_nw", data, test, side, own_image_bonus=0.3) > plain + 0.05
    assert ndcg10("personal_knn", data, test, side) > ndcg10("personal_knn", data, test, side, history_weight=0.0) + 0.05


def test_cold_start_user_gets_the_non_personal_scores(clear):
    data, test, side = clear
    cold = with_cold_user(test, row=0)
    plain = get_recommender("ug_nw")().fit(data)
    personal = get_recommender("ug_nw")(user_restart=0.3, own_image_bonus=0.3).fit(data)
    # Without personal terms the user does not matter at all.
    np.testing.assert_array_equal(plain.score(cold, side), plain.score(test, side))
    # With them, a cold-start user gets exactly the non-personal ranking.
    np.testing.assert_allclose(personal.score(cold, side)[0], plain.score(cold, side)[0], rtol=1e-6)
    assert not np.allclose(personal.score(test, side)[0], plain.score(test, side)[0])


def test_feature_name_is_a_config_field(clear):
    data, test, side = clear
    cnn_side = SideInfo(features={"cnn": side.feature("vlad")}, image_groups=side.image_groups)
    cnn_data = TrainingData(train=data.train, side=cnn_side)
    for name in ["ug_nw", "knn_voting", "personal_knn"]:
        on_cnn = get_recommender(name)(feature="cnn").fit(cnn_data).score(test, cnn_side)
        on_vlad = get_recommender(name)().fit(data).score(test, side)
        np.testing.assert_array_equal(on_cnn, on_vlad)
    with pytest.raises(KeyError, match="vlad"):
        get_recommender("ug_nw")().fit(cnn_data)


def test_noug_needs_no_groups_and_ug_says_it_does(clear):
    data, test, side = clear
    bare = SideInfo(features={"vlad": side.feature("vlad")})
    bare_data = TrainingData(train=data.train, side=bare)
    get_recommender("noug_nw")().fit(bare_data).score(test, bare)
    get_recommender("knn_voting")().fit(bare_data).score(test, bare)
    with pytest.raises(KeyError, match="group"):
        get_recommender("ug_nw")().fit(bare_data)


def test_a_training_image_is_not_its_own_neighbour(clear):
    data, _, side = clear
    model = get_recommender("ug_nw")().fit(data)
    found = model.neighbours(data.train, side)
    assert not (model.memory.image_ids[found.index] == data.train.image[:, None]).any()
    leaky = get_recommender("ug_nw")(exclude_same_image=False).fit(data)
    assert (leaky.memory.image_ids[leaky.neighbours(data.train, side).index[:, 0]] == data.train.image).all()


def test_backends_give_the_same_scores(clear):
    data, test, side = clear
    dense = get_recommender("ug_nw")(backend="dense", own_image_bonus=0.2).fit(data).score(test, side)
    for backend in ["blocked", "index"] + (["faiss"] if faiss_available() else []):
        other = get_recommender("ug_nw")(backend=backend, own_image_bonus=0.2).fit(data).score(test, side)
        np.testing.assert_allclose(other, dense, rtol=1e-6)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="lam"):
        get_recommender("ug_nw")(lam=1.2)
    with pytest.raises(ValueError, match="user_restart"):
        get_recommender("ug_nw")(user_restart=1.0)
    with pytest.raises(ValueError, match="k must"):
        get_recommender("knn_voting")(k=0)
    with pytest.raises(ValueError, match="history_weight"):
        get_recommender("personal_knn")(history_weight=2.0)


def hand_data(with_query_user: int = 2):
    """Training images with 1-d codes 0, 1, 2, 10 posted by users 0, 1, 1, 2 with tags
    {t0}, {t0, t1}, {t1}, {t2}; query images with codes 0.9 and 1.6 (images 4 and 5)."""
    codes = np.array([[0.0], [1.0], [2.0], [10.0], [0.9], [1.6]], dtype=np.float32)
    train_tags = sparse.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    train = Posts(user=np.array([0, 1, 1, 2]), image=np.arange(4), tags=train_tags, n_users=3, n_images=6)
    query = Posts(
        user=np.array([with_query_user, with_query_user]),
        image=np.array([4, 5]),
        tags=sparse.csr_matrix(np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)),
        n_users=3,
        n_images=6,
    )
    side = SideInfo(features={"vlad": codes})
    return TrainingData(train=train, side=side), query, side


def test_knn_voting_by_hand():
    """Query 0.9: distances 0.9, 0.1, 1.1, 9.1 -> k = 2 neighbours: image 1 (user 1), image 0
    (user 0). Votes t0: 2, t1: 1, t2: 0; prior k |L_t| / |L| = 2 * (2, 2, 1) / 4 = 1, 1, 0.5;
    relevance 1, 0, -0.5.
    Query 1.6: distances 1.6, 0.6, 0.4, 8.4 -> images 2 (user 1), 1 (user 1), 0 (user 0).
    One image per user: images 2 and 0, votes t0: 1, t1: 1 -> 0, 0, -0.5; without the rule:
    images 2 and 1, votes t0: 1, t1: 2 -> 0, 1, -0.5."""
    data, query, side = hand_data()
    knn = get_recommender("knn_voting")(k=2).fit(data)
    np.testing.assert_allclose(knn.score(query, side), [[1.0, 0.0, -0.5], [0.0, 0.0, -0.5]])
    loose = get_recommender("knn_voting")(k=2, distinct_owners=False).fit(data)
    np.testing.assert_allclose(loose.score(query, side)[1], [0.0, 1.0, -0.5])


def test_personal_knn_by_hand():
    """Query 0.9, no groups: d_min 0.1, d_max 9.1, so image 1 has s = 1 and image 0
    s = 1 - 0.8 / 9 = 41/45. Weights (sum) 45/86, 41/86. Votes t0 = 1, t1 = 45/86, t2 = 0,
    normalised V = (86, 45, 0) / 131. User 2's history: always t2, H = (0, 0, 1).
    alpha 0.5: (43/131, 22.5/131, 0.5). A cold-start user gets V alone, and t2 (no evidence)
    falls back below the others: popularity 1 / (2 + 1) - 1."""
    data, query, side = hand_data()
    model = get_recommender("personal_knn")(k=2, use_groups=False, history_weight=0.5).fit(data)
    np.testing.assert_allclose(model.score(query, side)[0], [43 / 131, 22.5 / 131, 0.5], rtol=1e-6)
    data, cold_query, side = hand_data(with_query_user=-1)
    cold = get_recommender("personal_knn")(k=2, use_groups=False, history_weight=0.5).fit(data)
    np.testing.assert_allclose(cold.score(cold_query, side)[0], [86 / 131, 45 / 131, 1 / 3 - 1], rtol=1e-6)


def test_a_saved_model_keeps_row_ids_not_the_training_features(clear, tmp_path):
    data, test, side = clear
    model = get_recommender("ug_nw")().fit(data)
    expected = model.score(test, side)
    features = side.feature("vlad")
    path = model.save(tmp_path / "ug_nw.model")
    rows = features[np.unique(data.train.image)]
    index = model.memory.index
    assert len(pickle.dumps(index)) - len(pickle.dumps(index.detached())) >= rows.nbytes
    loaded = get_recommender("ug_nw").load(path)
    assert not loaded.memory.index.has_features  # given back from SideInfo on first use
    np.testing.assert_array_equal(loaded.score(test, side), expected)
    warm = get_recommender("ug_nw").load(path).prepare(side)  # or ahead of time
    assert warm.memory.index.has_features
    np.testing.assert_array_equal(warm.score(test, side), expected)
    changed = SideInfo(features={"vlad": features * 1.5}, image_groups=side.image_groups)
    with pytest.raises(ValueError, match="rematerialised after the model"):
        get_recommender("ug_nw").load(path).score(test, changed)
