"""Guards the uncertainty of every comparison (issue 12, ``tagrec_models.evaluation.significance``):
bootstrap intervals, the paired randomisation test and Holm's correction, each against cases
worked out by hand; and the leaderboard's interval and tie columns built from per-post values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from tagrec_models.evaluation import significance as sig
from tagrec_models.evaluation.metrics import metrics_at_k, per_label_metrics, post_metrics, top_k
from tagrec_models.leaderboard import leaderboard_table, with_significance
from tagrec_models.reporting import interval_view
from test_leaderboard import runs


def test_holm_on_a_hand_made_vector():
    # Sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> running max 0.06.
    adjusted = sig.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(sig.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    out = sig.holm([0.01, np.nan, 0.02])  # NaN is not in the family: m = 2
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert np.isnan(out[1])


def test_tiny_bootstrap_interval_by_hand():
    # Four posts, one hit: the resampled mean is Binomial(4, 1/4) / 4, with P(0) = 0.316,
    # P(<= 0.5) = 0.949, P(<= 0.75) = 0.996: the 95% interval is [0, 0.75].
    interval = sig.bootstrap_interval(np.array([0.0, 0.0, 0.0, 1.0]), n_resamples=20000, seed=3)
    assert interval.estimate == pytest.approx(0.25)
    assert (interval.low, interval.high) == (0.0, 0.75)
    # Two posts 0 and 1: means 0, 0.5, 1 with P = 1/4, 1/2, 1/4: the interval is [0, 1].
    interval = sig.bootstrap_interval(np.array([0.0, 1.0]), n_resamples=5000, seed=0)
    assert (interval.low, interval.high) == (0.0, 1.0)
    # Constant values: no uncertainty.
    interval = sig.bootstrap_interval(np.full(7, 0.4), n_resamples=100)
    assert interval.low == pytest.approx(0.4) and interval.high == pytest.approx(0.4)


def test_bootstrap_is_seeded_and_averages_seeds():
    values = np.random.default_rng(0).random((3, 50, 2))  # 3 seeds, 50 posts, (P, R)
    a = sig.bootstrap_interval(values, sig.f1_statistic, n_resamples=500, seed=7)
    b = sig.bootstrap_interval(values, sig.f1_statistic, n_resamples=500, seed=7)
    assert a == b
    # The estimate is the mean over seeds of F1 of the averaged P and R (the table's number).
    expected = np.mean([sig.f1_statistic(values[s].mean(axis=0)) for s in range(3)])
    assert a.estimate == pytest.approx(expected)
    assert a.low < a.estimate < a.high


def test_two_identical_methods_are_tied():
    values = np.random.default_rng(1).random((2, 40, 2))
    assert sig.randomisation_test(values, values.copy(), sig.f1_statistic, n_resamples=999) == 1.0


def test_a_method_that_wins_on_every_post_is_not_tied():
    # Every swap pattern but the two all-or-nothing ones (probability 2 / 2^20) gives a smaller
    # difference than the observed 1: p = 1 / (1 + n_resamples) in practice.
    a, b = np.ones(20), np.zeros(20)
    assert sig.randomisation_test(a, b, n_resamples=999) == pytest.approx(1 / 1000)
    # With three posts the eight swap patterns give |d| = 1 with probability 2/8: p ~ 0.25.
    p = sig.randomisation_test(np.ones(3), np.zeros(3), n_resamples=20000, seed=0)
    assert p == pytest.approx(0.25, abs=0.01)


def test_per_label_components_give_the_metrics_values():
    rng = np.random.default_rng(2)
    scores = rng.random((30, 12))
    truth = sparse.csr_matrix((rng.random((30, 12)) < 0.25).astype(float))
    predicted = np.zeros((30, 12))
    predicted[np.arange(30)[:, None], top_k(scores, 5)] = 1.0
    components = sig.label_components(predicted, truth.toarray())
    expected = per_label_metrics(scores, truth, k=5)
    means = components.mean(axis=0)
    assert sig.per_label_statistic(means) == pytest.approx(expected.f1)
    assert sig.n_plus_statistic(means) == expected.n_plus
    # Swapping every image's tag set with an identical method changes nothing: p = 1.
    assert sig.randomisation_test(components, components.copy(), sig.per_label_statistic, n_resamples=99) == 1.0


def test_post_metrics_average_to_metrics_at_k():
    rng = np.random.default_rng(4)
    scores = rng.random((25, 15))
    truth = sparse.csr_matrix((rng.random((25, 15)) < 0.2).astype(float))
    posts, at = post_metrics(scores, truth, 10), metrics_at_k(scores, truth, 10)
    np.testing.assert_allclose(posts.precision.mean(axis=0), at.precision)
    np.testing.assert_allclose(posts.ndcg.mean(axis=0), at.ndcg)
    np.testing.assert_allclose(posts.f1.mean(axis=0), at.mean_post_f1)
    p, r = posts.precision[:, 4].mean(), posts.recall[:, 4].mean()
    assert sig.f1_statistic(np.array([p, r])) == pytest.approx(at.f1[4])


def _records(methods: dict[str, np.ndarray], n_posts: int) -> dict[str, pd.DataFrame]:
    """Long per-post frames: each method's hits (0/1 per post) as P@5 = R@5 = hit."""
    rows, tags = [], []
    for method, hits in methods.items():
        for seed in (0, 1):
            for i, hit in enumerate(hits):
                for metric in ("p@5", "r@5", "f1@5", "ndcg@10", "map@10"):
                    rows.append({"split": 0, "method": method, "seed": seed, "post": f"u/{i:03d}", "metric": metric,
                                 "value": float(hit)})
                tags.append({"split": 0, "method": method, "seed": seed, "post": f"u/{i:03d}", "position": 1,
                             "tag": "a" if hit else "b"})
    truth = pd.DataFrame({"split": 0, "post": [f"u/{i:03d}" for i in range(n_posts)], "tag": "a"})
    return {"per_post": pd.DataFrame(rows), "predictions": pd.DataFrame(tags), "truth": truth}


