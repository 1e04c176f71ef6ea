"""What every column of the results tables means: the one place the UI's column schemas, the
README and a reader of ``results.*`` in DuckDB take it from.

The tables are ``reporting.paper1_table`` / ``paper2_table`` / ``paper3_table``, the CCS table
of paper 3, ``leaderboard.leaderboard_table``, the paper-2 parameter studies of
``studies.sweep_tables`` and the long ``*_runs`` frames of ``experiment.evaluate_model``.
Their names follow a grammar, and so do the descriptions:

* ``<measure>@<k>`` (``f1@5``, ``ndcg@10``, ``ccs@3``): the measure at ``k`` recommended tags
  (or canonical pairs), on the test posts;
* ``<column>_std``: the sample standard deviation over seeds of ``<column>``;
* ``val_<column>`` / ``test_<column>``: ``<column>`` on the validation / test posts;
* ``<column>_new_images``: ``<column>`` on the test posts whose image was never seen in training;
* ``<column>_ci_low`` / ``<column>_ci_high``: the bounds of ``<column>``'s bootstrap interval
  over the test posts; ``<column>_p_vs_best`` / ``<column>_tied_with_best``: its paired test
  against the validation-chosen best (``evaluation.significance``);
* anything else is named once in ``EXACT``.

``describe_column`` answers for one name (``None`` when it does not know it) and
``undescribed_columns`` lists the names of a table that lack a description; the tests fail on
any such column, so a new column comes with its meaning.
"""

from __future__ import annotations

import re
from typing import Iterable

# Measures at a cut-off k, worded for a "part" (test or validation posts). Paper 1 eq. 12 and
# paper 3 eqs. 9-11 average precision and recall over posts, then take F1 of the two averages.
AT_K = {
    "p": "Precision@{k}: hits among the top {k} recommended tags / {k}, averaged over the {part} posts (paper 1, eq. 12)",
    "r": "Recall@{k}: hits among the top {k} recommended tags / the post's true tags, averaged over the {part} posts (paper 1, eq. 12)",
    "f1": "F1@{k}: F1 of the averaged P@{k} and R@{k} over the {part} posts (paper 1, eq. 12)",
    "mean_post_f1": "Mean over the {part} posts of each post's own F1@{k} (TagRec's convention; not paper 1's eq. 12)",
    "ndcg": "NDCG@{k}: normalised discounted cumulative gain of the top {k} tags, averaged over the {part} posts (paper 2, section 5.3)",
    "map": "MAP@{k}: mean over the {part} posts of the average precision of the top {k} tags (paper 2, section 5.3)",
    "label_f1": "Per-label F1 at {k} tags per image: F1 of the per-label precision and recall averaged over tags, on the {part} posts (the Corel5k protocol, paper 3)",
    "n_plus": "N+ at {k} tags per image: number of tags recalled at least once on the {part} posts (recall > 0; the Corel5k protocol)",
    "ccs": "CCS@{k}: sum of the held-out correlations of the first {k} canonical pairs, in the order the model ranked them on training data (paper 3, section 4.1, Table 1)",
}

# Measures whose cut-off is a separate column ``k`` (the runs frames and paper 2's sweeps).
MEASURES = {
    "precision": "Precision at k: hits among the top k recommended tags / k, averaged over the {part} posts (paper 1, eq. 12)",
    "recall": "Recall at k: hits among the top k tags / the post's true tags, averaged over the {part} posts (paper 1, eq. 12)",
    "f1": "F1 at k: F1 of the averaged precision and recall at k over the {part} posts (paper 1, eq. 12)",
    "mean_post_f1": "Mean over the {part} posts of each post's own F1 at k (TagRec's convention)",
    "ndcg": "NDCG at k over the {part} posts (paper 2, section 5.3)",
    "map": "MAP at k over the {part} posts (paper 2, section 5.3)",
    "label_precision": "Per-label precision at k tags per image, averaged over tags, on the {part} posts (Corel5k protocol)",
    "label_recall": "Per-label recall at k tags per image, averaged over tags, on the {part} posts (Corel5k protocol)",
    "label_f1": "Per-label F1 at k tags per image: F1 of the averaged per-label precision and recall, on the {part} posts (Corel5k protocol)",
    "n_plus": "N+ at k tags per image: tags recalled at least once on the {part} posts",
    "ccs": "CCS at k: sum of the held-out correlations of the first k canonical pairs (paper 3, section 4.1)",
    "n_posts": "Number of {part} posts evaluated (posts with at least one true tag)",
    "n_empty": "Number of {part} posts left out of the averages because they have no true tag",
    "neighbour_ap": "Mean average precision of the neighbours the model chose for the {part} posts (relevant = shares a tag with the post; paper 2, Figure 10)",
    "neighbour_jaccard": "Mean tag Jaccard similarity between the {part} posts and the neighbours the model chose (paper 2, Figure 10)",
    "retrieval_map": "MAP of the top 15 training images by Euclidean distance on this stage's VLAD codes for the {part} posts, relevant = shares a tag (paper 2, section 5.1; the vlad asset's criterion)",
}

