"""Guards the one contract every registered recommender must keep (DESIGN.md, "Layers"):
fit returns self, scores have shape [n_posts, n_tags] and are finite, a save/load round trip
gives identical scores, two fits with the same seed give identical scores, and a user never
seen in training (index -1) still gets scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData
from tagrec_models.recommenders import available, get_recommender

N_USERS, N_IMAGES, N_TAGS, N_GROUPS, PATCH = 8, 36, 12, 4, 75
FEATURE_DIMS = {"ch64": 64, "cm225": 225, "cnn": 1280, "cnn_stages": 1472, "vlad": 256, "cnn_finetuned": 1472}
SIGNED = {"cnn_stages", "cnn_finetuned"}  # the multi-stage embeddings have negative entries, as extracted


def contract_data() -> tuple[TrainingData, Posts, SideInfo]:
    """Users with distinct tag vocabularies and images whose features carry their tags."""
    rng = np.random.default_rng(7)
    image_tags = []
    for image in range(N_IMAGES):
        topic = image % 4
        tags = {3 * topic, 3 * topic + 1} | ({3 * topic + 2} if image % 3 == 0 else set())
        image_tags.append(sorted(tags))
    features = {}
    for name, dim in FEATURE_DIMS.items():
        base = rng.normal(size=(4, dim)).astype(np.float32)
        noise = 0.1 * rng.normal(size=(N_IMAGES, dim)).astype(np.float32)
        values = base[np.arange(N_IMAGES) % 4] + noise
        features[name] = (values if name in SIGNED else np.abs(values)).astype(np.float32)
    patches = rng.integers(0, 256, size=(N_IMAGES, 3, PATCH, PATCH, 3), dtype=np.uint8)
    groups = sparse.csr_matrix(
        (np.ones(N_IMAGES, dtype=np.float32), (np.arange(N_IMAGES), np.arange(N_IMAGES) % 4)),
        shape=(N_IMAGES, N_GROUPS),
    )
    side = SideInfo(features=features, patches=patches, image_groups=groups)

    def posts(images: list[int], users: list[int]) -> Posts:
        rows = [r for r, i in enumerate(images) for _ in image_tags[i]]
        cols = [t for i in images for t in image_tags[i]]
        matrix = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(images), N_TAGS)
        )
        return Posts(
            user=np.array(users, dtype=np.int64),
            image=np.array(images, dtype=np.int64),
            tags=matrix,
            n_users=N_USERS,
            n_images=N_IMAGES,
        )

    train_images = list(range(28))
    test_images = list(range(28, N_IMAGES))
    train = posts(train_images, [i % N_USERS for i in train_images])
    test_users = [i % N_USERS for i in test_images]
    test_users[-1] = UNKNOWN_USER
    test = posts(test_images, test_users)
    return TrainingData(train=train, side=side, val=test.subset(np.arange(4))), test, side


def small_config(model_cls):
    """The model's defaults, shrunk where it declares a ``contract_overrides`` for speed."""
    overrides = getattr(model_cls, "contract_overrides", {})
    return model_cls.Config(**{**model_cls.Config().__dict__, **overrides, "seed": 3})


MODELS = available()


def test_at_least_one_model_is_registered():
    assert MODELS, "no recommender is registered"


@pytest.mark.parametrize("name", MODELS)
def test_recommender_contract(name, tmp_path):
    model_cls = get_recommender(name)
    data, test, side = contract_data()

    model = model_cls(small_config(model_cls))
    assert model.fit(data) is model

    scores = model.score(test, side)
    assert scores.shape == (test.n_posts, N_TAGS)
    assert scores.dtype == np.float32
    assert np.isfinite(scores).all()

    path = model.save(tmp_path / f"{name}.model")
    reloaded = model_cls.load(path)
    np.testing.assert_array_equal(reloaded.score(test, side), scores)

    again = model_cls(small_config(model_cls)).fit(data)
    np.testing.assert_allclose(again.score(test, side), scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_scoring_before_fit_is_an_error(name):
    model_cls = get_recommender(name)
    _, test, side = contract_data()
    with pytest.raises(RuntimeError, match="fitted"):
        model_cls(small_config(model_cls)).score(test, side)
