"""Guards the one tuning engine (issue 16, DESIGN.md "Evaluation protocol"): every registered
model declares a search space; tuning is seeded, starts from the defaults and marks exactly one
chosen setting per metric family; no test post, label or image reaches it (the leak check);
the final fit is refit on train + validation with the best epoch count; the per-label columns
are scored at the per-label operating point."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k, per_label_metrics
from tagrec_models.experiment import evaluate_parts, train_and_validation, train_model
from tagrec_models.bundle import SplitBundle
from tagrec_models.recommenders import available, get_recommender
from tagrec_models.recommenders.base import Recommender
from tagrec_models.recommenders.registry import all_recommenders, load_model
from tagrec_models.studies.tuning import FAMILIES, PER_IMAGE, PER_LABEL, tune
from test_recommender_contract import contract_data, small_config

VAL_IMAGES, TEST_IMAGES = np.arange(28, 32), np.arange(32, 36)


def split() -> tuple[TrainingData, Posts]:
    """The contract fixture with disjoint validation (images 28-31) and test (32-35) parts."""
    data, held_out, side = contract_data()
    val = held_out.subset(np.flatnonzero(np.isin(held_out.image, VAL_IMAGES)))
    test = held_out.subset(np.flatnonzero(np.isin(held_out.image, TEST_IMAGES)))
    return TrainingData(train=data.train, side=side, val=val), test


def poisoned(data: TrainingData, test: Posts) -> tuple[TrainingData, Posts]:
    """The same split with every test image's side information and every test label replaced:
    random features, patches and groups for the test images, random tags for the test posts."""
    rng = np.random.default_rng(99)
    side = data.side
    features = {}
    for name, array in side.features.items():
        changed = array.copy()
        changed[TEST_IMAGES] = np.abs(rng.normal(size=changed[TEST_IMAGES].shape)).astype(array.dtype)
        features[name] = changed
    patches = side.patches.copy()
    patches[TEST_IMAGES] = rng.integers(0, 256, size=patches[TEST_IMAGES].shape, dtype=patches.dtype)
    groups = side.image_groups.tolil()
    groups[TEST_IMAGES] = 0
    groups[TEST_IMAGES, 0] = 1
    tags = test.tags.tolil()
    tags[:, :] = 0
    tags[:, 0] = 1
    bad_test = dataclasses.replace(test, tags=tags.tocsr())
    return TrainingData(train=data.train, side=SideInfo(features=features, patches=patches,
                                                          image_groups=groups.tocsr()), val=data.val), bad_test


def declares_search_space(model: type[Recommender]) -> bool:
    return any("search_space" in vars(cls) for cls in model.__mro__ if cls is not Recommender)


@pytest.mark.parametrize("model", all_recommenders(), ids=lambda m: m.name)
def test_every_registered_model_declares_its_search_space(model):
    assert declares_search_space(model), f"{model.name} must declare search_space next to its Config"
    tunable = {f.name for f in dataclasses.fields(model.Config)} - {"seed"}
    # Only a model with no hyper-parameter at all (MP) may search nothing.
    assert model.search_space or not tunable, f"{model.name} has hyper-parameters but an empty search_space"


def test_tuning_is_seeded_starts_from_the_defaults_and_chooses_one_setting_per_family():
    data, _ = split()
    model = get_recommender("two_pknn")
    first = tune(model, small_config(model), data, n_trials=4, retune_trials=6, seed=5)
    again = tune(model, small_config(model), data, n_trials=4, retune_trials=6, seed=5)
    pd.testing.assert_frame_equal(first.trials.drop(columns="fit_seconds"), again.trials.drop(columns="fit_seconds"))
    trials = first.trials
    fit0 = json.loads(trials[(trials["stage"] == "fit") & (trials["trial"] == 0)]["params"].iloc[0])
    assert fit0 == {name: getattr(small_config(model), name) for name in model.search_space}
    chosen = trials[trials["chosen"]]
    assert sorted(chosen["family"]) == [PER_IMAGE, PER_LABEL]
    for family, metric in ((PER_IMAGE, "f1@5"), (PER_LABEL, "label_f1@5")):
        rows = trials[trials["family"] == family]
        assert set(rows["metric"]) == {metric}
        assert chosen[chosen["family"] == family]["value"].iloc[0] == pytest.approx(first.validation[family])
    # The per-label operating point re-scores the chosen fit: its value is what that setting gives.
    refit = model(dataclasses.replace(first.config, **first.operating_points[PER_LABEL])).fit(data)
    scores = refit.score(data.val, data.side)
    assert per_label_metrics(scores, data.val.tags, k=5).f1 == pytest.approx(first.validation[PER_LABEL])


def counted_retunes(monkeypatch, cls) -> list[dict]:
    """Record every re-scoring the operating-point stage asks a ``cls`` fit for."""
    calls: list[dict] = []
    real = cls.retune

    def retune(self, **values):
        calls.append(values)
        return real(self, **values)

    monkeypatch.setattr(cls, "retune", retune)
    return calls


def test_a_scoring_grid_within_the_budget_is_searched_exhaustively(monkeypatch):
    """Every point of a small scoring grid is re-scored once, both families read each
    re-scoring, and each family's choice is the grid's best (worked out here independently)."""
    data, _ = split()
    model = get_recommender("two_pknn")
    space = {"k1": [2, 3, 5, 10], "beta": [1.0, 10.0, 20.0], "rare_power": [0.0, 0.5, 1.0]}  # 36 points
    calls = counted_retunes(monkeypatch, model)
    result = tune(model, small_config(model), data, n_trials=1, retune_trials=36, seed=0, space=space)
    assert len(calls) == 36
    assert len({json.dumps(c, sort_keys=True) for c in calls}) == 36
    fit = model(small_config(model)).fit(data)
    best = {PER_IMAGE: -1.0, PER_LABEL: -1.0}
    for k1, beta, power in itertools.product(*space.values()):
        scores = fit.retune(k1=k1, beta=beta, rare_power=power).score(data.val, data.side)
        best[PER_IMAGE] = max(best[PER_IMAGE], metrics_at_k(scores, data.val.tags, k_max=5).f1[4])
        best[PER_LABEL] = max(best[PER_LABEL], per_label_metrics(scores, data.val.tags, k=5).f1)
    for family in FAMILIES:
        assert result.validation[family] == pytest.approx(best[family])
        rows = result.trials[(result.trials["family"] == family) & (result.trials["stage"] == "operating_point")]
        assert len(rows) == 36
        # Row 0 is the chosen fit as it is (the defaults, which lie in this grid).
        assert json.loads(rows["params"].iloc[0]) == {n: getattr(small_config(model), n) for n in space}


def test_a_larger_scoring_grid_gets_tpe_draws_and_scores_no_point_twice(monkeypatch):
    data, _ = split()
    model = get_recommender("two_pknn")
    space = {"k1": [1, 2, 3, 5], "beta": [1.0, 5.0, 20.0], "rare_power": [0.0, 0.5, 1.0]}
    calls = counted_retunes(monkeypatch, model)
    result = tune(model, small_config(model), data, n_trials=1, retune_trials=10, seed=0, space=space)
    points = result.trials[result.trials["stage"] == "operating_point"]
    assert (points.groupby("family").size() == 10).all()
    assert len(calls) == points["params"].nunique() < 20  # both families start from the same point
    assert len({json.dumps(c, sort_keys=True) for c in calls}) == len(calls)


@pytest.mark.parametrize("name", available())
def test_no_test_post_label_or_image_reaches_tuning(name):
    """The leak check: tuning on a split whose test part (its images' features, patches and
    groups, and its labels) is poisoned gives identical trials and identical choices."""
    data, test = split()
    model = get_recommender(name)
    bad_data, _ = poisoned(data, test)
    clean = tune(model, small_config(model), data, n_trials=2, retune_trials=2, seed=1)
    dirty = tune(model, small_config(model), bad_data, n_trials=2, retune_trials=2, seed=1)
    columns = ["family", "stage", "trial", "params", "metric", "value", "state", "chosen", "best_epoch"]
    pd.testing.assert_frame_equal(clean.trials[columns], dirty.trials[columns])
    assert clean.config == dirty.config and clean.operating_points == dirty.operating_points


def test_train_model_refits_on_train_and_validation_for_the_best_epoch_count(tmp_path):
    data, _ = split()
    overrides = {**get_recommender("pitf").contract_overrides, "max_epochs": 4, "patience": 2}
    trained = train_model("pitf", "fixture", data, tmp_path, seeds=(0,), n_trials=2, overrides=overrides)
    assert trained.final_fit == "train+val"
    chosen = [row for row in trained.validation if row["chosen"] and row["family"] == PER_IMAGE][0]
    assert trained.config["max_epochs"] == chosen["best_epoch"] and trained.config["patience"] == 0
    fit = load_model(trained.model_paths[0])
    assert len(fit.training_history) == chosen["best_epoch"]
    # The refit knows the validation images (PITF learns a factor per training image)...
    if trained.config["image_factors"]:
        assert fit.network.seen_image[VAL_IMAGES].all()
    # ... and the train-only protocol is one setting away.
    train_only = train_model("pitf", "fixture", data, tmp_path / "t", seeds=(0,), n_trials=2,
                             overrides=overrides, final_fit="train")
    assert train_only.final_fit == "train"
    assert not load_model(train_only.model_paths[0]).network.seen_image[VAL_IMAGES].any()


def test_dcca_refits_for_the_epoch_of_its_best_held_out_correlation(tmp_path):
    """DCCA declares its epoch budget (``dcca_epochs``) like the torch models declare
    ``max_epochs``: the refit trains for the chosen trial's best epoch, with no early stop."""
    data, _ = split()
    overrides = {**get_recommender("dcca").contract_overrides, "dcca_epochs": 8, "patience": 2}
    trained = train_model("dcca", "fixture", data, tmp_path, seeds=(0,), n_trials=2, retune_trials=0,
                          overrides=overrides)
    chosen = [row for row in trained.validation if row["chosen"] and row["family"] == PER_IMAGE][0]
    assert chosen["best_epoch"] is not None and 1 <= chosen["best_epoch"] <= 8
    assert trained.config["dcca_epochs"] == chosen["best_epoch"] and trained.config["patience"] == 0
    fit = load_model(trained.model_paths[0])
    assert fit.best_epoch() is None  # the refit saw no validation posts ...
    assert len(fit.dcca.history) == chosen["best_epoch"]  # ... and trained the chosen epochs