EXACT = {
    "dataset": "Dataset the row belongs to (one results table holds every dataset)",
    "method": "Recommender (its registered name, tagrec_models/recommenders)",
    "model": "Recommender policy (paper 2's UG/noUG x NW/noNW ablations)",
    "scenario": "Which test posts: 'all', or 'new_images' (only posts whose image is not in training)",
    "seed": "Seed of the fit",
    "k": "Number of recommended tags (or canonical pairs) the row's measures are taken at",
    "rank": "Rank by test F1@5 (1 = best); ties keep the table order",
    "papers": "The paper tables the method appears in",
    "thr_label_precision": "Per-label thresholds protocol (never the 5-tag table): per-label precision on the test posts when a tag is given to every image whose score reaches its threshold chosen on validation, averaged over tags",
    "thr_label_recall": "Per-label thresholds protocol: per-label recall on the test posts at the validation-chosen thresholds, averaged over tags",
    "thr_label_f1": "Per-label thresholds protocol: F1 of the averaged per-label precision and recall on the test posts at the validation-chosen thresholds (compare with threshold-based records only)",
    "thr_n_plus": "Per-label thresholds protocol: number of tags recalled at least once on the test posts at the validation-chosen thresholds",
    "thr_labels_per_image": "Per-label thresholds protocol: mean number of tags given to a test image (the 5-tag protocol gives exactly 5)",
    "val_thr_label_f1": "Per-label thresholds protocol: the same F1 on the validation posts the thresholds were chosen on (in-sample, optimistic)",
    "n_own_thresholds": "Tags with their own validation-chosen threshold (rule per_label); the others (too few validation images, or rule global) share one global threshold",
    "threshold_rule": "How the thresholds protocol chose thresholds on validation: 'global' (one threshold on the model's score, with its scoring fields) or 'per_label' (one per tag)",
    "operating_point": "The scoring-field values the thresholds protocol scored with, chosen on validation (rule global) or the 5-tag per-label point (rule per_label)",
    "points_scored": "Scoring-field points the thresholds protocol scored on validation to choose its operating point (0: none searched)",
    "n_labels": "Tags occurring in the test posts (the per-label averages run over them)",
    "threshold_fit": "The data the thresholds protocol's fit saw: 'train' (validation stays out of sample for the threshold choice)",
    "representation": "The image representation the method read: for the CNN embedding the backbone, input side, flip averaging and stages of the features run (extraction_settings.json); else the side inputs it needs",
    "personalised": "Whether the method reads the user (a user never seen in training gets a non-personalised fallback)",
    "chosen_on_validation": "The method a practitioner would deploy: best validation F1@5 (test never looked at)",
    "chosen": "The setting chosen on VALIDATION (never on test): the best validation measure of the study",
    "lam": "Lambda of paper 2's eq. 5: weight of visual similarity against group Jaccard in the neighbour score (NaN: the policy ignores groups)",
    "stage": "Conv stage of the backbone whose VLAD codes are compared (paper 2, section 5.1)",
    "train_seconds": "Mean wall-clock seconds to fit one seed",
    "fit_seconds": "Wall-clock seconds to fit this seed",
    "score_seconds": "Wall-clock seconds to score the posts",
    "n_seeds": "Number of seeds averaged",
    "n_test_posts": "Number of test posts evaluated (posts with at least one true tag)",
    "AP": "AP: per-image precision at 5 tags, averaged over test images (paper 3, eq. 9)",
    "AR": "AR: per-image recall at 5 tags, averaged over test images (paper 3, eq. 10)",
    "AF": "AF: F1 of AP and AR (paper 3, eq. 11)",
    "label_P": "Per-label precision at 5 tags per image, averaged over tags (the classic Corel5k table)",
    "label_R": "Per-label recall at 5 tags per image, averaged over tags (the classic Corel5k table)",
    "label_F1": "Per-label F1: F1 of label_P and label_R (the classic Corel5k table)",
    "N+": "N+: number of tags recalled at least once at 5 tags per image (the classic Corel5k table)",
    "p_vs_best": ("Holm-adjusted p-value (across the table's other methods) of a two-sided paired randomisation "
                  "test of the table's headline measure (leaderboard and paper 1: F1@5; paper 2: NDCG@10; "
                  "paper 3: AF) against the method chosen on validation, on the same test posts (1 for that "
                  "method; evaluation.significance)"),
    "tied_with_best": ("True when p_vs_best >= alpha (0.05 by default) or the row is the validation-chosen best: "
                       "the test posts cannot tell this method from the best"),
    "per_image_setting": ("The scoring-only setting (JSON) the per-image columns were scored at, chosen on validation "
                          "per-image F1 (studies.tuning); 'as tuned' for a model without scoring fields"),
    "per_label_setting": ("The scoring-only setting (JSON) the per-label columns (label P / R / F1, N+) were scored at, "
                          "chosen on validation per-label F1 (studies.tuning); 'as tuned' for a model without scoring fields"),
    "final_fit": "What the final fits were trained on: 'train+val' (the chosen setting refit) or 'train'",
    "groups_spell_test_tags": ("Share of the dataset's test tag assignments that a token of the post's own groups spells "
                               "(NaN without groups; the same on every row; leakage guard, issue 15)"),
    "test_near_duplicates": ("Share of the test images within the near-duplicate distance of a training image "
                             "(the same on every row; leakage guard, issue 15)"),
    "f1@5_tags_not_in_groups": ("F1@5 (mean over seeds) on the test posts none of whose tags their groups spell; "
                                "NaN for methods that do not read groups (leakage guard, issue 15)"),
    "n_test_posts_tags_not_in_groups": "Number of test posts none of whose tags their groups spell (leakage guard, issue 15)",
    "n_splits": "Number of leave-posts-out splits the row pools (split 0 = the graph's own; each tuned and fitted on its own validation part)",
    "split": "Which split of the dataset the row's test posts belong to (0: the recipe's split)",
    "post": "The test post: '<user id>/<photo id>'",
    "metric": ("The measure the row's value is of: in results.per_post p@5, r@5 (precision / recall of the top 5 "
               "tags; F1@5 of paper 1 eq. 12 is F1 of their means), f1@5 (the post's own F1 of the top 5), ndcg@10, "
               "map@10 (the post's AP@10); in results.tuning the validation measure of the metric family"),
    "value": "The row's value of its metric (one test post's in results.per_post; on validation in results.tuning)",
    "family": "Metric family of the tuning row: 'per_image' (chosen on F1@5) or 'per_label' (chosen on per-label F1)",
    "trial": "Trial number of the tuning engine (0 = the model's defaults)",
    "params": "The trial's hyper-parameters, as JSON",
    "state": "Optuna state of the trial (COMPLETE, PRUNED, FAIL)",
    "best_epoch": "Epoch with the best validation score in the trial (epoch-based models; empty otherwise)",
    "position": "Position of the tag among the post's recommended tags (1 = first)",
    "tag": "A tag the method recommends for the post (its top 5 at the per-label operating point)",
}

