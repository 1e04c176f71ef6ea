"""Guards the repeated splits (issue 12, part 4): split i re-splits the same posts with recipe
seed + i, every method is tuned and fitted on it, a second call reuses every cached (split,
method) result, a changed budget does not, and the pooled table tests against the best."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tagrec_models.evaluation.significance import Settings
from tagrec_models.experiment import PostRecords
from tagrec_models.preprocess.recipes import recipe_for
from tagrec_models.repeated_splits import Budget, SplitResult, pooled_table, run_split, split_seed


def posts(n_users: int = 12, per_user: int = 8, seed: int = 0) -> pd.DataFrame:
    """Each user has a favourite pair of tags plus a random one, from 10 tags."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        favourite = [f"t{u % 5}", f"t{5 + u % 5}"]
        for i in range(per_user):
            for tag in {*favourite, f"t{rng.integers(10)}"}:
                rows.append({"user_id": f"u{u}", "photo_id": f"p{u}_{i}", "tag": tag})
    return pd.DataFrame(rows)


RECIPE = recipe_for("openclipart_default", test_posts=2, val_posts=1, n_users=None, top_n_tags=None,
                    core_users=1, core_tags=1)


def test_a_second_call_reuses_the_cache_and_a_new_budget_does_not(tmp_path):
    filtered, images = posts(), pd.DataFrame(columns=["photo_id", "path"])
    budget = Budget(n_trials=1, retune_trials=0, seeds=(0,))
    first = run_split(1, RECIPE, filtered, images, ["mp_u", "mp"], {}, budget, tmp_path, "fixture")
    assert first.computed == ("mp_u", "mp")
    assert set(first.records.per_post["method"]) == {"mp_u", "mp"}
    # Split 1 holds out other posts than split 2 (another recipe seed).
    other = run_split(2, RECIPE, filtered, images, ["mp_u"], {}, budget, tmp_path, "fixture")
    assert set(other.truth["post"]) != set(first.truth["post"])
    assert split_seed(RECIPE, 2) == RECIPE.seed + 2
    again = run_split(1, RECIPE, filtered, images, ["mp_u", "mp"], {}, budget, tmp_path, "fixture")
    assert again.computed == ()
    pd.testing.assert_frame_equal(again.records.per_post, first.records.per_post)
    assert again.validation == first.validation
    changed = run_split(1, RECIPE, filtered, images, ["mp_u"], {}, dataclasses.replace(budget, seeds=(0, 1)),
                        tmp_path, "fixture")
    assert changed.computed == ("mp_u",)


def _result(split: int, hits: dict[str, np.ndarray], validation: dict[str, float]) -> SplitResult:
    per_post, tags = [], []
    for method, values in hits.items():
        for i, hit in enumerate(values):
            for metric in ("p@5", "r@5", "f1@5", "ndcg@10", "map@10"):
                per_post.append({"method": method, "seed": 0, "post": f"s{split}/{i}", "metric": metric,
                                 "value": float(hit)})
            tags.append({"method": method, "seed": 0, "post": f"s{split}/{i}", "position": 1,
                         "tag": "a" if hit else "b"})
    truth = pd.DataFrame({"post": [f"s{split}/{i}" for i in range(len(values))], "tag": "a"})
    return SplitResult(split, PostRecords(pd.DataFrame(per_post), pd.DataFrame(tags)), truth, validation, ())


def test_pooled_table_averages_splits_and_tests_against_the_validation_best():
    n = 20
    results = [_result(0, {"good": np.ones(n), "bad": np.zeros(n)}, {"good": 0.5, "bad": 0.1}),
               _result(1, {"good": np.r_[np.ones(n // 2), np.zeros(n // 2)], "bad": np.zeros(n)},
                       {"good": 0.3, "bad": 0.2})]
    table = pooled_table(results, Settings(n_resamples=300)).set_index("method")
    assert list(table["n_splits"]) == [2, 2]
    # F1@5 of split 0 is 1 and of split 1 0.5 (P = R = 0.5): their mean 0.75.
    assert table.loc["good", "f1@5"] == 0.75 and table.loc["bad", "f1@5"] == 0.0
    assert table.loc["good", "val_f1@5"] == 0.4 and bool(table.loc["good", "chosen_on_validation"])
    assert table.loc["good", "p_vs_best"] == 1.0 and table.loc["bad", "p_vs_best"] < 0.01
    assert not bool(table.loc["bad", "tied_with_best"])
    assert table.loc["good", "f1@5_ci_low"] < 0.75 < table.loc["good", "f1@5_ci_high"]