def test_train_and_validation_appends_the_validation_posts():
    data, _ = split()
    merged = train_and_validation(data)
    assert merged.val is None
    assert merged.train.n_posts == data.train.n_posts + data.val.n_posts
    assert (merged.train.tags[data.train.n_posts:] != data.val.tags).nnz == 0


def test_per_label_columns_are_scored_at_the_per_label_operating_point(tmp_path):
    data, test = split()
    trained = train_model("two_pknn", "fixture", data, tmp_path, seeds=(0,), n_trials=3, retune_trials=8,
                          tuning_seed=2)
    bundle = SplitBundle(vocab=None, train=data.train, val=data.val, test=test)
    runs = evaluate_parts(trained, bundle, data.side, {"test": ("all",)})["test"]
    fit = load_model(trained.model_paths[0])
    label_scores = fit.retune(**trained.operating_points[PER_LABEL]).score(test, data.side)
    assert runs["label_f1"].iloc[0] == pytest.approx(per_label_metrics(label_scores, test.tags, k=5).f1)


def test_declared_probes_follow_the_defaults_within_the_budget():
    """PITF's hypothesis trial (no image factors) is trial 1 of every tuning run."""
    data, _ = split()
    model = get_recommender("pitf")
    config = model.Config(max_epochs=3, patience=0, torch_threads=1)  # defaults inside the space
    result = tune(model, config, data, n_trials=2, seed=0)
    fits = result.trials[(result.trials["family"] == PER_IMAGE) & (result.trials["stage"] == "fit")]
    first, second = (json.loads(p) for p in fits["params"])
    assert first["image_factors"] is True and second == {**first, "image_factors": False}


