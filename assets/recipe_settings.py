"""The preprocessing recipe as launchpad config: every field defaults to the dataset's profile
(``tagrec_models.preprocess.recipes.PROFILES``), so a run changes only what it names."""

from __future__ import annotations

from typing import Any, Optional

import dagster as dg
from pydantic import Field

from assets.datasets import DatasetSpec
from tagrec_models.preprocess.recipes import Recipe, recipe_for


class RecipeSettings(dg.Config):
    profile: str = Field(default="", description="Recipe preset (nuswide, flickr_ptr, openclipart_default, corel5k_standard); empty: the dataset's.")
    seed: Optional[int] = Field(default=None, description="Seed of the user sample and the splits.")
    top_n_tags: Optional[int] = Field(default=None, description="Keep the N most popular tags; 0: all.")
    n_users: Optional[int] = Field(default=None, description="Seeded sample of this many users; 0: all.")
    max_user_tag_share: Optional[float] = Field(default=None, description="Drop a tag from a user's posts where it is on more than this share of the user's images (paper 1: 0.5); 0: off.")
    core_users: Optional[int] = Field(default=None, description="p-core: a user keeps at least this many posts.")
    core_tags: Optional[int] = Field(default=None, description="p-core: a tag is in at least this many posts.")
    wordnet: Optional[bool] = Field(default=None, description="Map tags to their WordNet lemma first.")
    keep_unmapped: Optional[bool] = Field(default=None, description="With wordnet: keep tags WordNet does not know.")
    test_posts: Optional[int] = Field(default=None, description="Test posts per user (clears test_fraction).")
    test_fraction: Optional[float] = Field(default=None, description="Share of each user's posts for test (clears test_posts).")
    val_posts: Optional[int] = Field(default=None, description="Validation posts per user, carved from train.")
    val_fraction: Optional[float] = Field(default=None, description="Share of each user's train posts for validation.")
    duplicate_grouping: Optional[str] = Field(default=None, description="Keep duplicate images in one part (a group spread over parts goes to train): 'none', 'sha256' (byte-identical files) or 'dhash' (perceptual hash: survives resizing and re-encoding); default 'none'.")

    def recipe(self, spec: DatasetSpec) -> Recipe:
        overrides: dict[str, Any] = dict(spec.recipe_overrides)
        for name in ("seed", "core_users", "core_tags", "wordnet", "keep_unmapped", "duplicate_grouping"):
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value
        for name in ("top_n_tags", "n_users", "max_user_tag_share"):
            value = getattr(self, name)
            if value is not None:
                overrides[name] = value or None  # 0 means "no such rule"
        for count, share in (("test_posts", "test_fraction"), ("val_posts", "val_fraction")):
            if getattr(self, count) is not None:
                overrides[count], overrides[share] = getattr(self, count), None
            elif getattr(self, share) is not None:
                overrides[count], overrides[share] = None, getattr(self, share)
        return recipe_for(self.profile or spec.recipe, **overrides)
