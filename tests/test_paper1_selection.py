"""Guards model selection and evaluation (paper 1, section 4): the all / new-images test
scenarios, tuning on validation only, and multi-seed summaries, against values worked out
by hand with MP-u on a tiny fixture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.evaluation.scenarios import metric_value, new_image_mask, parse_metric, scenario_posts
from tagrec_models.studies.selection import (
    evaluate,
    evaluate_scenarios,
    multi_seed,
    run_seeds,
)
from tagrec_models.recommenders import get_recommender
from tagrec_models.studies.tuning import tune

N_USERS, N_TAGS, N_IMAGES = 3, 4, 12

# Same training posts as tests/test_paper1_counts.py; MP-u's scores (with its tie-break) are
#   u0 [9, 6, 4, 1] -> ranking 0, 1, 2, 3     u1 [1, 10, 0, 5] -> ranking 1, 3, 0, 2
#   u2 [1, 2, 0, 5] -> ranking 3, 1, 0, 2     cold start [2, 3, 1, 2] -> ranking 1, 0, 3, 2
# and without the tie-break u2 ranks 3, 0, 1, 2.
TRAIN = [(0, 0, [0, 1]), (0, 1, [0]), (0, 2, [2]), (1, 3, [1]), (1, 4, [1, 3]), (2, 5, [3])]
VAL = [(2, 8, [1]), (0, 9, [0])]
# post 0 re-uses training image 0; posts 1 and 2 have new images.
TEST = [(0, 0, [1]), (1, 6, [0]), (UNKNOWN_USER, 7, [1])]


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
    return TrainingData(train=posts(TRAIN), val=posts(VAL))


MP_U = get_recommender("mp_u")


def test_new_images_are_those_of_no_training_post(data):
    test = posts(TEST)
    np.testing.assert_array_equal(new_image_mask(test, data.train), [False, True, True])
    assert scenario_posts(test, data.train, "new_images").image.tolist() == [6, 7]
    assert scenario_posts(test, data.train, "all") is test
    with pytest.raises(ValueError, match="scenario"):
        scenario_posts(test, data.train, "old_images")


def test_evaluate_scenarios_by_hand(data):
    model = MP_U().fit(data)
    test = posts(TEST)
    results = evaluate_scenarios(model, test, data.train, k_max=3)
    # ranks of the true tag: post 0 -> 2nd, post 1 -> 3rd, post 2 -> 1st
    # all, K=1: hits 0, 0, 1 -> P = R = 1/3 -> F1 1/3
    assert results["all"].f1[0] == pytest.approx(1 / 3)
    assert results["all"].n_posts == 3
    # new images (posts 1, 2), K=1: hits 0, 1 -> P = R = .5; K=3: hits 1, 1 -> P 1/3, R 1 -> F1 .5
    assert results["new_images"].f1[0] == pytest.approx(0.5)
    assert results["new_images"].f1[2] == pytest.approx(0.5)
    assert results["new_images"].n_posts == 2
    # evaluate is metrics_at_k of the model's scores
    direct = metrics_at_k(model.score(test), test.tags, k_max=3)
    np.testing.assert_array_equal(evaluate(model, test, k_max=3).f1, direct.f1)


def test_a_scenario_without_posts_is_reported_as_none(data):
    model = MP_U().fit(data)
    only_seen = posts(TEST[:1])
    results = evaluate_scenarios(model, only_seen, data.train, k_max=2)
    assert results["new_images"] is None
    assert results["all"] is not None


def test_metric_names():
    assert parse_metric("f1@5") == ("f1", 5)
    assert parse_metric("P@3") == ("precision", 3)
    assert parse_metric("ndcg@10") == ("ndcg", 10)
    for bad in ("f1", "f1@0", "auc@5", "f1@x"):
        with pytest.raises(ValueError, match="NAME@K"):
            parse_metric(bad)


def test_tuning_picks_the_best_point_on_validation(data):
    # Validation: (u2, {1}) and (u0, {0}).
    # tie-break on:  u2 ranks 3, 1 -> hit at 2; u0 ranks 0 -> hit at 1
    #   P@2 = (.5 + .5)/2 = .5, R@2 = (1 + 1)/2 = 1 -> F1@2 = 2/3
    # tie-break off: u2 ranks 3, 0 -> no hit in 2; u0 as before
    #   P@2 = (0 + .5)/2 = .25, R@2 = (0 + 1)/2 = .5 -> F1@2 = 1/3
    result = tune(MP_U, MP_U.Config(tie_break_with_mp=False), data, n_trials=4, metric="f1@2")
    assert result.config == MP_U.Config(tie_break_with_mp=True)
    fits = result.trials[(result.trials["family"] == "per_image") & (result.trials["stage"] == "fit")]
    values = {row.params: row.value for row in fits.itertuples()}
    np.testing.assert_allclose([values['{"tie_break_with_mp": false}'], values['{"tie_break_with_mp": true}']],
                               [1 / 3, 2 / 3])
    assert fits["trial"].iloc[0] == 0 and fits["params"].iloc[0] == '{"tie_break_with_mp": false}'  # the defaults first
    assert fits["chosen"].sum() == 1


def test_tuning_never_runs_without_validation_and_checks_its_space(data):
    no_val = TrainingData(train=data.train)
    with pytest.raises(ValueError, match="validation"):
        tune(MP_U, MP_U.Config(), no_val, n_trials=1)
    with pytest.raises(ValueError, match="learning_rate"):
        tune(MP_U, MP_U.Config(), data, n_trials=1, space={"learning_rate": [0.1]})
    with pytest.raises(ValueError, match="no value"):
        tune(MP_U, MP_U.Config(), data, n_trials=1, space={"tie_break_with_mp": []})


def test_multi_seed_of_a_deterministic_model_has_zero_spread(data):
    test = posts(TEST)
    summary = multi_seed(MP_U, MP_U.Config(), data, test, seeds=(0, 1), k_max=3)
    assert set(summary["scenario"]) == {"all", "new_images"}
    assert (summary["n_seeds"] == 2).all()
    row = summary[(summary["scenario"] == "new_images") & (summary["k"] == 1)].iloc[0]
    assert row["f1_mean"] == pytest.approx(0.5)
    assert row["f1_std"] == 0.0
    assert row["n_posts"] == 2
    assert {"fit_seconds_mean", "fit_seconds_std", "precision_mean", "recall_std"} <= set(summary.columns)


def test_run_seeds_fits_once_per_seed_and_hands_each_model_over(data):
    test = posts(TEST)
    pitf = get_recommender("pitf")
    config = pitf.Config(dim=4, max_epochs=3, patience=0, torch_threads=1)
    kept = {}
    runs = run_seeds(
        pitf, config, data, test, seeds=(3, 4), k_max=2, on_fitted=lambda seed, m: kept.setdefault(seed, m)
    )
    assert sorted(kept) == [3, 4]
    assert [m.config.seed for m in kept.values()] == [3, 4]
    # different seeds -> different initialisations and samples -> different scores
    assert not np.allclose(kept[3].score(test), kept[4].score(test))
    assert len(runs) == 2 * 2 * 2  # seeds x scenarios x cutoffs
    assert (runs["fit_seconds"] > 0).all()
    first = runs[(runs["seed"] == 3) & (runs["scenario"] == "all")]["f1"].to_numpy()
    np.testing.assert_allclose(first, evaluate(kept[3], test, k_max=2).f1)
    assert metric_value(evaluate(kept[3], test, k_max=2), "f1@2") == pytest.approx(first[1])
    with pytest.raises(ValueError, match="seed"):
        run_seeds(pitf, config, data, test, seeds=())
    assert dataclasses.replace(config, seed=3) == kept[3].config