@pytest.mark.parametrize("name", ["two_pknn", "tagprop", "cca"])
def test_retuned_copies_reuse_what_scoring_derives_from_the_fit(name):
    """Re-scoring the same posts at other scoring-field values computes the fit-only part
    (distances, probabilities, projections) once, and gives exactly what a fresh scoring gives."""
    data, _ = split()
    cls = get_recommender(name)
    fit = cls(small_config(cls)).fit(data)
    field = "rare_power"
    calls = []
    real = fit.remembered

    def counting(what, side, images, compute):
        def tracked():
            calls.append(what)
            return compute()
        return real(what, side, images, tracked)

    fit.remembered = counting  # instance attribute: retune copies share it (shallow copies)
    first = fit.retune(**{field: 0.5}).score(data.val, data.side)
    second = fit.retune(**{field: 0.0}).score(data.val, data.side)
    again = fit.retune(**{field: 0.5}).score(data.val, data.side)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, again)
    fresh = cls(small_config(cls)).fit(data).retune(**{field: 0.0}).score(data.val, data.side)
    np.testing.assert_allclose(second, fresh, rtol=1e-12, atol=0)
    fit.fit(data)  # a refit forgets what the old fit derived
    fit.retune(**{field: 0.5}).score(data.val, data.side)
    assert len(calls) == 2


