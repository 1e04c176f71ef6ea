"""Guards that the paper-1 models learn: on a fixture whose signal is known (every user has a
private vocabulary, every image's features and patches carry its topic's content tags), PITF and
FM lower their training loss and beat MP on validation, every model beats a random ranking,
and the personalised content models beat both the history-only and the content-only ones."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import harmonic, metrics_at_k
from tagrec_models.recommenders import get_recommender

N_USERS, N_TOPICS, PATCH = 5, 4, 50
N_CONTENT = 3 * N_TOPICS  # topic k owns content tags 3k, 3k+1, 3k+2
N_TAGS = N_CONTENT + 2 * N_USERS  # user u owns personal tags N_CONTENT + 2u, +1
PER_USER = {"train": 24, "val": 6, "test": 6}

# Small but real training budgets (the defaults train longer; these keep the suite fast), on
# one CPU thread so that the test does not oversubscribe a shared machine.
BUDGET = {
    "pitf": {"max_epochs": 40, "patience": 5, "torch_threads": 1},
    "fm": {"max_epochs": 40, "patience": 5, "torch_threads": 1},
    "ch_bpmll": {"max_epochs": 30, "patience": 5, "torch_threads": 1},
    "cm55_bpmll": {"max_epochs": 30, "patience": 5, "torch_threads": 1},
    "ch_permlp": {"max_epochs": 30, "patience": 5, "torch_threads": 1},
    "cm55_permlp": {"max_epochs": 30, "patience": 5, "torch_threads": 1},
    "pt_permlp": {"max_epochs": 30, "patience": 5, "torch_threads": 1},
    "cnn": {"max_epochs": 15, "patience": 4, "torch_threads": 1},
    "cnn_permlp": {"max_epochs": 15, "patience": 4, "torch_threads": 1},
}
ALL_MODELS = ["mp", "mp_u", *BUDGET]


def known_signal(seed: int = 0) -> tuple[TrainingData, Posts, SideInfo]:
    """Each post: 2 of its image topic's 3 content tags and 1-2 of its user's 2 personal tags.
    Every post has its own image, so validation and test images are all new."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {name: [] for name in PER_USER}
    topics = []
    for part, per_user in PER_USER.items():
        for user in range(N_USERS):
            for _ in range(per_user):
                topic = int(rng.integers(N_TOPICS))
                tags = set(rng.choice(3, size=2, replace=False) + 3 * topic)
                personal = N_CONTENT + 2 * user + rng.choice(2, size=int(rng.integers(1, 3)), replace=False)
                parts[part].append((user, len(topics), sorted(tags | set(personal))))
                topics.append(topic)
    topics = np.array(topics)
    n_images = len(topics)
    features = {}
    for name, dim in {"ch64": 64, "cm225": 225, "cnn": 1280}.items():
        centre = rng.normal(size=(N_TOPICS, dim))
        features[name] = (centre[topics] + 0.5 * rng.normal(size=(n_images, dim))).astype(np.float32)
    colours = rng.integers(40, 216, size=(N_TOPICS, 3))
    pixels = colours[topics][:, None, None, None, :] + rng.normal(0, 25, (n_images, 3, PATCH, PATCH, 3))
    side = SideInfo(features=features, patches=np.clip(pixels, 0, 255).astype(np.uint8))

    def build(rows) -> Posts:
        r = [p for p, (_, _, tags) in enumerate(rows) for _ in tags]
        c = [t for _, _, tags in rows for t in tags]
        matrix = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), N_TAGS))
        return Posts(
            user=np.array([u for u, _, _ in rows]),
            image=np.array([i for _, i, _ in rows]),
            tags=matrix,
            n_users=N_USERS,
            n_images=n_images,
        )

    data = TrainingData(train=build(parts["train"]), side=side, val=build(parts["val"]))
    return data, build(parts["test"]), side


def random_f1_at_5(posts: Posts) -> float:
    """Expected F1@5 of a uniformly random ranking: E[hits@5] = 5 |T_p| / n_tags, so
    Prec@5 = mean |T_p| / n_tags and Recall@5 = 5 / n_tags."""
    sizes = np.asarray(posts.tags.sum(axis=1)).ravel()
    return float(harmonic(sizes.mean() / N_TAGS, 5 / N_TAGS))


@pytest.fixture(scope="module")
def fixture():
    return known_signal()


@pytest.fixture(scope="module")
def fitted(fixture):
    data, test, side = fixture
    models, f1 = {}, {}
    for name in ALL_MODELS:
        model = get_recommender(name)(seed=0, **BUDGET.get(name, {})).fit(data)
        models[name] = model
        f1[name] = float(metrics_at_k(model.score(test, side), test.tags, k_max=5).f1[4])
    return models, f1


@pytest.mark.parametrize("name", ["pitf", "fm"])
def test_factorisation_models_learn_the_users_vocabularies(fixture, fitted, name):
    data, _, side = fixture
    models, _ = fitted
    history = models[name].training_history
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    mp_val = metrics_at_k(models["mp"].score(data.val, side), data.val.tags, k_max=5).f1[4]
    best_val = max(record["val_f1@5"] for record in history)
    # The validation images are new: only the user factors can carry the signal.
    assert best_val > mp_val + 0.15
    assert best_val > history[0]["val_f1@5"]


# MP ignores both the user and the image, so it cannot use this fixture's signal (its F1@5 is
# about that of a random ranking here); every other model must clear a random ranking.
@pytest.mark.parametrize("name", [name for name in ALL_MODELS if name != "mp"])
def test_every_model_beats_a_random_ranking(fixture, fitted, name):
    _, test, _ = fixture
    _, f1 = fitted
    baseline = random_f1_at_5(test)
    assert f1[name] > baseline + 0.1, f"{name}: F1@5 {f1[name]:.3f} vs random {baseline:.3f}"
    assert f1[name] > f1["mp"] + 0.1


@pytest.mark.parametrize("name", ["ch_permlp", "pt_permlp", "cnn_permlp"])
def test_personalised_content_models_use_both_user_and_image(fitted, name):
    _, f1 = fitted
    history_only = max(f1["mp_u"], f1["pitf"], f1["fm"])
    content_only = max(f1["ch_bpmll"], f1["cm55_bpmll"], f1["cnn"])
    assert f1[name] > history_only + 0.1
    assert f1[name] > content_only + 0.1


def test_validation_history_drives_early_stopping(fitted):
    models, _ = fitted
    history = models["pt_permlp"].training_history
    assert all("val_f1@5" in record for record in history)
    # Stopped early (patience 5 of 30 epochs) or ran out; either way the record is complete.
    assert [record["epoch"] for record in history] == list(range(1, len(history) + 1))
