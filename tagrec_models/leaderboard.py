"""The cross-paper leaderboard: every method of the three papers (and the beyond-the-paper ones)
on the same splits with the same metrics, which none of the papers does.

Input is two long ``runs`` frames of ``experiment.evaluate_model``: one on the test posts and
one on the validation posts. Each method gets one row: its validation F1@5 (the number a user
may pick a model by without looking at test), then on test F1@1..10 (paper 1, eq. 12), P@5,
R@5, NDCG@10 and MAP@10 (paper 2, section 5.3), the per-label F1 and N+ at 5 tags (the Corel5k
table of paper 3) and F1@5 on new images only; every value is the mean over seeds, with the
std of the test F1@5. Rows are ranked by test F1@5; ``chosen_on_validation`` marks the one
method a practitioner would have deployed (best validation F1@5). ``with_significance`` adds
each headline column's 95% bootstrap interval over the test posts and the paired tests of every
method against that validation-chosen best (``evaluation.significance``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from tagrec_models.evaluation.significance import Settings
from tagrec_models.reporting import seed_summary, significance_columns

RANK_METRIC = "f1@5"


def _at(summary: pd.DataFrame, scenario: str, k: int) -> pd.DataFrame:
    rows = summary[(summary["scenario"] == scenario) & (summary["k"] == k)]
    return rows.set_index("method")


def leaderboard_table(
    test_runs: pd.DataFrame,
    val_runs: pd.DataFrame,
    papers: Mapping[str, Sequence[str]],
    personalised: Mapping[str, bool],
    k_max: int = 10,
    validation_f1: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per method (see the module docstring); ``papers[method]`` names the paper
    tables the method appears in, ``personalised[method]`` whether it reads the user.
    ``validation_f1[method]``, when given, is ``val_f1@5`` instead of ``val_runs``: the tuning
    engine's validation score of the chosen setting (fit on train only), the honest number when
    the final fit has seen the validation posts (``experiment.FINAL_FITS``)."""
    test = seed_summary(test_runs)
    val = seed_summary(val_runs)
    at5 = _at(test, "all", 5)
    table = pd.DataFrame(index=at5.index)
    table["papers"] = [", ".join(papers.get(m, ())) for m in table.index]
    table["personalised"] = [bool(personalised.get(m, False)) for m in table.index]
    if validation_f1 is not None:
        table["val_f1@5"] = [validation_f1.get(m, float("nan")) for m in table.index]
    else:
        table["val_f1@5"] = _at(val, "all", 5)["f1_mean"].reindex(table.index)
    for k in range(1, k_max + 1):
        table[f"f1@{k}"] = _at(test, "all", k)["f1_mean"].reindex(table.index)
    table["f1@5_std"] = at5["f1_std"]
    table["p@5"] = at5["precision_mean"]
    table["r@5"] = at5["recall_mean"]
    at_k_max = _at(test, "all", k_max)
    table[f"ndcg@{k_max}"] = at_k_max["ndcg_mean"].reindex(table.index)
    table[f"map@{k_max}"] = at_k_max["map_mean"].reindex(table.index)
    table["label_f1@5"] = at5["label_f1_mean"]
    table["n_plus@5"] = at5["n_plus_mean"]
    new_images = _at(test, "new_images", 5)
    table["f1@5_new_images"] = (new_images["f1_mean"].reindex(table.index)
                                if not new_images.empty else float("nan"))
    table["train_seconds"] = at5["fit_seconds_mean"]
    table["n_seeds"] = at5["n_seeds"]
    table["n_test_posts"] = at5["n_posts"]
    table = table.reset_index().sort_values(RANK_METRIC, ascending=False, kind="stable")
    table.insert(0, "rank", range(1, len(table) + 1))
    best_val = table["val_f1@5"].idxmax() if table["val_f1@5"].notna().any() else None
    table["chosen_on_validation"] = table.index == best_val
    return table.reset_index(drop=True)