def test_per_post_records_recompute_the_runs_columns(tmp_path):
    """Issue 12: the per-post values and predicted tag sets kept for the intervals give back the
    table's numbers (mean P@5 / R@5 of the posts, per-label F1 and N+ from the tag sets)."""
    from tagrec_models.evaluation import significance as sig
    from tagrec_models.experiment import evaluate_with_posts, held_out_truth

    data, test = split()
    trained = train_model("two_pknn", "fixture", data, tmp_path, seeds=(0, 1), n_trials=2, retune_trials=4)
    bundle = SplitBundle(vocab=None, train=data.train, val=data.val, test=test)
    runs, records = evaluate_with_posts(trained, bundle, data.side, {"test": ("all",)})
    at5 = runs["test"][runs["test"]["k"] == 5].set_index("seed")
    per_post = records.per_post.assign(split=0)
    assert len(per_post[per_post["metric"] == "f1@5"]) == 2 * test.n_posts
    for seed in (0, 1):
        rows = per_post[per_post["seed"] == seed]
        assert rows[rows["metric"] == "p@5"]["value"].mean() == pytest.approx(at5.loc[seed, "precision"])
        assert rows[rows["metric"] == "r@5"]["value"].mean() == pytest.approx(at5.loc[seed, "recall"])
    f1 = sig.post_values(per_post, "f1@5")["two_pknn"][0]
    assert sig.bootstrap_interval(f1, sig.f1_statistic, 50).estimate == pytest.approx(at5["f1"].mean())
    labels = sig.label_values(records.predictions.assign(split=0), held_out_truth(bundle).assign(split=0))
    means = labels["two_pknn"][0].mean(axis=1)  # [n_seeds, 3 L]
    np.testing.assert_allclose(sig.per_label_statistic(means), at5["label_f1"].to_numpy())
    np.testing.assert_allclose(sig.n_plus_statistic(means), at5["n_plus"].to_numpy())


def _other_scoring_point(model: type[Recommender], config) -> dict:
    """For each scoring field the search space offers, a value other than ``config``'s."""
    point = {}
    for name, values in model.search_space.items():
        if name in model.scoring_fields:
            others = [v for v in values if json.dumps(v) != json.dumps(getattr(config, name))]
            if others:
                point[name] = others[0]  # the smallest: a neighbourhood below the fixture's label sizes
    return point


@pytest.mark.parametrize("model", [m for m in all_recommenders() if set(m.search_space) & m.scoring_fields],
                         ids=lambda m: m.name)
def test_scoring_fields_change_scoring_only(model):
    """What the operating-point stage relies on: a fit re-scored at other scoring-field values
    gives what a fresh fit at those values gives (a field the fit reads is not scoring-only:
    2PKNN+ML's metric is learnt in k1-neighbourhoods, so its k1 needs a refit)."""
    data, _ = split()
    config = small_config(model)
    point = _other_scoring_point(model, config)
    retuned = model(config).fit(data).retune(**point).score(data.val, data.side)
    fresh = model(dataclasses.replace(config, **point)).fit(data).score(data.val, data.side)
    np.testing.assert_allclose(retuned, fresh, rtol=1e-5, atol=1e-7)
