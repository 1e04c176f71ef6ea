"""Guards Corel5k's thresholds protocol (issue 13, item 4): thresholds chosen per label on
validation, ties handled, the global threshold (a rule of its own and the fallback for labels with
too few validation images), the joint search of the global rule with a model's scoring fields,
and the per-label P / R / F1 / N+ of thresholded predictions, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.evaluation.thresholds import (choose_global_threshold, choose_thresholds,
                                                 thresholded_per_label_metrics)

SCORES = np.array([[0.9, 0.2], [0.8, 0.7], [0.3, 0.6], [0.1, 0.4]])
TRUTH = sparse.csr_matrix(np.array([[1, 0], [0, 1], [1, 0], [0, 0]]))


def test_each_label_gets_the_threshold_of_its_best_validation_f1():
    # label 0, images by score: T F T F -> F1 at 1..4 admitted: 2/3, 1/2, 4/5, 2/3 -> t = 0.3
    # label 1: its one positive has the top score -> F1 1 at t = 0.7
    chosen = choose_thresholds(SCORES, TRUTH, min_positives=1)
    np.testing.assert_allclose(chosen.values, [0.3, 0.7])
    assert chosen.per_label.tolist() == [True, True]


def test_thresholded_metrics_by_hand():
    # label 0 (>= 0.3): images 0, 1, 2 -> P 2/3, R 1; label 1 (>= 0.7): image 1 -> P 1, R 1
    # mean P 5/6, mean R 1 -> F1 10/11; labels per image (1 + 2 + 1 + 0) / 4 = 1
    result = thresholded_per_label_metrics(SCORES, TRUTH, np.array([0.3, 0.7]))
    assert result.precision == pytest.approx(5 / 6)
    assert result.recall == pytest.approx(1.0)
    assert result.f1 == pytest.approx(10 / 11)
    assert (result.n_plus, result.n_labels, result.labels_per_image) == (2, 2, 1.0)


def test_a_tied_score_admits_every_image_that_has_it():
    scores = np.array([[0.5], [0.5], [0.1]])
    truth = sparse.csr_matrix(np.array([[1], [0], [0]]))
    # admitting image 0 alone is impossible: t = 0.5 admits both -> F1 2 / 3, still the best
    chosen = choose_thresholds(scores, truth, min_positives=1)
    assert chosen.values[0] == 0.5
    assert thresholded_per_label_metrics(scores, truth, chosen).precision == pytest.approx(0.5)


def test_labels_with_too_few_validation_images_get_the_global_threshold():
    chosen = choose_thresholds(SCORES, TRUTH, min_positives=2)
    assert chosen.per_label.tolist() == [True, False]
    assert chosen.values[0] == 0.3 and chosen.values[1] == chosen.global_value


def test_the_global_threshold_maximises_the_f1_of_averaged_p_and_r():
    # one t for both labels; candidates: the scores at which an image gets 0.1 to 2 / 2 = 1 label
    # on average (0.6, 0.7, 0.8, 0.9); given sets (label 0 | label 1) worked out by hand:
    # t = 0.6: {0,1} | {1,2}: P (1/2 + 1/2) / 2 = 1/2, R (1/2 + 1) / 2 = 3/4 -> F1 3/5
    # t = 0.7: {0,1} | {1}: P (1/2 + 1) / 2 = 3/4, R 3/4 -> F1 3/4  (the best)
    # t = 0.8: {0,1} | {}: P 1/4, R 1/4 -> F1 1/4;  t = 0.9: {0} | {}: P 1/2, R 1/4 -> F1 1/3
    chosen = choose_global_threshold(SCORES, TRUTH)
    assert chosen.global_value == pytest.approx(0.7)
    assert chosen.values.tolist() == [chosen.global_value] * 2 and not chosen.per_label.any()
    assert thresholded_per_label_metrics(SCORES, TRUTH, chosen).f1 == pytest.approx(0.75)


def test_the_global_rule_searches_the_scoring_fields_with_the_threshold():
    """Rule global picks, among a model's scoring-field points, the one whose validation scores
    reach the best per-label F1 under their own global threshold; each point of a grid within
    the budget is scored once, fit-only fields are not searched, and a tie keeps the first."""
    from types import SimpleNamespace

    from tagrec_models.studies import label_thresholds

    truth = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    base = np.array([[0.2, 0.9], [0.9, 0.2], [0.5, 0.5]])  # ranks every negative above a positive
    seen = []

    class Model:
        search_space = {"shift": [0.0, 1.0, 2.0], "hidden": [8, 16]}
        name = "toy"
        scoring_fields = frozenset({"shift"})

        def __init__(self, shift=0.0):
            self.shift = shift

        def retune(self, shift):
            seen.append(shift)
            return Model(shift)

        def score(self, posts, side):
            # shift >= 1 lifts the positives above every negative: per-label F1 1 at t in (0.9, 1.2]
            return base + self.shift * truth

    bundle = SimpleNamespace(val=SimpleNamespace(tags=sparse.csr_matrix(truth)))
    point, scored = label_thresholds._global_point(Model(), bundle, None, {"shift": 0.0}, 150, 0)
    assert point == {"shift": 1.0} and scored == 3  # 1.0 and 2.0 tie at F1 1: the first is kept
    assert seen == [0.0, 1.0, 2.0]
    assert label_thresholds._global_point(Model(), bundle, None, {"shift": 0.0}, 0, 0) == ({"shift": 0.0}, 0)


@pytest.mark.parametrize("rule, chooser", [("per_label", "choose_thresholds"), ("global", "choose_global_threshold")])
def test_the_thresholds_table_fits_on_train_only_and_never_reads_test_labels(rule, chooser, monkeypatch):
    """The table's fit is the tuned configuration on train only; the thresholds come from
    validation; scrambling the test labels changes the test numbers but never the thresholds
    (so no test label reaches the choice)."""
    import dataclasses

    from tagrec_models.artifacts import TrainedModel
    from tagrec_models.bundle import SplitBundle
    from tagrec_models.data import Posts, SideInfo, Vocabulary
    from tagrec_models.studies import label_thresholds
    from tagrec_models.recommenders.asl_probe import ASLProbeConfig

    rng = np.random.default_rng(0)
    n, dim, n_tags = 90, 8, 3
    tag = np.arange(n) % n_tags
    x = np.abs(rng.normal(size=(n_tags, dim))[tag] + 0.2 * rng.normal(size=(n, dim))).astype(np.float32)
    y = sparse.csr_matrix((np.ones(n), (np.arange(n), tag)), shape=(n, n_tags))

    def posts(rows, labels=y):
        return Posts(user=np.zeros(len(rows), dtype=np.int64), image=rows, tags=labels[rows], n_users=1, n_images=n)

    vocab = Vocabulary(users=("u",), images=tuple(map(str, range(n))), tags=("a", "b", "c"))
    side = SideInfo(features={"cnn": x})
    trained = TrainedModel(name="asl_probe", dataset="toy", config=dataclasses.asdict(ASLProbeConfig(steps=40, lr=0.01)),
                           model_paths={}, train_seconds={}, final_fit="train+val")
    seen = []
    original = getattr(label_thresholds, chooser)

    def spy(scores, truth, **kwargs):
        chosen = original(scores, truth, **kwargs)
        seen.append(chosen.values)
        return chosen

    monkeypatch.setattr(label_thresholds, chooser, spy)
    bundle = SplitBundle(vocab, posts(np.arange(0, 60)), posts(np.arange(60, 75)), posts(np.arange(75, 90)))
    table = label_thresholds.threshold_table([trained], bundle, side, rule=rule)
    scrambled = sparse.csr_matrix((np.ones(n), (np.arange(n), (tag + 1) % n_tags)), shape=(n, n_tags))
    bundle2 = SplitBundle(vocab, bundle.train, bundle.val, posts(np.arange(75, 90), scrambled))
    table2 = label_thresholds.threshold_table([trained], bundle2, side, rule=rule)
    # the rule's chooser ran (a spy that never ran would prove nothing), on validation only
    assert len(seen) >= 2
    np.testing.assert_array_equal(seen[0], seen[len(seen) // 2])
    assert table.loc[0, "threshold_fit"] == "train" and table.loc[0, "thr_label_f1"] > 0.9
    assert table.loc[0, "threshold_rule"] == rule
    assert table2.loc[0, "thr_label_f1"] < 0.1