_PARTS = {"val": "validation", "test": "test"}
_AT_K = re.compile(r"^(?P<measure>[a-z_0-9]+?)@(?P<k>\d+)$")


def describe_column(name: str, part: str = "test") -> str | None:
    """The meaning of results column ``name`` (``None`` if unknown); ``part`` names the posts
    the measures are taken on when the name does not (``val_`` / ``test_`` prefixes do)."""
    if name in EXACT:  # named once, even where it looks like the grammar (test_near_duplicates)
        return EXACT[name]
    if name.endswith("_std"):
        base = describe_column(name[: -len("_std")], part)
        return f"Sample standard deviation over seeds (ddof=1) of {name[: -len('_std')]}: {base}" if base else None
    for suffix, bound in (("_ci_low", "Lower"), ("_ci_high", "Upper")):
        if name.endswith(suffix):
            base = describe_column(name[: -len(suffix)], part)
            return (f"{bound} bound of the 95% percentile bootstrap interval over the test posts (resampled "
                    f"with replacement, seeds averaged on each resample) of {name[: -len(suffix)]}: {base}"
                    if base else None)
    for suffix in ("_p_vs_best", "_tied_with_best"):
        if name.endswith(suffix) and name != suffix[1:]:
            base = describe_column(name[: -len(suffix)], part)
            return f"{EXACT[suffix[1:]]}; here for {name[: -len(suffix)]}: {base}" if base else None
    if name.endswith("_new_images"):
        base = describe_column(name[: -len("_new_images")], part)
        return f"{base}; only test posts whose image is not in training (scenario new_images)" if base else None
    prefix, _, rest = name.partition("_")
    if prefix in _PARTS and rest:
        return describe_column(rest, _PARTS[prefix])
    at_k = _AT_K.match(name)
    if at_k and at_k["measure"] in AT_K:
        return AT_K[at_k["measure"]].format(k=at_k["k"], part=part)
    if name in MEASURES:
        return MEASURES[name].format(part=part)
    return EXACT.get(name)


def describe_columns(names: Iterable[str]) -> dict[str, str | None]:
    """``describe_column`` for every name, in order."""
    return {str(name): describe_column(str(name)) for name in names}


def undescribed_columns(names: Iterable[str]) -> list[str]:
    """The names ``describe_column`` does not know (empty for every results table)."""
    return [name for name, text in describe_columns(names).items() if not text]