def best_on_validation(table: pd.DataFrame, personalised: bool | None = None) -> str:
    """The method with the highest validation F1@5 (optionally only content-only ones, for a
    user the models have never seen)."""
    rows = table if personalised is None else table[table["personalised"] == personalised]
    rows = rows[rows["val_f1@5"].notna()]
    if rows.empty:
        raise ValueError("no method in the leaderboard has a validation score"
                         + ("" if personalised is None else f" among personalised={personalised}"))
    return str(rows.loc[rows["val_f1@5"].idxmax(), "method"])


def with_leakage_columns(
    table: pd.DataFrame,
    figures: Mapping[str, float],
    unspelled_runs: pd.DataFrame | None = None,
    n_unspelled_posts: int | None = None,
) -> pd.DataFrame:
    """``table`` with the leakage guards' figures (issue 15; ``tagrec_models.evaluation.leakage``)
    as columns, every existing column unchanged:

    * ``groups_spell_test_tags``: share of the dataset's test tag assignments that a token of
      the post's own groups spells (NaN without groups); the same on every row.
    * ``test_near_duplicates``: share of the test images within the near-duplicate distance of
      a training image; the same on every row.
    * ``f1@5_tags_not_in_groups``: the method's test F1@5 (mean over seeds) on the test posts
      none of whose tags their groups spell (``unspelled_runs``, runs of those posts only; the
      leaderboard asset gives them for the group-aware methods, NaN for the others), so the
      group-aware rows (paper 2) can be read without the answers the folder names give away;
      ``n_test_posts_tags_not_in_groups`` says how many posts that is.
    """
    out = table.copy()
    out["groups_spell_test_tags"] = float(figures.get("groups_spell_test_tags", float("nan")))
    out["test_near_duplicates"] = float(figures.get("test_near_duplicates", float("nan")))
    column = f"{RANK_METRIC}_tags_not_in_groups"
    out[column] = float("nan")
    if unspelled_runs is not None and not unspelled_runs.empty:
        at5 = _at(seed_summary(unspelled_runs), "all", 5)["f1_mean"]
        out[column] = out["method"].map(at5).astype(float)
    out["n_test_posts_tags_not_in_groups"] = (
        float("nan") if n_unspelled_posts is None else int(n_unspelled_posts))
    return out


INTERVAL_COLUMNS = {"f1@5": "f1@5", "p@5": "p@5", "r@5": "r@5", "ndcg@10": "ndcg@10", "map@10": "map@10",
                    "label_f1@5": "label_f1@5", "n_plus@5": "n_plus@5"}
"""Leaderboard column -> measure of ``evaluation.significance`` its interval is computed for."""

TESTED = ("f1@5", "label_f1@5")
"""Columns with a paired test against the best: ``p_vs_best`` / ``tied_with_best`` for F1@5
(the ranking metric), ``label_f1@5_p_vs_best`` / ``label_f1@5_tied_with_best`` for per-label F1
(the randomisation test on the images' predicted tag sets)."""


def with_significance(table: pd.DataFrame, records: Mapping[str, pd.DataFrame],
                      settings: Settings = Settings()) -> pd.DataFrame:
    """``table`` with ``<column>_ci_low`` / ``<column>_ci_high`` for every column of
    ``INTERVAL_COLUMNS`` and the Holm-adjusted paired tests of ``TESTED`` against the method
    chosen on validation (the rank-1 method when no method has a validation score, which the
    p-values then compare with the best on test, an optimistic reference). ``records``:
    ``per_post``, ``predictions``, ``truth`` (``reporting.significance_columns``)."""
    chosen = table.loc[table["chosen_on_validation"], "method"]
    best = str(chosen.iloc[0]) if len(chosen) else str(table.sort_values("rank")["method"].iloc[0])
    columns = {c: m for c, m in INTERVAL_COLUMNS.items() if c in table}
    return significance_columns(table, columns, records, best, settings, tested=[c for c in TESTED if c in columns])
