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
    "n_own_thresholds": "Tags with their own validation-chosen threshold; the others (too few validation images) share one global threshold",
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
}

_PARTS = {"val": "validation", "test": "test"}
_AT_K = re.compile(r"^(?P<measure>[a-z_0-9]+?)@(?P<k>\d+)$")


def describe_column(name: str, part: str = "test") -> str | None:
    """The meaning of results column ``name`` (``None`` if unknown); ``part`` names the posts
    the measures are taken on when the name does not (``val_`` / ``test_`` prefixes do)."""
    if name.endswith("_std"):
        base = describe_column(name[: -len("_std")], part)
        return f"Sample standard deviation over seeds (ddof=1) of {name[: -len('_std')]}: {base}" if base else None
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
