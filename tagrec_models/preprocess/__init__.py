"""Preprocessing (paper 1, section 4.1) and splits, in DuckDB SQL.

* ``recipes``: ``Recipe`` (typed, frozen) and the ``PROFILES`` presets.
* ``filtering``: ``preprocess`` (WordNet, top-N tags, user sample, 50% rule, p-core).
* ``splits``: ``split_per_user``, ``split_predefined``, ``write_splits``, ``create_views``.
* ``checks``: the asset-check rules as plain ``(passed, details)`` functions.
"""

from tagrec_models.preprocess.checks import (
    check_core,
    check_disjoint_parts,
    check_heldout_seen_in_train,
    check_nonempty,
)
from tagrec_models.preprocess.filtering import PreprocessError, PreprocessResult, preprocess
from tagrec_models.preprocess.recipes import PROFILES, Recipe, RecipeError, recipe_for
from tagrec_models.preprocess.relations import PreprocessInputError
from tagrec_models.preprocess.splits import (
    SplitResult,
    create_views,
    split_per_user,
    split_predefined,
    write_splits,
)

__all__ = [
    "PROFILES",
    "PreprocessError",
    "PreprocessInputError",
    "PreprocessResult",
    "Recipe",
    "RecipeError",
    "SplitResult",
    "check_core",
    "check_disjoint_parts",
    "check_heldout_seen_in_train",
    "check_nonempty",
    "create_views",
    "preprocess",
    "recipe_for",
    "split_per_user",
    "split_predefined",
    "write_splits",
]