def test_leaderboard_gets_intervals_and_tie_marks_for_every_row():
    n = 30
    good = np.ones(n)
    same = good.copy()
    bad = np.zeros(n)
    records = _records({"good": good, "same": same, "bad": bad}, n)
    # runs() gives F1@5 = value / 2: the table says 1.0 for good and same, 0 for bad, as the posts do.
    test = runs({(m, s): v for m, v in (("good", 2.0), ("same", 2.0), ("bad", 0.0)) for s in (0, 1)})
    val = runs({("good", 0): 0.9, ("same", 0): 0.5, ("bad", 0): 0.1}, scenarios=("all",))
    table = leaderboard_table(test, val, {}, {"good": False, "same": False, "bad": False})
    out = with_significance(table, records, sig.Settings(n_resamples=500, seed=0)).set_index("method")
    for column in ("f1@5_ci_low", "f1@5_ci_high", "p_vs_best", "tied_with_best", "label_f1@5_p_vs_best"):
        assert out[column].notna().all(), column
    assert out.loc["good", "p_vs_best"] == 1.0 and bool(out.loc["good", "tied_with_best"])
    assert out.loc["same", "p_vs_best"] == 1.0 and bool(out.loc["same", "tied_with_best"])
    # Holm over the two others: the raw 1/501 doubled.
    assert out.loc["bad", "p_vs_best"] == pytest.approx(2 / 501)
    assert not bool(out.loc["bad", "tied_with_best"])
    assert (out.loc["good", "f1@5_ci_low"], out.loc["good", "f1@5_ci_high"]) == pytest.approx((1.0, 1.0))
    # Per-label: "good" predicts the one true label on every image (F1 1), "bad" never (F1 0).
    assert out.loc["bad", "label_f1@5_p_vs_best"] == pytest.approx(2 / 501)
    shown = interval_view(out.reset_index()[["method", "f1@5", "f1@5_ci_low", "f1@5_ci_high", "tied_with_best"]])
    assert list(shown.columns) == ["method", "f1@5", "tied_with_best"]
    assert shown.set_index("method").loc["good", "f1@5"] == "1.000 [1.00, 1.00]"
    assert list(shown["tied_with_best"]) == ["tied", "tied", ""]


def test_format_interval():
    assert sig.format_interval(0.4712, 0.431, 0.5104) == "0.471 [0.43, 0.51]"
    assert sig.format_interval(139.0, 120.0, 150.0) == "139 [120, 150]"
    assert sig.format_interval(98.6667, 90.2, 105.8) == "98.7 [90, 106]"
    assert sig.format_interval(0.3, float("nan"), float("nan")) == "0.300"


def test_paper_claims_script_prints_each_claim_with_its_p_value(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from tagrec_models.paths import DataHome
    from tagrec_models.storage.duckdb_store import DuckDBStore

    n = 30
    records = _records({"ug_nw": np.ones(n), "ug_nonw": np.zeros(n)}, n)["per_post"]
    DuckDBStore(DataHome(tmp_path).duckdb_path).replace_result_rows("per_post", "openclipart", records)
    path = Path(__file__).resolve().parents[1] / "scripts" / "paper_claims.py"
    spec = importlib.util.spec_from_file_location("paper_claims", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--home", str(tmp_path), "--resamples", "999"]) == 0
    lines = capsys.readouterr().out.splitlines()
    claim = next(line for line in lines if "UG-NW > UG-noNW" in line)
    # Wins on all 30 posts (an equal or larger swapped difference has probability 2 / 2^30): p = 1 / (1 + 999); the interval of a constant is the constant.
    assert "1.000 [1.00, 1.00]" in claim and "+1.000" in claim and claim.endswith("| 0.0010 |")
    assert any("cnn_permlp" not in line and "(not materialised)" in line for line in lines)


def test_per_label_intervals_are_shifted_by_the_bootstrap_bias():
    """Rare labels drop out of resamples, which moves per-label F1 up and N+ down; their
    intervals are the percentile interval minus (mean of the resamples - test value)."""
    rng = np.random.default_rng(3)
    n_images, n_labels = 60, 40
    truth = np.zeros((n_images, n_labels))
    truth[np.arange(n_images), rng.integers(0, n_labels, n_images)] = 1  # one label per image: many rare labels
    predicted = np.where(rng.random((n_images, n_labels)) < 0.5, truth, 0)  # half of them recalled
    components = sig.label_components(predicted, truth)
    statistics = {"f1": sig.per_label_statistic, "n_plus": sig.n_plus_statistic}
    got = sig.bootstrap_intervals(components, statistics, n_resamples=500, seed=1)
    weights = sig._resample_weights(n_images, 500, 1, 0)
    for name, statistic in statistics.items():
        value = float(statistic(components.mean(axis=0)))
        resampled = statistic(weights @ components)
        low, high = np.quantile(resampled, [0.025, 0.975]) - (resampled.mean() - value)
        assert got[name].estimate == pytest.approx(value)
        assert (got[name].low, got[name].high) == pytest.approx((low, high))
        assert got[name].low <= value <= got[name].high
    # ... and the mean-type measures keep the plain percentile interval (bias is not estimated).
    plain = sig.bootstrap_interval(components[:, :1], sig.mean_statistic, n_resamples=500, seed=1)
    assert (plain.low, plain.high) == pytest.approx(tuple(np.quantile(weights @ components[:, 0], [0.025, 0.975])))
