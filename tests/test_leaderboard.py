"""The cross-paper leaderboard table, against values worked out by hand."""

import math

import pandas as pd
import pytest

from tagrec_models.leaderboard import best_on_validation, leaderboard_table, with_leakage_columns


def runs(values: dict[tuple[str, int], float], scenarios=("all", "new_images"), fit=1.0) -> pd.DataFrame:
    """A runs frame where every measure of (method, seed) at every k is ``value * k / 10``."""
    rows = []
    for (method, seed), value in values.items():
        for scenario in scenarios:
            for k in range(1, 11):
                v = value * k / 10 * (0.5 if scenario == "new_images" else 1.0)
                rows.append({"method": method, "seed": seed, "scenario": scenario, "k": k,
                             "precision": v, "recall": v, "f1": v, "mean_post_f1": v, "ndcg": v,
                             "map": v, "label_precision": v, "label_recall": v, "label_f1": v,
                             "n_plus": 10 * seed + 2, "n_posts": 7, "fit_seconds": fit * (seed + 1),
                             "score_seconds": 0.1})
    return pd.DataFrame(rows)


@pytest.fixture()
def table() -> pd.DataFrame:
    # test: "pitf" is better (0.6, 0.4 -> mean 0.5 at k=10); validation prefers "mp_u"
    test = runs({("mp_u", 0): 0.3, ("mp_u", 1): 0.5, ("pitf", 0): 0.6, ("pitf", 1): 0.4,
                 ("jec", 0): 0.2, ("jec", 1): 0.2})
    val = runs({("mp_u", 0): 0.9, ("mp_u", 1): 0.7, ("pitf", 0): 0.5, ("pitf", 1): 0.5,
                ("jec", 0): 0.6, ("jec", 1): 0.6}, scenarios=("all",))
    papers = {"mp_u": ["paper1", "paper2"], "pitf": ["paper1"], "jec": ["paper3"]}
    return leaderboard_table(test, val, papers, {"mp_u": True, "pitf": True, "jec": False})


def test_values_by_hand(table: pd.DataFrame) -> None:
    pitf = table.set_index("method").loc["pitf"]
    # f1@5 = mean over seeds of value * 5/10 = (0.3 + 0.2) / 2
    assert pitf["f1@5"] == pytest.approx(0.25)
    assert pitf["f1@10"] == pytest.approx(0.5)
    # sample std of (0.3, 0.2)
    assert pitf["f1@5_std"] == pytest.approx(math.sqrt(0.005))
    assert pitf["f1@5_new_images"] == pytest.approx(0.125)
    assert pitf["val_f1@5"] == pytest.approx(0.25)
    assert pitf["train_seconds"] == pytest.approx(1.5)
    assert pitf["n_plus@5"] == pytest.approx(7.0)
    assert pitf["papers"] == "paper1"
    assert table.set_index("method").loc["mp_u", "papers"] == "paper1, paper2"


def test_ranked_by_test_and_chosen_on_validation(table: pd.DataFrame) -> None:
    # test f1@5: mp_u 0.2, pitf 0.25, jec 0.1 -> pitf, mp_u, jec; ties broken stably
    assert list(table["method"]) == ["pitf", "mp_u", "jec"]
    assert list(table["rank"]) == [1, 2, 3]
    # validation f1@5: mp_u 0.4, pitf 0.25, jec 0.3 -> mp_u is the deployable choice
    assert list(table.loc[table["chosen_on_validation"], "method"]) == ["mp_u"]
    assert best_on_validation(table) == "mp_u"
    assert best_on_validation(table, personalised=False) == "jec"


def test_no_content_only_method_is_a_clear_error(table: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="personalised=False"):
        best_on_validation(table[table["personalised"]], personalised=False)


def test_leakage_columns_are_added_and_nothing_else_changes(table: pd.DataFrame) -> None:
    # pitf on the posts whose groups spell none of their tags: seeds 0.2, 0.4 -> f1@5 0.1, 0.2
    unspelled = runs({("pitf", 0): 0.2, ("pitf", 1): 0.4}, scenarios=("all",))
    out = with_leakage_columns(table, {"groups_spell_test_tags": 0.5, "test_near_duplicates": 0.25},
                               unspelled, n_unspelled_posts=3)
    pd.testing.assert_frame_equal(out[table.columns], table)
    rows = out.set_index("method")
    assert rows.loc["pitf", "f1@5_tags_not_in_groups"] == pytest.approx(0.15)
    assert math.isnan(rows.loc["jec", "f1@5_tags_not_in_groups"])
    assert (out["groups_spell_test_tags"] == 0.5).all() and (out["test_near_duplicates"] == 0.25).all()
    assert (out["n_test_posts_tags_not_in_groups"] == 3).all()
    without_groups = with_leakage_columns(table, {"test_near_duplicates": 0.0})
    assert without_groups["groups_spell_test_tags"].isna().all()
    assert without_groups["f1@5_tags_not_in_groups"].isna().all()
